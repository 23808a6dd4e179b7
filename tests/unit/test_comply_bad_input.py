"""`deskguard comply` on bad input, through the real CLI and real ansible-playbook runs (local-connection hosts
whose Python interpreter is replaced by a script): a broken or missing policy, a laptop that answers garbage,
one that hangs mid-collection, and a store that another process keeps locked. Each gives a clear message and a
non-zero exit; a run is recorded whole or not at all."""

from __future__ import annotations

import json
import sqlite3

import pytest
from sitetools import deskguard_sqlite as deskguard

from deskguard.site import inventory

pytestmark = pytest.mark.unit


@pytest.fixture
def site(tmp_path):
    (tmp_path / "pw").write_text("correct horse battery staple\n")
    assert deskguard("init", "--officer-passphrase-file", str(tmp_path / "pw"), site=tmp_path).returncode == 0
    return tmp_path


def fake_laptop(site, name, script: str):
    """A laptop whose 'python' is this shell script: Ansible really runs it and gets what it prints."""
    interp = site / f"{name}.sh"
    interp.write_text("#!/bin/sh\n" + script + "\n")
    interp.chmod(0o755)
    inventory.add_host(site, name, {"ansible_connection": "local", "ansible_python_interpreter": str(interp),
                                    "deskguard_comply_timeout_seconds": 5})


def runs_recorded(site) -> int:
    db = site / ".deskguard" / "deskguard.db"
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT count(*) FROM compliance_runs").fetchone()[0]


def policy(site):
    return site / "inventory" / "group_vars" / "all" / "policy.yml"


def test_a_corrupt_policy_is_one_line_and_nothing_runs(site):
    fake_laptop(site, "lt-ok", "exit 1")
    policy(site).write_text(policy(site).read_text() + "\nscreen_lock_idle_minutes: [5\n")
    proc = deskguard("comply", site=site)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "cannot read the policy file" in proc.stderr and "policy.yml" in proc.stderr
    assert runs_recorded(site) == 0


def test_a_missing_policy_is_one_line_and_nothing_runs(site):
    fake_laptop(site, "lt-ok", "exit 1")
    policy(site).unlink()
    proc = deskguard("comply", site=site)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("deskguard: no policy in "), proc.stderr
    assert runs_recorded(site) == 0


def test_garbage_and_a_hang_mid_collection_are_failures_and_the_run_completes(site):
    fake_laptop(site, "lt-garbage", "echo 'Segmentation fault (core dumped) {not json'")
    fake_laptop(site, "lt-hangs", "sleep 120")
    proc = deskguard("comply", "--format", "json", site=site)
    assert proc.returncode == 1, proc.stderr[-2000:]
    hosts = json.loads(proc.stdout)["hosts"]
    assert {h: v["state"] for h, v in hosts.items()} == {"lt-garbage": "failed", "lt-hangs": "failed"}
    assert "collecting the posture failed" in hosts["lt-garbage"]["message"]
    assert "timed out" in hosts["lt-hangs"]["message"].lower(), hosts["lt-hangs"]["message"]
    assert not any(h["compliant"] or h["results"] for h in hosts.values())
    assert runs_recorded(site) == 1


def test_a_store_locked_by_another_run_records_nothing_half_way(site, monkeypatch):
    fake_laptop(site, "lt-garbage", "echo garbage")
    assert deskguard("comply", "--format", "json", site=site).returncode == 1   # creates the store
    lock = sqlite3.connect(site / ".deskguard" / "deskguard.db", timeout=1)
    lock.execute("BEGIN EXCLUSIVE")            # another writer holds the store for the whole run
    monkeypatch.setenv("DESKGUARD_STORE_BUSY_TIMEOUT", "2")   # not the default 30 s: the same path, sooner
    try:
        proc = deskguard("comply", site=site)
    finally:
        lock.rollback()
        lock.close()
    assert proc.returncode == 4, (proc.stdout[-1500:], proc.stderr[-1500:])
    last = proc.stderr.strip().splitlines()[-1]   # the reason reaches the admin, in one line
    assert last.startswith("deskguard: the compliance run was NOT recorded") and "locked" in last, proc.stderr
    assert runs_recorded(site) == 1            # the second run is not in the store, not even in part


@pytest.mark.parametrize("value", ["soon", "0", "-5", "7200"])
def test_a_busy_timeout_that_is_not_a_number_of_seconds_is_one_line_and_exit_2(site, monkeypatch, value):
    monkeypatch.setenv("DESKGUARD_STORE_BUSY_TIMEOUT", value)
    proc = deskguard("devices", "list", site=site)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert f"DESKGUARD_STORE_BUSY_TIMEOUT={value!r} is not a number of seconds between 0 and 3600" in proc.stderr
