"""Signed checkpoints of the audit chain's head, kept outside the database (docs/store.md, "Checkpoints").

The hash chain shows an edited or deleted entry, but not the newest entries removed, nor the whole chain
rewritten and re-hashed: either leaves a valid, shorter or different, chain. A checkpoint records the number of
entries and the head hash at a moment, signed, as one line appended to a JSON Lines file (and, if the policy
says so, to syslog): `audit verify` then fails when the chain is shorter than the latest checkpoint or its entry
at that position has another hash. The file is only ever appended to (O_APPEND, one write per line), so it can
live on append-only storage (`chattr +a`, a WORM share) and copies elsewhere stay comparable.

The signing key is the checkpoints' own (Ed25519, made at the first checkpoint, 0600 beside the store), not the
order-signing key: checkpoints are written unattended every night, and the order key is the officer's to sign
wipes with; a checkpoint signature must never be usable as anything else either. The signature proves a
checkpoint came from this controller; the protection against someone who controls the controller is the copy
kept where they cannot rewrite it (the public key and the checkpoints off the controller).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..site import policyfile
from ..errors import EXIT_HOST_FAILED, DeskguardError, UsageError
from ..fsutil import create_new
from .auditchain import canonical_json
from .core import state_dir

CHECKPOINTS = "audit-checkpoints.jsonl"
PRIVATE = "audit-checkpoint.key.pem"
PUBLIC = "audit-checkpoint.pub.pem"
CONTEXT = b"deskguard audit checkpoint v1\n"   # signed ahead of the payload: the signature means nothing else


class CheckpointError(DeskguardError):
    """The chain disagrees with its checkpoints, or a checkpoint file is not what this controller wrote (exit 1,
    as for a broken chain). An unreadable key file is a plain DeskguardError (exit 4)."""

    exit_code = EXIT_HOST_FAILED


@dataclass(frozen=True)
class Checkpoint:
    entries: int     # entries in the chain when it was written (the head is entry number `entries`)
    head: str        # that entry's hash (64 zeros for an empty chain)
    at: str          # UTC, ISO 8601
    key_id: str
    signature: str

    def payload(self) -> dict:
        return {"entries": self.entries, "head": self.head, "at": self.at}


@dataclass(frozen=True)
class Settings:
    file: Path
    syslog: bool


def settings(site: Path) -> Settings:
    """deskguard_audit_checkpoint_file (default <site>/.deskguard/audit-checkpoints.jsonl; relative paths are
    under the site), deskguard_audit_checkpoint_syslog (false)."""
    values = policyfile.load(site, "deskguard_audit_checkpoint")
    raw = values.get("deskguard_audit_checkpoint_file") or state_dir(site) / CHECKPOINTS
    path = Path(str(raw)).expanduser()
    to_syslog = values.get("deskguard_audit_checkpoint_syslog", False)
    if not isinstance(to_syslog, bool):
        raise UsageError(f"policy deskguard_audit_checkpoint_syslog: {str(to_syslog)[:40]!r} is not true or false")
    return Settings(path if path.is_absolute() else Path(site) / path, to_syslog)


def signing_key(site: Path) -> Ed25519PrivateKey:
    """The checkpoint key, made (0600, public half 0644 beside it) the first time it is needed."""
    path = state_dir(site) / PRIVATE
    if not path.exists():
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        if create_new(path, pem, 0o600):
            create_new(state_dir(site) / PUBLIC, _public_pem(key.public_key()), 0o644)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise DeskguardError(f"{path}: not the audit checkpoint key ({exc.__class__.__name__})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise DeskguardError(f"{path}: not an Ed25519 private key")
    return key


def public_key(site: Path) -> Ed25519PublicKey | None:
    path = state_dir(site) / PUBLIC
    if not path.exists():
        return None
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise DeskguardError(f"{path}: not a public key ({exc.__class__.__name__})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise DeskguardError(f"{path}: not an Ed25519 public key")
    return key


def record(site: Path, store, now: dt.datetime | None = None) -> tuple[Checkpoint, Settings]:
    """Check the chain (intact, and not behind the latest checkpoint), then sign its head and append it to the
    checkpoint file (and syslog when the policy says so). A broken chain is never checkpointed."""
    conf = settings(site)
    ok, bad, entries, head = store.verify_audit_detail()
    if not ok:
        raise CheckpointError(f"audit chain broken at entry {bad}: no checkpoint written (see `deskguard audit "
                              "verify`)")
    problem = compare(store, entries, head, load(conf.file, public_key(site)))
    if problem:
        raise CheckpointError(f"{problem}: no checkpoint written")
    key = signing_key(site)
    at = (now or dt.datetime.now(dt.timezone.utc)).strftime("%Y-%m-%dT%H:%M:%SZ")
    unsigned = {"entries": entries, "head": head, "at": at}
    cp = Checkpoint(entries, head, at, _key_id(key.public_key()),
                    base64.b64encode(key.sign(CONTEXT + canonical_json(unsigned).encode())).decode())
    line = canonical_json({**unsigned, "key_id": cp.key_id, "signature": cp.signature})
    _append(conf.file, line)
    if conf.syslog:
        import syslog

        syslog.openlog("deskguard", 0, syslog.LOG_AUTH)
        syslog.syslog(syslog.LOG_NOTICE, "audit-checkpoint " + line)
    return cp, conf


def load(path: Path, key: Ed25519PublicKey | None) -> list[Checkpoint]:
    """Every checkpoint of ``path``, each signature checked with ``key``; [] if there is no file.
    CheckpointError naming the line for one that does not parse or verify."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: cannot read the audit checkpoints ({exc.__class__.__name__})") from None
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if lines and key is None:
        raise CheckpointError(f"{path} holds checkpoints but {PUBLIC} is missing: they cannot be verified")
    found = []
    for n, line in lines:
        try:
            raw = json.loads(line)
            cp = Checkpoint(int(raw["entries"]), str(raw["head"]), str(raw["at"]), str(raw["key_id"]),
                            str(raw["signature"]))
            key.verify(base64.b64decode(cp.signature, validate=True),
                       CONTEXT + canonical_json(cp.payload()).encode())
        except (ValueError, KeyError, TypeError, AttributeError):
            raise CheckpointError(f"{path}:{n}: not a checkpoint line") from None
        except InvalidSignature:
            raise CheckpointError(f"{path}:{n}: the signature does not verify with {PUBLIC}: the checkpoint was "
                                  "altered or not written by this controller") from None
        found.append(cp)
    return found


def compare(store, entries: int, head: str, checkpoints: list[Checkpoint]) -> str | None:
    """Why the chain (``entries`` long, head ``head``, already verified intact) disagrees with the latest
    checkpoint, or None."""
    if not checkpoints:
        return None
    latest = checkpoints[-1]
    if entries < latest.entries:
        return (f"the audit chain has {entries} entries but the checkpoint of {latest.at} saw {latest.entries}: "
                "entries were removed")
    at_checkpoint = head if entries == latest.entries else store.audit_hash(latest.entries)
    if at_checkpoint != latest.head:
        return (f"entry {latest.entries} of the audit chain is not the one the checkpoint of {latest.at} saw: "
                "the chain was rewritten")
    return None


def _append(path: Path, line: str) -> None:
    """One write of one line with O_APPEND (never a rewrite: the file may be append-only), then fsync."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


def _public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _key_id(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]
