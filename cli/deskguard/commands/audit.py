"""`deskguard audit log|verify`: the append-only, hash-chained audit log."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click

from .common import open_store, parse_duration, site_option

FORMATS = ("table", "csv", "json")
MAX_LIMIT = 1_000_000  # more than a store's integer holds used to end in an OverflowError traceback
CSV_COLUMNS = ("id", "at", "actor", "action", "target", "detail", "prev_hash", "hash")


@click.group()
def audit():
    """Read and verify the audit log."""


@audit.command()
@site_option
@click.option("--checkpoints", "checkpoints_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Checkpoint file to check the head against (default: the policy's, e.g. a copy kept elsewhere).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def verify(site, checkpoints_file, as_json):
    """Check the hash chain, and its head against the latest signed checkpoint. Exit 0 if intact, 1 at the
    first altered or missing entry, or when the chain is shorter than, or differs from, the checkpoint."""
    from ..errors import EXIT_HOST_FAILED, DeskguardError, UsageError
    from ..store import auditcheckpoint

    if checkpoints_file is not None and not checkpoints_file.is_file():
        raise UsageError(f"--checkpoints {checkpoints_file}: no such file")
    root, store = open_store(site)
    path = checkpoints_file or auditcheckpoint.settings(root).file
    with store:
        ok, bad, count, head = store.verify_audit_detail()
        checkpoints = auditcheckpoint.load(path, auditcheckpoint.public_key(root))
        problem = auditcheckpoint.compare(store, count, head, checkpoints) if ok else None
    latest = checkpoints[-1] if checkpoints else None
    if as_json:
        import json

        click.echo(json.dumps({"ok": ok and not problem, "first_bad_id": bad, "entries": count, "head": head,
                               "checkpoint": latest.payload() if latest else None, "checkpoint_problem": problem}))
        if not ok or problem:
            raise SystemExit(EXIT_HOST_FAILED)
        return
    if not ok:
        raise DeskguardError(f"audit chain broken at entry {bad}: it, or an entry before it, was altered or "
                             f"deleted", exit_code=EXIT_HOST_FAILED)
    if problem:
        raise DeskguardError(problem, exit_code=EXIT_HOST_FAILED)
    if latest is None:
        click.echo(f"audit: {count} entries, chain intact; head {head}; no checkpoint in {path}, so removed "
                   "newest entries would not show (`deskguard audit checkpoint`)")
    else:
        click.echo(f"audit: {count} entries, chain intact; head {head}; matches the checkpoint of {latest.at} "
                   f"({latest.entries} entries)")


@audit.command()
@site_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def checkpoint(site, as_json):
    """Sign the chain's head and append it to the checkpoint file (and syslog if the policy says so).
    `deskguard comply` does this after every run. Exit 1 (nothing written) if the chain is broken or shorter
    than, or different from, the latest checkpoint."""
    from ..store import auditcheckpoint

    root, store = open_store(site)
    with store:
        cp, conf = auditcheckpoint.record(root, store)
    if as_json:
        import json

        click.echo(json.dumps({**cp.payload(), "key_id": cp.key_id, "file": str(conf.file), "syslog": conf.syslog}))
        return
    to = f"{conf.file}" + (" and syslog" if conf.syslog else "")
    click.echo(f"audit checkpoint: {cp.entries} entries, head {cp.head}, written to {to}")


def parse_since(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """A UTC date or time (2026-11-01, 2026-11-01T10:00[:00][Z]) or an age (30s, 90m, 12h, 7d) as naive UTC."""
    from ..errors import UsageError
    from ..store.models import utcnow

    text = text.strip()
    age = parse_duration(text)
    if age is not None:
        return (now or utcnow()) - age
    try:
        parsed = dt.datetime.fromisoformat(text[:-1] if text.endswith("Z") else text)
    except ValueError:
        raise UsageError(f"--since {text[:40]!r}: give a UTC date or time (2026-11-01, 2026-11-01T10:00) or an "
                         "age (90m, 12h, 7d)") from None
    return parsed.astimezone(dt.timezone.utc).replace(tzinfo=None) if parsed.tzinfo else parsed


@audit.command("log")
@site_option
@click.option("--since", default=None, help="Entries at or after a UTC date/time (2026-11-01) or an age (7d).")
@click.option("--target", default=None, help="Only entries about this target (e.g. a hostname).")
@click.option("--limit", type=click.IntRange(1, MAX_LIMIT), default=None,
              help=f"Only the newest N entries (1-{MAX_LIMIT:,}).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
def log(site, since, target, limit, fmt, as_json):
    """Audit entries, oldest first (`audit list` is the same command)."""
    import json

    since_at = parse_since(since) if since else None
    _root, store = open_store(site)
    with store:
        rows = [r.to_dict() for r in store.list_audit(target=target, limit=limit, since=since_at)]
    fmt = "json" if as_json else fmt
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
    elif fmt == "csv":
        import csv
        import sys

        out = csv.DictWriter(sys.stdout, fieldnames=CSV_COLUMNS, lineterminator="\n")
        out.writeheader()
        for r in rows:
            out.writerow({**r, "detail": json.dumps(r["detail"], sort_keys=True, ensure_ascii=False)})
    elif not rows:
        click.echo("audit: no entries")
    else:
        for r in rows:
            click.echo(f"#{r['id']:<5} {r['at']} {r['actor']:16} {r['action']:18} {r['target']}  "
                       f"{json.dumps(r['detail'], sort_keys=True)}")


audit.add_command(log, "list")
