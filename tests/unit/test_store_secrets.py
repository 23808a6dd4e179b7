"""The escrowed-secret lifecycle in the store, and the 0001 -> 0002 migration that introduced it."""

from __future__ import annotations

import pytest
from sitetools import downgrade_store

from sqlalchemy import text

from deskguard.errors import UsageError
from deskguard.store import Store
from deskguard.store.core import current_revision

pytestmark = pytest.mark.unit


def _device(store):
    return store.register_device("lt-1", "debian", "10.0.0.1", 22, "dgadmin", None)


def test_pending_then_active_then_retired_loses_ciphertext(store):
    dev = _device(store)
    sec = store.add_secret(dev.uuid, "luks-recovery", "luks:u:2", b"sealed", state="pending")
    assert [s.state for s in store.live_secrets(dev.uuid)] == ["pending"]
    store.set_secret_state(sec.id, "active", fingerprint="f" * 64, verified=True)
    got = store.get_secret(sec.id)
    assert got.state == "active" and got.fingerprint == "f" * 64 and got.verified_at is not None
    store.set_secret_state(sec.id, "retired")
    got = store.get_secret(sec.id)
    assert got.ciphertext is None and got.destroyed_at is not None
    assert store.live_secrets(dev.uuid) == []
    actions = [e.action for e in store.list_audit(target="lt-1")]
    assert actions[-3:] == ["secret.escrow", "secret.active", "secret.retired"]
    assert store.verify_audit() == (True, None)


def test_bad_states_are_refused(store):
    dev = _device(store)
    with pytest.raises(UsageError, match="pending or active"):
        store.add_secret(dev.uuid, "luks-recovery", "k", b"x", state="retired")
    sec = store.add_secret(dev.uuid, "luks-recovery", "k", b"x")
    with pytest.raises(UsageError, match="unknown secret state"):
        store.set_secret_state(sec.id, "bogus")
    with pytest.raises(UsageError, match="no secret #999"):
        store.set_secret_state(999, "active")


def test_destroy_marks_state_destroyed(store):
    dev = _device(store)
    store.add_secret(dev.uuid, "luks-recovery", "k", b"x", state="pending")
    assert store.destroy_secrets(dev.uuid, reason="test") == 1
    assert [s.state for s in store.list_secrets(dev.uuid)] == ["destroyed"]


def test_store_made_by_revision_0001_upgrades_without_loss(site):
    """A store written by the first release keeps its secrets: live ones become active, erased ones destroyed."""
    with Store.open(site, create=True) as s:
        downgrade_store(s, "0001")
        assert current_revision(s.engine) == "0001"
        with s.engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO devices VALUES ('u1','lt-1','debian',NULL,'10.0.0.1',22,'dgadmin',NULL,'onboarded',"
                "'2026-01-01 00:00:00','2026-01-01 00:00:00')"))
            conn.execute(text(
                "INSERT INTO secrets (id, device_uuid, kind, key_id, escrow_key_id, ciphertext, created_at, "
                "destroyed_at) VALUES (1,'u1','luks-recovery','k1',NULL,:blob,'2026-01-01 00:00:00',NULL),"
                "(2,'u1','luks-recovery','k0',NULL,NULL,'2026-01-01 00:00:00','2026-01-02 00:00:00')"),
                {"blob": b"\x01\x02"})
    with Store.open(site) as s:
        rows = {r.id: r for r in s.list_secrets("u1")}
        assert rows[1].state == "active" and rows[1].ciphertext == b"\x01\x02"
        assert rows[2].state == "destroyed"
        assert s.get_device("lt-1").state == "onboarded"
