"""`deskguard init`: the site's state directory, store, keys and an example policy (idempotent)."""

from __future__ import annotations

import json
import os
import sys

import click



def _read_passphrase_file(path: str) -> bytes:
    from ..errors import UsageError

    try:
        raw = open(path, "rb").read()
    except OSError as exc:
        raise UsageError(f"cannot read the passphrase file {path}: {exc.strerror}") from None
    if raw.endswith(b"\r\n"):
        raw = raw[:-2]
    elif raw.endswith(b"\n"):
        raw = raw[:-1]
    return raw


def _ask_passphrase() -> bytes:
    from ..errors import UsageError

    if not sys.stdin.isatty():
        raise UsageError("the escrow key needs an officer passphrase: give --officer-passphrase-file FILE "
                         "(there is no terminal to ask on)")
    click.echo("The escrow private key is encrypted with a passphrase the security officer keeps.", err=True)
    return click.prompt("Officer key passphrase", hide_input=True, confirmation_prompt=True,
                        err=True).encode("utf-8")


@click.command()
@click.option("--site", type=click.Path(file_okay=False), default=None,
              help="Site directory (default: $DESKGUARD_SITE, else the kit checkout).")
@click.option("--officer-passphrase-file", type=click.Path(dir_okay=False), default=None,
              help="File holding the escrow officer key passphrase (else asked twice, hidden).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (the officer-key notice stays on stderr).")
def init(site, officer_passphrase_file, as_json):
    """Create the site's store, keys and example policy; keep whatever already exists."""
    from pathlib import Path

    from .. import keys
    from ..fsutil import atomic_write
    from ..inventory import ensure_hosts_file, hosts_file
    from ..site import KIT_ROOT, site_dir
    from ..store import DB_URL_ENV, Store, default_db_path, state_dir
    from ..term import color

    root = site_dir(site)
    root.mkdir(parents=True, exist_ok=True)
    done: list[tuple[str, str, str]] = []  # (status, path, note)

    # Ask for (and check) the passphrase before creating anything, and only if the escrow key is new.
    kdir = keys.keys_dir(root)
    passphrase = None
    if not (kdir / keys.ESCROW_PUBLIC).exists():
        raw = _read_passphrase_file(officer_passphrase_file) if officer_passphrase_file else _ask_passphrase()
        passphrase = keys.check_passphrase(raw)

    sdir = state_dir(root)
    existed = sdir.exists()
    sdir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(sdir, 0o700)
    done.append(("kept" if existed else "created", f"{sdir}/", "0700"))

    if os.environ.get(DB_URL_ENV):
        with Store.open(root, create=True) as store:
            done.append(("ready", store.safe_url, f"store, schema {store.revision}"))
    else:
        db = default_db_path(root)
        db_existed = db.exists()
        with Store.open(root, create=True) as store:
            done.append(("kept" if db_existed else "created", str(db), f"store, schema {store.revision}"))

    results = keys.init_keys(root, passphrase)
    for r in results:
        done.append((r.status, str(r.path),
                     r.what + (", not on this controller: good" if r.status == "absent" else "")))

    policy = root / "inventory" / "group_vars" / "all" / "policy.yml"
    if policy.exists():
        done.append(("kept", str(policy), "policy"))
    else:
        # The kit's own policy file is the example: every control on, documented defaults.
        atomic_write(policy, (KIT_ROOT / "inventory" / "group_vars" / "all" / "policy.yml").read_text())
        done.append(("created", str(policy), "example policy: set firewall_management_sources before onboarding"))
    done.append(("created" if ensure_hosts_file(root) else "kept", str(hosts_file(root)), "inventory"))

    created = [path for status, path, _note in done if status == "created"]
    if created:
        with Store.open(root) as store:
            store.audit(None, "site.init", str(root), {"created": created})

    if as_json:
        click.echo(json.dumps({"site": str(root), "items": [{"status": s, "path": p, "note": n} for s, p, n in done]},
                              indent=2))
    else:
        for status, path, note in done:
            click.echo(f"{status:8} {path} ({note})")
    officer = next((r for r in results if r.path.name == keys.ESCROW_PRIVATE), None)
    if officer is not None and officer.status == "created":
        click.secho(keys.OFFICER_KEY_NOTICE.format(path=officer.path, pub=Path(kdir / keys.ESCROW_PUBLIC)),
                    err=True, fg="red", bold=True, color=color())
    if not as_json:
        click.echo(f"init: site {root} ready ({len(created)} created, {len(done) - len(created)} kept)")
