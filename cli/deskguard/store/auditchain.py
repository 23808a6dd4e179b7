"""The audit log's hash chain: how a row's hash is computed (documented in docs/store.md)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

GENESIS = "0" * 64


def canonical_json(obj) -> str:
    """Sorted keys, no whitespace, UTF-8 kept as is: one byte string per value, on every platform."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def row_hash(*, id: int, at: dt.datetime, actor: str, action: str, target: str, detail, prev_hash: str) -> str:
    """sha256 over the canonical JSON of the row (all columns but ``hash``), prev_hash included."""
    if isinstance(detail, str):
        detail = json.loads(detail)
    body = {
        "id": id,
        "at": at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "actor": actor,
        "action": action,
        "target": target,
        "detail": detail,
        "prev_hash": prev_hash,
    }
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()
