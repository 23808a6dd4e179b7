"""`deskguard audit ...`: the append-only, hash-chained audit log."""

from __future__ import annotations

import click

_site_option = click.option("--site", type=click.Path(file_okay=False), default=None,
                            help="Site directory (default: $DESKGUARD_SITE, else the kit checkout).")


def _open(site):
    from ..site import site_dir
    from ..store import Store

    return Store.open(site_dir(site))


@click.group()
def audit():
    """Read and verify the audit log."""


@audit.command()
@_site_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def verify(site, as_json):
    """Check the hash chain. Exit 0 if intact, 1 at the first altered or missing entry."""
    from ..errors import EXIT_HOST_FAILED, DeskguardError

    with _open(site) as store:
        ok, bad, count, head = store.verify_audit_detail()
    if as_json:
        import json

        click.echo(json.dumps({"ok": ok, "first_bad_id": bad, "entries": count, "head": head}))
        if not ok:
            raise SystemExit(EXIT_HOST_FAILED)
        return
    if not ok:
        raise DeskguardError(f"audit chain broken at entry {bad}: it, or an entry before it, was altered or "
                             f"deleted", exit_code=EXIT_HOST_FAILED)
    click.echo(f"audit: {count} entries, chain intact; head {head}")


@audit.command("list")
@_site_option
@click.option("--target", default=None, help="Only entries about this target (e.g. a hostname).")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, help="Newest N entries.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_(site, target, limit, as_json):
    """The newest entries, oldest first."""
    import json

    with _open(site) as store:
        rows = store.list_audit(target=target, limit=limit)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in rows], indent=2))
        return
    if not rows:
        click.echo("audit: no entries")
    for r in rows:
        d = r.to_dict()
        click.echo(f"#{r.id:<5} {d['at']} {r.actor:16} {r.action:16} {r.target}  "
                   f"{json.dumps(d['detail'], sort_keys=True)}")
