"""Signed checkpoints of the audit chain's head (issue 20 item 6): deleting the newest entries, or rewriting
and re-hashing the whole chain, passed `audit verify`; a checkpoint written outside the database catches both."""

from __future__ import annotations

import json
import stat

import pytest
from sitetools import deskguard_sqlite

from deskguard.store import Store
from deskguard.store.auditchain import GENESIS, row_hash

pytestmark = pytest.mark.unit


def deskguard(site, *args):
    return deskguard_sqlite(*args, site=site)


@pytest.fixture
def site(tmp_path, monkeypatch):
    monkeypatch.delenv("DESKGUARD_DB_URL", raising=False)
    with Store.open(tmp_path, create=True) as store:
        for i in range(5):
            store.audit("admin", "test", f"t{i}", {"i": i})
    return tmp_path


def _sql(site, *statements):
    """Straight to the database, past the append-only triggers (an intruder with the file)."""
    with Store.open(site) as store, store.engine.begin() as conn:
        conn.exec_driver_sql("DROP TRIGGER IF EXISTS audit_no_update")
        conn.exec_driver_sql("DROP TRIGGER IF EXISTS audit_no_delete")
        for statement, params in statements:
            conn.exec_driver_sql(statement, params)


def _checkpoint(site):
    proc = deskguard(site, "audit", "checkpoint")
    assert proc.returncode == 0, proc.stderr
    assert "audit checkpoint: 5 entries" in proc.stdout
    return proc


def test_an_untouched_chain_matches_its_checkpoint(site):
    _checkpoint(site)
    key = site / ".deskguard" / "audit-checkpoint.key.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    lines = (site / ".deskguard" / "audit-checkpoints.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["entries"] == 5
    proc = deskguard(site, "audit", "verify")
    assert proc.returncode == 0 and "chain intact" in proc.stdout and "matches the checkpoint" in proc.stdout
    # Entries added after the checkpoint are fine: the checkpoint's entry is still where it was.
    with Store.open(site) as store:
        store.audit("admin", "test", "later", {})
    assert deskguard(site, "audit", "verify").returncode == 0


def test_deleting_the_newest_entries_fails_verify(site):
    _checkpoint(site)
    _sql(site, ("DELETE FROM audit WHERE id > 3", ()))
    proc = deskguard(site, "audit", "verify")
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip() == (f"deskguard: the audit chain has 3 entries but the checkpoint of "
                                   f"{_latest(site)['at']} saw 5: entries were removed")
    proc = deskguard(site, "audit", "verify", "--json")
    assert proc.returncode == 1 and json.loads(proc.stdout)["ok"] is False
    # Nor is a shorter chain checkpointed over: the truncation stays visible.
    again = deskguard(site, "audit", "checkpoint")
    assert again.returncode == 1 and "no checkpoint written" in again.stderr


def test_rewriting_and_rehashing_the_whole_chain_fails_verify(site):
    _checkpoint(site)
    with Store.open(site) as store:
        rows = store.list_audit()
    prev, statements = GENESIS, []
    for r in rows:
        actor = "mallory" if r.id == 2 else r.actor
        h = row_hash(id=r.id, at=r.at, actor=actor, action=r.action, target=r.target, detail=r.detail,
                     prev_hash=prev)
        statements.append(("UPDATE audit SET actor = ?, prev_hash = ?, hash = ? WHERE id = ?", (actor, prev, h, r.id)))
        prev = h
    _sql(site, *statements)
    assert deskguard(site, "audit", "verify", "--checkpoints", "/nonexistent").returncode == 2
    with Store.open(site) as store:
        assert store.verify_audit() == (True, None)   # the chain alone looks intact
    proc = deskguard(site, "audit", "verify")
    assert proc.returncode == 1 and "entry 5 of the audit chain is not the one the checkpoint" in proc.stderr


def test_a_forged_checkpoint_line_is_refused(site):
    _checkpoint(site)
    path = site / ".deskguard" / "audit-checkpoints.jsonl"
    line = json.loads(path.read_text())
    path.write_text(json.dumps(dict(line, entries=3)) + "\n")
    proc = deskguard(site, "audit", "verify")
    assert proc.returncode == 1 and "audit-checkpoints.jsonl:1: the signature does not verify" in proc.stderr


def test_the_nightly_run_writes_a_checkpoint(site):
    from deskguard.compliance import command

    assert command.checkpoint_audit(site) is None
    assert command.checkpoint_audit(site) is None
    assert len((site / ".deskguard" / "audit-checkpoints.jsonl").read_text().splitlines()) == 2
    _sql(site, ("DELETE FROM audit WHERE id = 5", ()))
    assert "entries were removed: no checkpoint written" in command.checkpoint_audit(site)


def _latest(site):
    return json.loads((site / ".deskguard" / "audit-checkpoints.jsonl").read_text().splitlines()[-1])
