"""`deskguard completion SHELL`: the shell's completion script, from click's own completion support."""

from __future__ import annotations

import click

SHELLS = ("bash", "zsh", "fish")


@click.command()
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell):
    """Print the completion script for SHELL; load it from the shell's start-up files."""
    from click.shell_completion import get_completion_class

    from ..cli import app

    script = get_completion_class(shell)(app, {}, "deskguard", "_DESKGUARD_COMPLETE").source()
    click.echo(script)
