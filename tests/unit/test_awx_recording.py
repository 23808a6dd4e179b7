"""The nightly play as AWX runs it: `playbooks/comply.yml` started by ansible-runner from the project checkout
(what an AWX job does: runner sets its own ANSIBLE_CALLBACK_PLUGINS, which hides ansible.cfg's
callback_plugins, so the kit also ships `playbooks/callback_plugins`), and by plain ansible-playbook; no
deskguard CLI, the store named only by DESKGUARD_DB_URL (an AWX credential injects it). The deskguard_record
callback must record the run there, once, on SQLite and on PostgreSQL. The "laptop" is this machine over the
local connection (the posture module only reads), plus one host that refuses SSH and must be recorded as
unreachable, never compliant."""

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


def _ansible_playbook(inventory, env):
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory),
                           "playbooks/comply.yml"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


def _ansible_runner(inventory, env, private_dir, **job):
    """As AWX's job runs it: a private data dir, the project dir, the credential's variables as envvars;
    ``job``: more of ansible_runner.run's settings (a slice's limit, AWX's extra variables)."""
    import ansible_runner

    job_env = {k: v for k, v in env.items() if k.startswith("DESKGUARD_")}
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update({k: v for k, v in env.items() if not k.startswith("DESKGUARD_")})
    try:
        run = ansible_runner.run(private_data_dir=str(private_dir), project_dir=str(REPO),
                                 playbook="playbooks/comply.yml", inventory=[str(inventory)], envvars=job_env,
                                 quiet=True, timeout=300, **job)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return run.rc, run.stdout.read()


@pytest.mark.parametrize("driver", ["ansible-runner", "ansible-playbook"])
def test_a_scheduled_run_is_recorded_in_the_store_named_by_the_environment(site, tmp_path_factory, driver):
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
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    env.pop("ANSIBLE_CALLBACK_PLUGINS", None)
    if driver == "ansible-runner":
        rc, output = _ansible_runner(inventory, env, tmp_path_factory.mktemp("awx-job"))
    else:
        rc, output = _ansible_playbook(inventory, env)
    assert "lt-local" in output and "deskguard_record" not in output, output  # no "unable to load", no error
    assert rc == 4, output  # ansible-playbook's code for an unreachable host

    with Store.open(site) as store:
        run = runs.load(store)
        assert run is not None and run.run["source"] == "ansible" and run.run["hosts"] == 2
        assert len(runs.history(store)) == 1  # recorded once, though ansible.cfg and the playbook dir both offer it
        assert run.hosts["lt-gone"]["state"] == "unreachable" and not run.hosts["lt-gone"]["compliant"]
        local = run.hosts["lt-local"]
        assert local["state"] == "ok" and {"FW-001", "LCK-001"} <= set(local["results"])
        assert store.list_audit()[-1].action == "compliance.run"
        assert store.verify_audit() == (True, None)


def test_slices_of_one_awx_workflow_record_into_one_run(site, tmp_path_factory):
    """AWX job slicing: the inventory split over several jobs of one workflow (run here one after the other
    through ansible-runner, each with its slice as the limit and AWX's `awx_workflow_job_id`): one run holds
    every slice's hosts, its host count and score those of all of them; a slice replayed is refused whole."""
    (site.parent / "pw").write_text(OFFICER_PASSPHRASE + "\n")
    assert run_deskguard(site, "init", "--officer-passphrase-file", str(site.parent / "pw")).returncode == 0
    inventory = site / "inventory" / "hosts.yml"
    local = f"      ansible_connection: local\n      ansible_python_interpreter: {sys.executable}\n"
    inventory.write_text("laptops:\n  hosts:\n" + "".join(f"    lt-{n}:\n{local}" for n in "ab")
                         + "    lt-gone:\n      ansible_host: 127.0.0.1\n      ansible_port: 1\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESKGUARD_")}
    env["DESKGUARD_DB_URL"] = db_url_for(site)
    env["HOME"] = str(tmp_path_factory.mktemp("awx-home"))
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    env.pop("ANSIBLE_CALLBACK_PLUGINS", None)
    meta = {"awx_workflow_job_id": 4242, "awx_job_id": 1}
    for n, limit in enumerate(("lt-a", "lt-b,lt-gone")):
        rc, output = _ansible_runner(inventory, env, tmp_path_factory.mktemp("slice"), limit=limit,
                                     extravars={**meta, "awx_job_id": 100 + n})
        assert rc in (0, 4), output
    with Store.open(site) as store:
        assert len(runs.history(store)) == 1
        run = runs.load(store, "awx-workflow-4242")
        assert run is not None and run.run["hosts"] == 3 and set(run.hosts) == {"lt-a", "lt-b", "lt-gone"}
        scores = [run.hosts[h]["score"] for h in ("lt-a", "lt-b")]
        assert run.run["score"] == round(sum(scores) / 2, 1)     # the unreachable host has no score
        assert run.hosts["lt-gone"]["state"] == "unreachable"
    # The first slice again (a retried job): its host is already in the run, nothing of it is recorded.
    rc, output = _ansible_runner(inventory, env, tmp_path_factory.mktemp("slice"), limit="lt-a",
                                 extravars={**meta, "awx_job_id": 102})
    assert "NOT recorded" in output and "already recorded" in output, output
    with Store.open(site) as store:
        assert runs.load(store, "awx-workflow-4242").run["hosts"] == 3
        assert store.verify_audit() == (True, None)
