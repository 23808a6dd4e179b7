"""Fixtures of the Windows tier: a loopback WS-Management responder, and playbooks run against it."""

from __future__ import annotations

import pytest
from responder import Responder
from winplay import run_playbook


@pytest.fixture
def responder():
    """A fresh responder per test; set `responder.answers[...]` before running anything against it."""
    with Responder() as r:
        yield r


@pytest.fixture
def play(responder):
    """play(PLAYBOOK, **extra_vars) -> CompletedProcess; the run must succeed unless `expect_rc` says so."""
    def run(playbook, expect_rc=0, check=False, **extra_vars):
        proc = run_playbook(playbook, responder, extra_vars, check=check)
        assert proc.returncode == expect_rc, proc.stdout[-4000:] + proc.stderr[-2000:]
        return proc
    return run
