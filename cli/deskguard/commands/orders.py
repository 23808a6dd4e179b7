"""`deskguard orders list|show|cancel|settle`: the wipe and lock orders and what became of them."""

from __future__ import annotations

import json

import click

from .common import open_store, parse_duration, site_option


@click.group()
def orders():
    """Wipe and lock orders: list, show, cancel, settle."""


def _hostnames(store) -> dict[str, str]:
    return {d.uuid: d.hostname for d in store.list_devices(include_removed=True)}


def _shown_state(order) -> str:
    """A queued order past its expiry reads "queued (expired)" until `orders settle` or the server records it."""
    from ..store.models import utcnow

    return "queued (expired)" if order.state == "queued" and order.expires_at < utcnow() else order.state


@orders.command("list")
@site_option
@click.option("--host", default=None, help="Only this laptop's orders.")
@click.option("--state", "states", multiple=True, help="Only orders in this state (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_(site, host, states, as_json):
    """Every order, oldest first."""
    _root, store = open_store(site)
    with store:
        device_uuid = store.require_device(host, include_removed=True).uuid if host else None
        rows = store.list_orders(device_uuid=device_uuid, states=tuple(states) or None)
        names = _hostnames(store)
    if as_json:
        click.echo(json.dumps([{**o.to_dict(), "hostname": names.get(o.device_uuid)} for o in rows], indent=2))
        return
    if not rows:
        click.echo("orders: none")
        return
    click.echo(f"{'ORDER':9} {'HOST':20} {'ACTION':6} {'STATE':17} {'CREATED':17} {'TICKET':12} REASON")
    for o in rows:
        click.echo(f"{o.id[:8]:9} {names.get(o.device_uuid, '?'):20} {o.action:6} {_shown_state(o):17} "
                   f"{o.created_at:%Y-%m-%d %H:%M} {(o.ticket or '-'):12} {o.reason}")


@orders.command()
@site_option
@click.argument("order_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def show(site, order_id, as_json):
    """One order (ORDER_ID or its first 8+ characters): record, signed payload, whether it is published."""
    from ..orders import settings
    from ..orders.issue import order_path
    from ..site import module_utils

    root, store = open_store(site)
    with store:
        order = store.get_order(order_id)
        hostname = _hostnames(store).get(order.device_uuid)
    proto = module_utils("deskguard_protocol")
    payload = proto.parse_envelope(order.envelope.encode(), proto.LIMITS["order"]).unverified_payload()
    path = order_path(settings.load(root), order.device_uuid)
    published = path.read_text() if path.exists() else None
    serving = ("this order" if published == order.envelope else
               "its cancel" if published is not None and published == order.cancel_envelope else
               "another order or cancel" if published is not None else "nothing")
    info = {**order.to_dict(), "hostname": hostname, "payload": payload, "published_at": str(path),
            "published": serving}
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    for key in ("id", "hostname", "action", "state", "state_reason", "reason", "ticket", "actor", "created_at",
                "issued_at", "expires_at", "acknowledged_at", "closed_at", "volumes", "nonce"):
        value = info[key]
        click.echo(f"{key + ':':17} {', '.join(value) if isinstance(value, list) else value or '-'}")
    if payload.get("keep_keyslots"):
        click.echo(f"{'keeps keyslots:':17} {json.dumps(payload['keep_keyslots'], sort_keys=True)}")
    click.echo(f"{'published:':17} {path} serves {serving}")


@orders.command()
@site_option
@click.argument("order_id")
def cancel(site, order_id):
    """Cancel a queued order: a signed cancel replaces it, so a copy of the order fetched later is refused."""
    from ..orders import issue, settings

    root, store = open_store(site)
    with store:
        order, path = issue.cancel(root, store, settings.load(root), order_id)
    click.echo(f"order {order.id} cancelled; {path} now serves the signed cancel")


@orders.command()
@site_option
@click.option("--grace", default=None, metavar="DURATION",
              help="How long an acknowledged order must stay silent before it is done (30s, 90m, 12h, 3d); "
                   "default: the policy's deskguard_order_done_grace_hours (72).")
def settle(site, grace):
    """Record what time decided: queued orders past their expiry become expired, acknowledged ones done when
    the laptop stayed silent for the grace period (or re-enrolled). Never done without an acknowledgement.
    `deskguard serve` does this too, with the policy's grace."""
    from ..errors import UsageError
    from ..orders import settings

    period = parse_duration(grace) if grace is not None else None
    if grace is not None and not period:
        raise UsageError(f"--grace {grace[:40]!r}: give a period of at least one second (30s, 90m, 12h, 3d)")
    root, store = open_store(site)
    conf = settings.load(root)
    with store:
        expired = store.expire_orders()
        done = store.settle_orders(period or conf.done_grace)
    for o in expired:
        click.echo(f"order {o.id} expired")
    for o in done:
        click.echo(f"order {o.id} done: {o.state_reason}")
    if not expired and not done:
        click.echo("orders: nothing to settle")
