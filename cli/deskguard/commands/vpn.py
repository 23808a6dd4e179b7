"""`deskguard vpn gateway-config|list|rotate`: the laptops' WireGuard peers (docs/vpn.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .common import output_option, write_output

_site_option = click.option("--site", default=None, help="Site folder (default: DESKGUARD_SITE or the checkout).")
_policy_option = click.option("--policy", "policy_file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
                              default=None, help="Read the vpn_* settings from this file instead of the site's policy.")


@click.group()
def vpn():
    """The VPN gateway's peer list, the enrolled laptops, key rotation."""


@vpn.command("gateway-config")
@click.option("--format", "fmt", type=click.Choice(["wg-quick", "networkd", "json"]), default="wg-quick",
              show_default=True)
@output_option("Write here (atomically; a missing folder is made) instead of standard output.")
@_policy_option
@_site_option
def gateway_config(fmt, output, policy_file, site):
    """The gateway's peers: every enrolled laptop's public key and address, nothing secret."""
    from ..site import site_dir
    from ..store import Store
    from ..vpn import gateway, policy

    root = site_dir(site)
    with Store.open(root) as store:  # first: a folder that is no site is told so, not that its VPN is unset
        settings = policy.settings(root, policy_file)
        peers, pending = gateway.peer_rows(store, settings)
    text = gateway.render(fmt, settings, peers, pending)
    if output is None:
        click.echo(text, nl=False)
        return
    write_output(output, text, f"the gateway's {len(peers)} peer(s)"
                 + (f" ({len(pending)} waiting for their key)" if pending else ""))


@vpn.command("list")
@click.option("--all", "include_revoked", is_flag=True, help="Include revoked peers.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_site_option
def list_(include_revoked, as_json, site):
    """Every laptop's tunnel address and public key."""
    from ..site import site_dir
    from ..store import Store

    with Store.open(site_dir(site)) as store:
        rows = store.list_vpn_peers(include_revoked=include_revoked)
    if as_json:
        import json

        click.echo(json.dumps([{**p.to_dict(), "hostname": d.hostname} for p, d in rows], indent=2))
        return
    if not rows:
        click.echo("vpn: no laptop enrolled")
        return
    for p, d in rows:
        click.echo(f"{d.hostname:24} {p.address:16} {p.state:8} {p.public_key or '(waiting for the laptop)'}")


@vpn.command()
@click.argument("host")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_site_option
def rotate(host, as_json, site):
    """A new key pair made on HOST; the store and the gateways (group vpn_gateways) learn the public key."""
    import json

    from ..site.inventory import validate_hostname
    from ..progress import progress_factory
    from ..site import site_dir
    from ..vpn.admin import gateway_hosts
    from ..vpn.admin import rotate as rotate_host

    root = site_dir(site)
    total = 1 + len(gateway_hosts(root))  # the laptop, then every gateway learns its new key
    result, row = rotate_host(root, validate_hostname(host),
                              progress=None if as_json else progress_factory("vpn rotate", total))
    if as_json:
        click.echo(json.dumps({"exit_code": result.exit_code, **row}, indent=2))
    else:
        click.echo(f"{row['host']:24} {row['state']:14} {row['address'] or '-':16} {'; '.join(row['messages']) or '-'}")
    sys.exit(result.exit_code)


@vpn.command("push-gateway")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_site_option
def push_gateway(as_json, site):
    """Push the enrolled laptops to the inventory's `vpn_gateways` (wg syncconf; their other peers kept).

    Run it after `deskguard devices remove`: the removed laptop's peer is dropped and its handshakes stop."""
    from ..errors import UsageError
    from ..progress import progress_factory
    from ..site import policyfile, site_dir
    from ..vpn import policy
    from ..vpn.admin import gateway_hosts, push_gateways
    from ..vpn.gateway import GATEWAY_GROUP

    root = site_dir(site)
    policyfile.check(root)  # the whole policy first, as every command checks it
    gateways = gateway_hosts(root)
    if not gateways:
        raise UsageError(f"no VPN gateway in the inventory (group {GATEWAY_GROUP}): nothing to push (docs/vpn.md)")
    policy.settings(root, None)  # what the playbook's peer list needs, said here in one line before anything runs
    result = push_gateways(root, progress=None if as_json else progress_factory("vpn push-gateway", len(gateways)))
    if result.exit_code and not result.hosts:
        click.echo(f"deskguard: vpn push-gateway: ansible-playbook ended {result.status} (exit {result.rc}) before "
                   "any gateway answered", err=True)
    if as_json:
        import json

        click.echo(json.dumps({"exit_code": result.exit_code,
                               "gateways": {name: {"state": o.state, "messages": o.messages}
                                            for name, o in sorted(result.hosts.items())}}, indent=2))
    else:
        for name, outcome in sorted(result.hosts.items()):
            click.echo(f"{name:24} {outcome.state:14} {'; '.join(outcome.messages) or '-'}")
    sys.exit(result.exit_code)
