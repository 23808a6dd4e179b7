"""Python code passes pyflakes-level checks (undefined names, unused imports, syntax): cheap and catches
real bugs in code paths the tests do not reach."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]


def test_ruff_pyflakes_rules_are_clean():
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--select", "F,E9", "--no-cache",
                           "cli", "plugins", "tests"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
