"""Small file-system helpers that never leave a half-written file behind."""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


def _synced_temp(path: Path, raw: bytes, mode: int) -> str:
    """A temporary file beside `path` holding `raw` with `mode`, flushed to disk; the caller renames or
    links it into place and removes it on failure."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def atomic_write(path: Path, data: str | bytes, mode: int = 0o644) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over the target."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _synced_temp(path, data.encode() if isinstance(data, str) else data, mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


@contextmanager
def atomic_text_stream(path: Path, mode: int = 0o644):
    """A text file to write in pieces (a report of 10,000 laptops is never one string in memory): it goes to
    a temporary file in the same folder, which replaces `path` (fsynced) only when the block ends without an
    error; on an error the temporary file is removed and `path` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def create_new(path: Path, data: bytes, mode: int) -> bool:
    """Create `path` atomically, never replacing an existing file (even when two processes race).
    True if this call created it."""
    path = Path(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = _synced_temp(path, data, mode)
    try:
        os.link(tmp, path)  # fails if the file exists
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)
    return True


def atomic_write_json(path: Path, obj, mode: int = 0o644) -> None:
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=True) + "\n", mode)


@contextmanager
def file_lock(path: Path):
    """Hold an exclusive lock on `path` (created 0600 if missing) for the `with` block; waits for it. The
    kernel releases it if the process dies, so a killed run never leaves a stale lock."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
