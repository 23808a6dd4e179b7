"""`deskguard usb ...`: approve USB devices in the policy, and see what is attached to a laptop."""

from __future__ import annotations

import click

from .common import open_store, site_option


@click.group()
def usb():
    """Approve USB storage devices; list what is attached to a laptop and what was blocked."""


@usb.command()
@site_option
@click.argument("device")
@click.option("--group", default=None, help="Approve for an inventory group (`all`: the whole policy).")
@click.option("--host", default=None, help="Approve for one laptop.")
@click.option("--reason", required=True, help="Why (kept with the entry and in the audit log).")
def approve(site, device, group, host, reason):
    """Approve DEVICE (VENDOR:PRODUCT[:SERIAL]) for --group G or --host H (audited).

    Takes effect where usb_control_mode is allow_listed, at the next run of the role."""
    from ..site.usb import approve as do_approve

    root, store = open_store(site)
    with store:
        changed, path, entry = do_approve(root, store, device, group=group, host=host, reason=reason)
    shown = entry["id"] + (f":{entry['serial']}" if entry.get("serial") else " (any serial)")
    if changed:
        click.echo(f"usb: approved {shown} in {path.relative_to(root)}; it takes effect at the next run of "
                   f"the usb_control role (allow_listed mode)")
    else:
        click.echo(f"usb: {shown} is already approved in {path.relative_to(root)}; nothing changed")


@usb.command("list")
@site_option
@click.argument("host")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_(site, host, as_json):
    """What is attached to HOST, what was blocked recently, and USB-001..003 (read-only, audited)."""
    from ..errors import DeskguardError
    from ..site.usb import report

    root, store = open_store(site)
    with store:
        result, found = report(root, store, host)
    if found is None:
        outcome = next(iter(result.hosts.values()), None)
        why = "; ".join(outcome.messages) if outcome and outcome.messages else result.status
        raise DeskguardError(f"usb: no report from {host}: {why}", exit_code=result.exit_code or 1)
    if as_json:
        import json

        click.echo(json.dumps({"usb": found["usb"], "controls": found["controls"]}, indent=2))
        return
    facts = found["usb"]
    click.echo(f"{'PORT':8} {'ID':10} {'SERIAL':22} {'STATE':8} {'KIND':8} NAME")
    for d in facts["devices"]:
        kind = "storage" if d["storage"] else ",".join(sorted({i[:2] for i in d["interfaces"]})) or "-"
        click.echo(f"{d['port']:8} {d['id']:10} {(d['serial'] or '-')[:22]:22} "
                   f"{'allowed' if d['authorized'] else 'BLOCKED':8} {kind:8} {d['name']}")
    if not facts["devices"]:
        click.echo("(no USB devices attached)")
    click.echo("recently blocked:" + ("" if facts["recent_blocks"] else " none"))
    for b in facts["recent_blocks"]:
        click.echo(f"  {b['time']} {b['target']:6} {b['id'] or '-'} {b['serial'] or '-'} {b['name'] or ''}")
    for c in found["controls"]:
        click.echo(f"{c['id']} {c['status']:15} {c['observed']}")
