"""`deskguard lab ...`: the built-in lab of test laptops (see docs/lab.md)."""

from __future__ import annotations

import os

import click

# The lab's Debian releases, first the default (kept here so `--help` needs no lab import; a unit test
# checks they match deskguard.lab.image.SUITES).
SUITES = ("trixie", "bookworm")
DEFAULT_SUITE = SUITES[0]


def _inventory_dir():
    from ..lab.manager import inventory_dir
    from ..site import site_dir

    return inventory_dir(site_dir())


@click.group()
def lab():
    """The built-in lab: laptop VMs, laptop containers and fleet hosts (root only)."""


@lab.command()
@click.option("--laptops", type=int, default=0, show_default=True, help="qemu laptop VMs (root on LUKS2).")
@click.option("--containers", type=int, default=0, show_default=True, help="systemd-nspawn laptop containers.")
@click.option("--fleet", "fleet_hosts", type=int, default=0, show_default=True,
              help="light fleet hosts (network namespace + sshd).")
@click.option("--suite", type=click.Choice(SUITES), default=DEFAULT_SUITE, show_default=True,
              help="Debian release of new laptop VMs and containers (hosts already running are kept).")
def up(laptops, containers, fleet_hosts, suite):
    """Start lab hosts (at least the numbers given) and write inventory/lab/hosts.yml."""
    from ..lab import manager

    _require_root()
    if not (laptops or containers or fleet_hosts):
        raise click.UsageError("say how many: --laptops N, --containers N and/or --fleet N")
    state = manager.up(laptops, containers, fleet_hosts, _inventory_dir(), log=_log, suite=suite)
    click.echo(f"lab: {len(state.hosts)} host(s) up; inventory: {_inventory_dir() / 'hosts.yml'}")


@lab.command()
def down():
    """Stop every lab host (and the demo's orders server) and remove its namespaces, mounts and overlays
    (idempotent)."""
    from ..lab import manager

    _require_root()
    n = manager.down(_inventory_dir(), log=_log)
    click.echo(f"lab: {n} host(s) stopped")


@lab.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(as_json):
    """List lab hosts and whether each is running."""
    from ..lab import manager

    rows = manager.status()
    if as_json:
        import json

        click.echo(json.dumps([{"name": h.name, "kind": h.kind, "address": h.address, "port": h.port,
                                "release": h.extra.get("suite"), "running": alive} for h, alive in rows], indent=2))
        return
    if not rows:
        click.echo("lab: no hosts")
    for h, alive in rows:
        # Fleet hosts share this machine's system; a laptop started before releases were recorded has none.
        release = h.extra.get("suite") or ("-" if h.kind == "fleet" else "unrecorded")
        click.echo(f"{h.name:12} {h.kind:10} {release:10} {h.address}:{h.port:<6} {'running' if alive else 'DEAD'}")


@lab.command(context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def ssh(name, command):
    """Open a shell on a lab host (or run COMMAND there)."""
    from ..lab.access import ssh_argv

    os.execvp("ssh", ssh_argv(name, list(command)))


@lab.group()
def usb():
    """Hot-plug emulated USB devices into a laptop VM (through its QMP socket)."""


@usb.command()
@click.argument("name")
@click.option("--serial", default=None, help="USB serial number the device reports.")
@click.option("--kind", type=click.Choice(["storage", "keyboard", "mouse", "tether"]), default="storage",
              show_default=True)
@click.option("--id", "device_id", default=None, help="Device id to use for unplug (default: derived).")
def plug(name, serial, kind, device_id):
    """Plug a USB stick, keyboard, mouse or a phone's USB tethering (tether) into laptop VM NAME."""
    from ..lab import usb

    dev = usb.plug(name, kind=kind, serial=serial, device_id=device_id)
    click.echo(f"lab: plugged {kind} {dev} into {name}")


@usb.command()
@click.argument("name")
@click.argument("device_id")
def unplug(name, device_id):
    """Unplug USB device DEVICE_ID from laptop VM NAME."""
    from ..lab import usb

    usb.unplug(name, device_id)
    click.echo(f"lab: unplugged {device_id} from {name}")


def _log(msg: str) -> None:
    click.echo(f"lab: {msg}", err=True)


def _require_root() -> None:
    from ..errors import LabError

    if os.geteuid() != 0:
        raise LabError("the lab needs root (namespaces, mounts, qemu networking); run it as root")
