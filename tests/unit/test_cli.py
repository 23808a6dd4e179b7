"""The CLI's contract: one line and a documented exit code for bad input, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit


def deskguard(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deskguard", *args], capture_output=True, text=True, timeout=60)


def test_help_lists_commands():
    proc = deskguard("--help")
    assert proc.returncode == 0
    for name in ("lab", "demo"):
        assert f"  {name} " in proc.stdout


@pytest.mark.parametrize("args", [("nope",), ("lab", "up"), ("lab", "up", "--laptops", "x"),
                                  ("lab", "ssh", "no-such-host")])
def test_bad_input_is_one_line_exit_2(args):
    proc = deskguard(*args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("deskguard: ")
    assert "Traceback" not in proc.stderr
