"""`deskguard keys …`: read (officer only), rotate, verify and destroy escrowed recovery keys.

Reading a key needs the escrow private key and its passphrase, and is audited *before* anything is shown.
Rotate and verify run a playbook whose step is the deskguard_escrow action plugin; the officer key, when
given, reaches it as a file path plus a passphrase file in a private temporary directory that is removed
afterwards (never argv, never an extra var: ansible-runner would write those to disk).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..errors import UsageError
from .escrow import LIVE

RECOVERY_KINDS = ("luks-recovery", "bitlocker-recovery")


@dataclass
class ShownKey:
    secret_id: int
    kind: str
    key_id: str
    state: str
    key: str

    def to_dict(self) -> dict:
        return {"secret_id": self.secret_id, "kind": self.kind, "key_id": self.key_id, "state": self.state,
                "key": self.key}


def show(site: Path, hostname: str, officer_key_file: Path, passphrase: bytes, reason: str | None) -> list[ShownKey]:
    """The clear recovery keys of HOST's live secrets. The audit entry is written before they are returned,
    so a key that was shown is always a key whose showing is on record."""
    from .keys import load_officer_key, unseal
    from ..store import Store

    officer = load_officer_key(officer_key_file, passphrase)
    with Store.open(site) as store:
        device = store.require_device(hostname, include_removed=True)
        secrets = [s for s in store.list_secrets(device.uuid)
                   if s.state in LIVE and s.kind in RECOVERY_KINDS and s.ciphertext]
        if not secrets:
            raise UsageError(f"{hostname}: no escrowed recovery key in the store (see `deskguard devices show`)")
        shown = [ShownKey(s.id, s.kind, s.key_id, s.state,
                          unseal(officer, s.ciphertext, s.device_uuid, s.kind, s.key_id).decode())
                 for s in secrets]
        store.audit(None, "secret.show", hostname, {"uuid": device.uuid, "secret_ids": [k.secret_id for k in shown],
                                                    "reason": reason})
    return shown


def destroy(site: Path, hostname: str, reason: str) -> int:
    """Erase the ciphertext of HOST's recovery keys (audited). Used on purpose, and by wipe."""
    from ..store import Store

    if not reason or not reason.strip():
        raise UsageError("destroying escrowed keys needs a --reason (it goes into the audit log)")
    with Store.open(site) as store:
        device = store.require_device(hostname, include_removed=True)
        with store.transaction():
            return sum(store.destroy_secrets(device.uuid, kind=kind, reason=reason) for kind in RECOVERY_KINDS)


@contextlib.contextmanager
def officer_env(officer_key_file: Path | None, passphrase: bytes | None) -> Iterator[dict]:
    """Environment for the action plugin: the officer key's path and a 0600 passphrase file, removed after."""
    if officer_key_file is None:
        yield {}
        return
    from .keys import load_officer_key

    load_officer_key(officer_key_file, passphrase)  # a wrong passphrase stops here, before any play
    private = Path(tempfile.mkdtemp(prefix="deskguard-officer-"))  # 0700
    try:
        pw = private / "passphrase"
        fd = os.open(pw, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(passphrase or b"")
        yield {"DESKGUARD_OFFICER_KEY_FILE": str(Path(officer_key_file).resolve()),
               "DESKGUARD_OFFICER_PASSPHRASE_FILE": str(pw)}
    finally:
        shutil.rmtree(private, ignore_errors=True)


def target_hosts(site: Path, limit: str | None) -> list[str]:
    """The laptops rotate_keys.yml / verify_keys.yml reach: the host LIMIT names (in any group), else the
    `laptops` the pattern matches; UsageError (exit 2) when none."""
    from ..site import inventory

    if limit and limit in inventory.require_hosts(site):
        return [limit]
    return inventory.play_hosts(site, limit)


def run_keys_playbook(site: Path, playbook: str, limit: str | None, env: dict, progress=None):
    """rotate_keys.yml / verify_keys.yml over the site's inventory (limited to a host or pattern)."""
    from ..site import inventory
    from ..runner import run_playbook

    extravars = {"deskguard_hosts": limit} if limit and limit in inventory.require_hosts(site) else {}
    return run_playbook(site, playbook, [inventory.hosts_file(site)], limit=limit, extravars=extravars,
                        envvars=env, progress=progress)


def host_rows(result) -> list[dict]:
    """Per host: ENC-002's state and findings, or why the host could not be checked."""
    rows = []
    for name, outcome in sorted(result.hosts.items()):
        state = "unreachable" if outcome.unreachable else outcome.controls.get("ENC-002", outcome.state)
        rows.append({"host": name, "state": state, "findings": outcome.findings.get("ENC-002", []),
                     "messages": outcome.messages})
    return rows
