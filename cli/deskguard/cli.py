"""The `deskguard` command: parses, calls the library, prints. Subcommands are imported on first use so
`deskguard --help` stays fast (Ansible, SQLAlchemy and rich are heavy imports)."""

from __future__ import annotations

import importlib
import sys

import click

from .errors import EXIT_INTERRUPTED, DeskguardError

# name -> "module:attribute" of a click command, loaded lazily.
COMMANDS = {
    "lab": "deskguard.commands.lab:lab",
    "demo": "deskguard.commands.demo:demo",
    "init": "deskguard.commands.init:init",
    "devices": "deskguard.commands.devices:devices",
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
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="deskguard")
def app():
    """Provision, harden, check nightly and wipe the laptops of people who work from home.

    Exit codes: 0 ok; 1 a host failed; 2 usage error; 3 some hosts unreachable;
    4 the controller or lab cannot do it (missing tool, busy port, broken file); 130 interrupted.
    """


def main(argv=None) -> None:
    try:
        app.main(args=argv, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("deskguard: aborted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as exc:
        # Usage errors: one line, exit 2 (click's own convention, and ours).
        click.echo(f"deskguard: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except DeskguardError as exc:
        click.echo(f"deskguard: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("deskguard: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except SystemExit:
        raise
    else:
        sys.exit(0)
