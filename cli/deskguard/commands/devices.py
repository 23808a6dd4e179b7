"""`deskguard devices ...`: the managed laptops the store knows about."""

from __future__ import annotations

import click

from .common import open_store, site_option


@click.group()
def devices():
    """List, show, approve and remove managed devices."""


@devices.command("list")
@site_option
@click.option("--all", "include_removed", is_flag=True, help="Include removed devices.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_(site, include_removed, as_json):
    """Every managed device, one per line."""
    _root, store = open_store(site)
    with store:
        rows = store.list_devices(include_removed=include_removed)
    if as_json:
        import json

        click.echo(json.dumps([d.to_dict() for d in rows], indent=2))
        return
    if not rows:
        click.echo("devices: none (add one with `deskguard onboard`)")
        return
    click.echo(f"{'HOSTNAME':24} {'STATE':12} {'OS':8} {'ADDRESS':22} {'USER':12} {'OPERATOR':20} "
               f"{'LAST SEEN (UTC)':26} UUID")
    for d in rows:
        click.echo(f"{d.hostname:24} {d.state:12} {d.os:8} {d.address + ':' + str(d.port):22} "
                   f"{d.ssh_user:12} {(d.operator or '-'):20} {_last_seen(d):26} {d.uuid}")


def _last_seen(device) -> str:
    """"2026-11-29 01:00 checkin": when the kit last heard from the laptop, and how (agent or a live run)."""
    if device.last_seen_at is None:
        return "never"
    return f"{device.last_seen_at:%Y-%m-%d %H:%M} {device.last_seen_via or ''}".rstrip()


@devices.command()
@site_option
@click.argument("host")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def show(site, host, as_json):
    """One device: its record, escrowed secrets (metadata only) and latest audit entries."""
    from ..site.inventory import list_hosts, validate_hostname

    hostname = validate_hostname(host)
    root, store = open_store(site)
    with store:
        device = store.require_device(hostname, include_removed=True)
        secrets = store.list_secrets(device.uuid)
        history = store.list_audit(target=hostname, limit=10)
    in_inventory = hostname in list_hosts(root)
    if as_json:
        import json

        click.echo(json.dumps({**device.to_dict(), "in_inventory": in_inventory,
                               "secrets": [s.to_dict() for s in secrets],
                               "audit": [a.to_dict() for a in history]}, indent=2))
        return
    for key, value in device.to_dict().items():
        click.echo(f"{key + ':':12} {value if value is not None else '-'}")
    click.echo(f"{'inventory:':12} {'listed in inventory/hosts.yml' if in_inventory else 'not listed'}")
    click.echo("secrets:" + ("" if secrets else "     none"))
    for s in secrets:
        state = f"{s.state} {s.to_dict()['destroyed_at']}" if s.destroyed_at else s.state
        click.echo(f"  #{s.id} {s.kind} {s.key_id} ({state}, sealed to {s.escrow_key_id or '?'})")
    click.echo("audit:" + ("" if history else "       none"))
    for a in history:
        click.echo(f"  #{a.id} {a.to_dict()['at']} {a.actor} {a.action}")


@devices.command()
@site_option
@click.argument("host")
@click.option("--yes", is_flag=True, help="Do not ask to type the hostname.")
def remove(site, host, yes):
    """Stop managing HOST: mark it removed (audited) and take it out of the inventory.

    Its escrowed secrets are kept until they are destroyed explicitly."""
    from ..errors import UsageError
    from ..site.inventory import remove_and_unlist, validate_hostname

    hostname = validate_hostname(host)
    root, store = open_store(site)
    with store:
        device = store.require_device(hostname)
        if not yes:
            typed = click.prompt(f"Type the hostname to remove {hostname} ({device.uuid})", err=True,
                                 default="", show_default=False)
            if typed.strip().lower() != hostname:
                raise UsageError(f"the typed name does not match {hostname!r}; nothing removed")
        peer = store.vpn_peer(device.uuid)
        device = remove_and_unlist(root, store, hostname)
        kept = len(store.list_secrets(device.uuid, include_destroyed=False))
    click.echo(f"devices: removed {hostname} ({device.uuid}) from the store and the inventory; "
               f"{kept} escrowed secret(s) kept")
    if peer is not None:
        # The store revoked the peer with the removal; the gateway drops it only when it is pushed.
        click.echo(f"devices: VPN peer {peer.address} revoked and its address freed; run `deskguard vpn "
                   "push-gateway` so the gateway stops accepting it")


@devices.command()
@site_option
@click.argument("host")
def approve(site, host):
    """Let HOST, a laptop that enrolled itself (state pending), onto the VPN and into `enrolment process`."""
    from ..site.inventory import validate_hostname

    hostname = validate_hostname(host)
    _root, store = open_store(site)
    with store:
        device, changed = store.approve_device(hostname)
    click.echo(f"devices: {hostname} approved; `deskguard enrolment process` lets it onto the VPN and onboards it"
               if changed else f"devices: {hostname} was approved already")
