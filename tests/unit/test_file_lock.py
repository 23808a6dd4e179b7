"""fsutil.file_lock: the one exclusive lock behind the lab's `lab up/down` lock and its image-build locks."""

from __future__ import annotations

import subprocess
import sys

import pytest

from deskguard.fsutil import file_lock

pytestmark = pytest.mark.unit

# Another process tries the lock without waiting: prints "free" or "held".
PROBE = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    print("free")
except BlockingIOError:
    print("held")
"""


def other_process_finds(path) -> str:
    return subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_held_inside_the_block_released_after_it_even_on_an_error(tmp_path):
    path = tmp_path / "deeper" / "lock"
    with file_lock(path):
        assert other_process_finds(path) == "held"
    assert other_process_finds(path) == "free"
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)
    with pytest.raises(RuntimeError):
        with file_lock(path):
            raise RuntimeError("boom")
    assert other_process_finds(path) == "free"


def test_the_lab_locks_are_this_lock(tmp_path, monkeypatch):
    from deskguard.lab import image, state

    monkeypatch.setenv("DESKGUARD_LAB_RUN", str(tmp_path / "run"))
    monkeypatch.setattr(image, "cache_dir", lambda: tmp_path / "cache")
    with state.locked():
        assert other_process_finds(tmp_path / "run" / "lock") == "held"
    with image.build_lock():
        assert other_process_finds(tmp_path / "cache" / "build.lock") == "held"
