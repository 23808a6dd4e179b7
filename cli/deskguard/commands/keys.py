"""`deskguard keys show|rotate|verify|destroy`: the escrowed recovery keys of the laptops' disks."""

from __future__ import annotations

import sys
from pathlib import Path

import click

_site_option = click.option("--site", default=None, help="Site folder (default: DESKGUARD_SITE or the checkout).")
_escrow_key = click.option("--escrow-key", type=click.Path(dir_okay=False, exists=True, path_type=Path),
                           default=None, help="The officer's escrow private key (PEM, passphrase-protected).")
_passphrase_file = click.option("--passphrase-file", type=click.File("rb"), default=None,
                                help="Read the officer key's passphrase from this file instead of asking.")


def _passphrase(escrow_key, passphrase_file) -> bytes | None:
    if escrow_key is None:
        return None
    if passphrase_file is not None:
        return passphrase_file.read().rstrip(b"\r\n")
    return click.prompt(f"Passphrase for {escrow_key}", hide_input=True, err=True).encode()


@click.group()
def keys():
    """Show (officer only), rotate, verify and destroy escrowed recovery keys."""


@keys.command()
@click.argument("host")
@click.option("--escrow-key", type=click.Path(dir_okay=False, exists=True, path_type=Path), required=True,
              help="The officer's escrow private key (PEM, passphrase-protected).")
@_passphrase_file
@click.option("--reason", default=None, help="Why (a ticket, 'operator forgot passphrase'); audited.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_site_option
def show(host, escrow_key, passphrase_file, reason, as_json, site):
    """Print HOST's recovery keys with their volume and keyslot. Audited before anything is shown."""
    import json

    from ..site.inventory import validate_hostname
    from ..recovery.keyops import show as show_keys
    from ..site import site_dir

    shown = show_keys(site_dir(site), validate_hostname(host), escrow_key,
                      _passphrase(escrow_key, passphrase_file), reason)
    if as_json:
        click.echo(json.dumps([k.to_dict() for k in shown], indent=2))
        return
    for k in shown:
        click.echo(f"{k.key_id} ({k.kind}, {k.state}, secret #{k.secret_id}): {k.key}")


def _run(site, playbook, limit, escrow_key, passphrase_file, as_json, title):
    import json

    from ..recovery.keyops import host_rows, officer_env, run_keys_playbook, target_hosts
    from ..progress import progress_factory
    from ..site import site_dir

    root = site_dir(site)
    hosts = target_hosts(root, limit)
    with officer_env(escrow_key, _passphrase(escrow_key, passphrase_file)) as env:
        result = run_keys_playbook(root, playbook, limit, env,
                                   progress=None if as_json else progress_factory(title, len(hosts)))
    rows = host_rows(result)
    if as_json:
        click.echo(json.dumps({"exit_code": result.exit_code, "hosts": rows}, indent=2))
    else:
        for r in rows:
            detail = "; ".join(r["findings"] + r["messages"]) or "-"
            click.echo(f"{r['host']:24} {r['state']:14} {detail}")
    sys.exit(result.exit_code)


@keys.command()
@click.argument("host", required=False)
@click.option("--all", "all_hosts", is_flag=True, help="Every managed laptop.")
@_escrow_key
@_passphrase_file
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_site_option
def rotate(host, all_hosts, escrow_key, passphrase_file, as_json, site):
    """Put a new escrowed recovery key on HOST's volumes (or --all) and remove the old one.

    The laptop is unlocked with its crypttab key file; without one, give --escrow-key so the current
    escrowed key unlocks it."""
    from ..errors import UsageError
    from ..site.inventory import validate_hostname

    if bool(host) == all_hosts:
        raise UsageError("give a HOST or --all (not both)")
    _run(site, "rotate_keys.yml", validate_hostname(host) if host else None, escrow_key, passphrase_file,
         as_json, "keys rotate")


@keys.command()
@click.option("--limit", default=None, help="A host or Ansible host pattern (default: every laptop).")
@_escrow_key
@_passphrase_file
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_site_option
def verify(limit, escrow_key, passphrase_file, as_json, site):
    """Check on each laptop that its escrowed keys still match its keyslots (without the keys), or, with
    --escrow-key, that each key really opens its volume. Exit 1 if any does not."""
    _run(site, "verify_keys.yml", limit, escrow_key, passphrase_file, as_json, "keys verify")


@keys.command()
@click.argument("host")
@click.option("--reason", required=True, help="Why; audited.")
@click.option("--yes", is_flag=True, help="Do not ask; needs --confirm HOST.")
@click.option("--confirm", "confirm_host", default=None, help="The hostname again, with --yes.")
@_site_option
def destroy(host, reason, yes, confirm_host, site):
    """Erase HOST's escrowed recovery keys from the store. Afterwards IT cannot open its disk."""
    from ..site.inventory import validate_hostname
    from ..recovery.keyops import destroy as destroy_keys
    from .common import confirm_host as confirm
    from ..site import site_dir

    hostname = validate_hostname(host)
    confirm(hostname, yes, confirm_host, ("erase its escrowed recovery keys for good", "destroyed"))
    count = destroy_keys(site_dir(site), hostname, reason)
    click.echo(f"{hostname}: {count} escrowed key(s) destroyed")
