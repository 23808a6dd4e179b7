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


@pytest.fixture
def enc_site(tmp_path, monkeypatch):
    """A site (store + escrow keys) where the responder's host is a registered Windows device; the action
    plugin finds it through DESKGUARD_SITE. Returns (site, device uuid, officer private key)."""
    from deskguard.recovery import keys
    from deskguard.store import Store

    monkeypatch.delenv("DESKGUARD_DB_URL", raising=False)
    keys.init_keys(tmp_path, "correct horse battery staple")
    with Store.open(tmp_path, create=True) as store:
        device = store.register_device("win-loopback", "windows", "127.0.0.1", 5985, "deskguard-test", None)
    monkeypatch.setenv("DESKGUARD_SITE", str(tmp_path))
    officer = keys.load_officer_key(tmp_path / ".deskguard" / keys.ESCROW_PRIVATE, "correct horse battery staple")
    return tmp_path, device.uuid, officer
