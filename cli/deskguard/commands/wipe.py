"""`deskguard wipe HOST`: sign and publish a wipe (or lock) order; deliver it at once if the laptop answers."""

from __future__ import annotations

import sys

import click

from .common import confirm_host, open_store, site_option


@click.command()
@click.argument("host")
@click.option("--reason", required=True, help="Why (\"lost on the train\"); audited and kept with the order.")
@click.option("--ticket", default=None, help="Ticket or incident id (e.g. INC-123).")
@click.option("--mode", type=click.Choice(["wipe", "lock"]), default="wipe", show_default=True,
              help="wipe: crypto-erase every disk (final). lock: remove all but the escrowed key slots (reversible).")
@click.option("--yes", is_flag=True, help="Do not ask to type the hostname; needs --confirm HOST.")
@click.option("--confirm", "confirm_name", default=None, help="The hostname again, with --yes.")
@click.option("--no-run", is_flag=True, help="Only publish: let the agent fetch it at its next check-in.")
@site_option
def wipe(host, reason, ticket, mode, yes, confirm_name, no_run, site):
    """Order HOST's agent to wipe (or lock) it: a signed order is published for its next check-in, and
    delivered at once through playbooks/wipe.yml when the laptop answers now.

    Exit codes: 0 published (delivered now, or waiting for the laptop's next check-in); 1 published, but the
    laptop answered and delivering it now failed (the reason is printed; the order stays published); 2 refused,
    nothing signed (your input, or a laptop no order can reach: no check-in agent); 4 the controller cannot sign
    or publish (order key, orders folder)."""
    from ..site.inventory import validate_hostname
    from ..orders import deliver, issue, settings

    hostname = validate_hostname(host)
    root, store = open_store(site)
    with store:
        conf = settings.load(root)  # the whole policy checked first, as every command does
        device = store.require_device(hostname)  # an unknown host, or one with no agent, fails before the prompt
        issue.require_agent(store, device)
        confirm_host(hostname, yes, confirm_name,
                     ("wipe every disk on it for good" if mode == "wipe" else "lock it", "ordered"))
        done = issue.issue(root, store, conf, hostname, action=mode, reason=reason, ticket=ticket)
    order = done.order
    click.echo(f"{hostname}: {mode} order {order.id} signed and published at {done.path} "
               f"(volumes {', '.join(done.payload['volumes'])}; expires {done.payload['expires_at']})")
    if no_run:
        click.echo(f"{hostname}: it runs at the laptop's next check-in")
        return
    if not deliver.playbook_available(root):
        click.echo(f"{hostname}: playbooks/{deliver.WIPE_PLAYBOOK} is not installed; the laptop gets the order at its "
                   "next check-in")
        return
    why = deliver.reachable(device.address, device.port)
    if why:
        click.echo(f"{hostname}: does not answer now ({why}); the laptop gets the order at its next check-in")
        return
    from ..progress import progress_factory

    result = deliver.run_now(root, hostname, done.path, progress=progress_factory(f"{mode} {hostname}", 1))
    outcome = result.hosts.get(hostname)
    if outcome is not None and outcome.unreachable:
        click.echo(f"{hostname}: went away during delivery; the laptop gets the order at its next check-in")
        return
    if result.exit_code == 0:
        import shlex

        where = f" --site {shlex.quote(str(site))}" if site else ""   # a hint to paste must reach the same site
        click.echo(f"{hostname}: the agent acknowledged the {mode} order and carried it out now; "
                   f"see `deskguard orders show {order.id[:8]}{where}`")
        return
    detail = "; ".join(outcome.messages) if outcome and outcome.messages else f"ansible exit {result.rc}"
    click.echo(f"{hostname}: delivering it now failed ({detail}); the order stays published for the next "
               "check-in", err=True)
    sys.exit(result.exit_code)
