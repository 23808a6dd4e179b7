"""The `deskguard` command: parses, calls the library, prints. Subcommands are imported on first use so
`deskguard --help` stays fast (Ansible, SQLAlchemy and rich are heavy imports)."""

from __future__ import annotations

import importlib
import sys

import click

from .errors import EXIT_ENVIRONMENT, EXIT_INTERRUPTED, DeskguardError
from .examples import epilog

# name -> "module:attribute" of a click command, loaded lazily.
COMMANDS = {
    "lab": "deskguard.commands.lab:lab",
    "demo": "deskguard.commands.demo:demo",
    "init": "deskguard.commands.init:init",
    "devices": "deskguard.commands.devices:devices",
    "enrolment": "deskguard.commands.enrolment:enrolment",
    "installer": "deskguard.commands.installer:installer",
    "audit": "deskguard.commands.audit:audit",
    "onboard": "deskguard.commands.onboard:onboard",
    "keys": "deskguard.commands.keys:keys",
    "comply": "deskguard.commands.comply:comply",
    "usb": "deskguard.commands.usb:usb",
    "vpn": "deskguard.commands.vpn:vpn",
    "wipe": "deskguard.commands.wipe:wipe",
    "orders": "deskguard.commands.orders:orders",
    "serve": "deskguard.commands.serve:serve",
    "netcheck": "deskguard.commands.netcheck:netcheck",
    "announce": "deskguard.commands.announce:announce",
    "completion": "deskguard.commands.completion:completion",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        command = getattr(importlib.import_module(module), attr)
        _add_examples(command, name)
        return command


def _add_examples(command: click.Command, path: str) -> None:
    """Give a command and its subcommands their examples (deskguard/examples.py) as the --help epilog."""
    if command.epilog is None:
        command.epilog = epilog(path)
    for name, sub in getattr(command, "commands", {}).items():
        _add_examples(sub, f"{path} {name}")


def _print_version(ctx, _param, value):
    if not value or ctx.resilient_parsing:
        return
    from .versions import text

    click.echo(text())
    ctx.exit()


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]}, epilog=epilog(""))
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Show the kit, ansible-core and collection versions and exit.")
@click.option("-v", "--verbose", count=True, help="Say more: every task as it runs, Ansible's -v (repeat for -vv).")
@click.option("-q", "--quiet", is_flag=True, help="Say less: no progress display, only results and errors.")
def app(verbose, quiet):
    """Provision, harden, check nightly and wipe the laptops of people who work from home.

    Exit codes: 0 ok; 1 a host failed; 2 usage error; 3 some hosts unreachable;
    4 the controller or lab cannot do it (missing tool, busy port, broken file); 130 interrupted.

    NO_COLOR=1 turns colour off; DESKGUARD_SITE names the site, DESKGUARD_DB_URL the store.
    """
    from .term import set_verbosity

    if verbose and quiet:
        raise click.UsageError("--verbose and --quiet contradict each other: pick one")
    set_verbosity(verbose, quiet)


def one_line(message: str) -> str:
    """An error message as one line of plain text: what the user typed is echoed in it, and a newline, a
    terminal escape or any other control character in that must neither break the line nor act on the terminal."""
    import unicodedata

    def shown(c: str) -> str:
        cat = unicodedata.category(c)
        return c.encode("unicode_escape").decode("ascii") if cat[0] == "C" or cat in ("Zl", "Zp") else c

    return "".join(map(shown, message))


def main(argv=None) -> None:
    try:
        app.main(args=argv, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("deskguard: aborted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as exc:
        # Usage errors: one line, exit 2 (click's own convention, and ours).
        click.echo(f"deskguard: {one_line(exc.format_message())}", err=True)
        sys.exit(exc.exit_code)
    except DeskguardError as exc:
        click.echo(f"deskguard: {one_line(str(exc))}", err=True)
        sys.exit(exc.exit_code)
    except OSError as exc:
        # A file or folder the command could not use (the commands check what they can first): one line, exit 4.
        where = f"{exc.filename}: " if exc.filename else ""
        click.echo(f"deskguard: {one_line(f'{where}{exc.strerror or exc}')}", err=True)
        sys.exit(EXIT_ENVIRONMENT)
    except KeyboardInterrupt:
        click.echo("deskguard: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except SystemExit:
        raise
    else:
        sys.exit(0)
