"""The nightly play as AWX runs it: plain `ansible-playbook playbooks/comply.yml`, no deskguard CLI, the store
named only by DESKGUARD_DB_URL (an AWX credential injects it). The deskguard_record callback must record the
run there, on SQLite and on PostgreSQL. The "laptop" is this machine over the local connection (the posture
module only reads), plus one host that refuses SSH and must be recorded as unreachable, never compliant."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sitetools import OFFICER_PASSPHRASE, run_deskguard

from deskguard.compliance import runs
from deskguard.store import Store, db_url_for

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]


def test_a_plain_ansible_playbook_run_is_recorded_in_the_store_named_by_the_environment(site, tmp_path_factory):
    (site.parent / "pw").write_text(OFFICER_PASSPHRASE + "\n")
    assert run_deskguard(site, "init", "--officer-passphrase-file", str(site.parent / "pw")).returncode == 0
    inventory = site / "inventory" / "hosts.yml"
    inventory.write_text(
        "laptops:\n  hosts:\n"
        f"    lt-local:\n      ansible_connection: local\n      ansible_python_interpreter: {sys.executable}\n"
        "    lt-gone:\n      ansible_host: 127.0.0.1\n      ansible_port: 1\n")
    # What AWX gives a job: the project checkout as the working directory, the store URL, nothing of the CLI.
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESKGUARD_")}
    env["DESKGUARD_DB_URL"] = db_url_for(site)
    env["HOME"] = str(tmp_path_factory.mktemp("awx-home"))
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory),
                           "playbooks/comply.yml"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert "lt-local" in proc.stdout and "NOT recorded" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert proc.returncode == 4, proc.stdout  # ansible-playbook's code for an unreachable host

    with Store.open(site) as store:
        run = runs.load(store)
        assert run is not None and run.run["source"] == "ansible" and run.run["hosts"] == 2
        assert run.hosts["lt-gone"]["state"] == "unreachable" and not run.hosts["lt-gone"]["compliant"]
        local = run.hosts["lt-local"]
        assert local["state"] == "ok" and {"FW-001", "LCK-001"} <= set(local["results"])
        assert store.list_audit()[-1].action == "compliance.run"
        assert store.verify_audit() == (True, None)
