"""Create a site: its state folder, store, keys and example policy, keeping whatever already exists.

`deskguard init` prints what this did; the demo makes its throw-away site with it too, so a demo site is
made exactly as an admin's is."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class InitResult:
    site: Path
    done: list[tuple[str, str, str]] = field(default_factory=list)  # (status, path, note)
    officer_key: Path | None = None   # the escrow private key, when this run created it
    escrow_public: Path | None = None

    @property
    def created(self) -> list[str]:
        return [path for status, path, _note in self.done if status == "created"]


def needs_passphrase(root: Path) -> bool:
    """Whether init would create the escrow key pair (only then is the officer passphrase asked for)."""
    from ..recovery import keys

    return not (keys.keys_dir(root) / keys.ESCROW_PUBLIC).exists()


def init_site(root: Path, passphrase: bytes | None) -> InitResult:
    """Idempotent. `passphrase` (already checked with keys.check_passphrase) is needed when the escrow key is new."""
    from ..recovery import keys
    from ..fsutil import atomic_write
    from .inventory import ensure_hosts_file, hosts_file
    from . import KIT_ROOT
    from ..store import DB_URL_ENV, Store, default_db_path, state_dir

    root.mkdir(parents=True, exist_ok=True)
    out = InitResult(root)
    done = out.done

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

    if out.created:
        with Store.open(root) as store:
            store.audit(None, "site.init", str(root), {"created": out.created})

    officer = next((r for r in results if r.path.name == keys.ESCROW_PRIVATE), None)
    if officer is not None and officer.status == "created":
        out.officer_key = officer.path
    out.escrow_public = keys.keys_dir(root) / keys.ESCROW_PUBLIC
    return out
