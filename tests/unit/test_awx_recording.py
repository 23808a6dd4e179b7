"""The nightly play as AWX runs it: `playbooks/comply.yml` started by ansible-runner from the project checkout
(what an AWX job does: runner sets its own ANSIBLE_CALLBACK_PLUGINS, which hides ansible.cfg's
callback_plugins, so the kit also ships `playbooks/callback_plugins`), and by plain ansible-playbook; no
deskguard CLI, the store named only by DESKGUARD_DB_URL (an AWX credential injects it). The deskguard_record
callback must record the run there, once, on SQLite and on PostgreSQL. The "laptop" is this machine over the
local connection (the posture module only reads), plus one host that refuses SSH and must be recorded as
unreachable, never compliant."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sitetools import OFFICER_PASSPHRASE, run_deskguard

from sqlalchemy import func, select

from deskguard.compliance import runs
from deskguard.store import Store, db_url_for
from deskguard.store.models import ComplianceHost

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


_SLICE_JOB = """
import json, sys
import ansible_runner
job = json.loads(sys.argv[1])
run = ansible_runner.run(quiet=True, timeout=300, **job)
sys.stdout.write(json.dumps({"rc": run.rc, "output": run.stdout.read()}))
"""


def _start_slice(inventory, env, private_dir, limit, extravars):
    """One slice as an AWX execution node runs it: a process of its own (ansible-runner with a private data dir,
    the project dir, the credential's variables as envvars, the slice as the limit)."""
    job = {"private_data_dir": str(private_dir), "project_dir": str(REPO), "playbook": "playbooks/comply.yml",
           "inventory": [str(inventory)], "limit": limit, "extravars": extravars,
           "envvars": {k: v for k, v in env.items() if k.startswith("DESKGUARD_")}}
    return subprocess.Popen([sys.executable, "-c", _SLICE_JOB, json.dumps(job)], cwd=REPO, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={k: v for k, v in env.items() if not k.startswith("DESKGUARD_")})


def _played(private_dir) -> bool:
    """The slice's play is over (ansible-runner has its stats event): its callback is recording, or about to."""
    return any('"playbook_on_stats"' in p.read_text(errors="replace")
               for p in Path(private_dir).glob("artifacts/*/job_events/*.json"))


def _wait_for(condition, what, procs):
    deadline = time.monotonic() + 300   # a bound against hanging, not a measure: no speed is asserted
    while not condition():
        finished = [p for p in procs if p.poll() is not None]
        assert not finished, f"a slice ended before {what}: {finished[0].stdout.read()} {finished[0].stderr.read()}"
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.1)


class _RunsHeld:
    """Holds the recording of every slice back until all of them are at it, then lets them go at once.
    PostgreSQL: the test locks compliance_runs against SELECT … FOR UPDATE (the first thing `runs.record` does)
    and releases it once every slice's backend waits on that lock, so they all find no run, all insert it, and
    all but one lose the race to create it. SQLite: writers are serialised by BEGIN IMMEDIATE; the test holds the
    write lock until every slice's play is over, so they all queue for it together."""

    def __init__(self, backend, url, site):
        self.backend, self.url, self.site = backend, url, site

    def hold(self):
        if self.backend == "postgresql":
            import psycopg

            self.conn = psycopg.connect(self.url.replace("postgresql+psycopg://", "postgresql://"))
            self.conn.execute("LOCK TABLE compliance_runs IN EXCLUSIVE MODE")
        else:
            import sqlite3

            from deskguard.store.core import default_db_path

            self.conn = sqlite3.connect(default_db_path(self.site), isolation_level=None)
            self.conn.execute("BEGIN IMMEDIATE")
        return self

    def waiting(self) -> int:
        """PostgreSQL: how many other backends wait for the lock on compliance_runs."""
        import psycopg

        with psycopg.connect(self.url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as c:
            return c.execute("SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = "
                             "'compliance_runs'::regclass").fetchone()[0]

    def release(self):
        self.conn.rollback() if self.backend == "postgresql" else self.conn.execute("ROLLBACK")
        self.conn.close()


def test_slices_of_one_awx_workflow_recording_at_the_same_moment_make_one_run(site, backend, tmp_path_factory):
    """AWX job slicing on several execution nodes: three slices of one workflow, each its own ansible-runner
    process, held back by the test until all of them are recording, then let go together (the race to create
    the run: the losers join it). One run holds every host exactly once, with the host count and the mean
    score of all the slices, every slice says it recorded, and the audit chain holds one entry per slice."""
    (site.parent / "pw").write_text(OFFICER_PASSPHRASE + "\n")
    assert run_deskguard(site, "init", "--officer-passphrase-file", str(site.parent / "pw")).returncode == 0
    inventory = site / "inventory" / "hosts.yml"
    local = f"      ansible_connection: local\n      ansible_python_interpreter: {sys.executable}\n"
    inventory.write_text("laptops:\n  hosts:\n" + "".join(f"    lt-{n}:\n{local}" for n in "abc")
                         + "    lt-gone:\n      ansible_host: 127.0.0.1\n      ansible_port: 1\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESKGUARD_")}
    env["DESKGUARD_DB_URL"] = db_url_for(site)
    env["HOME"] = str(tmp_path_factory.mktemp("awx-home"))
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    env.pop("ANSIBLE_CALLBACK_PLUGINS", None)
    slices = ("lt-a", "lt-b", "lt-c,lt-gone")
    dirs = [tmp_path_factory.mktemp("node") for _ in slices]
    held = _RunsHeld(backend, env["DESKGUARD_DB_URL"], site).hold()
    procs = [_start_slice(inventory, env, d, limit, {"awx_workflow_job_id": 777, "awx_job_id": 200 + n})
             for n, (d, limit) in enumerate(zip(dirs, slices))]
    try:
        if backend == "postgresql":
            _wait_for(lambda: held.waiting() == len(slices), "every slice waits to record", procs)
        else:
            # Every slice's play over, or 20 s after the first one's: a slice that finished waits for the
            # store under SQLite's 30 s busy timeout, and a slow machine must not turn that into a failure.
            _wait_for(lambda: any(_played(d) for d in dirs), "a slice's play is over", procs)
            first = time.monotonic()
            _wait_for(lambda: all(_played(d) for d in dirs) or time.monotonic() - first > 20,
                      "every slice's play is over", procs)
    finally:
        held.release()
    results = [p.communicate(timeout=300) for p in procs]
    for (out, err), limit in zip(results, slices):
        job = json.loads(out)
        assert job["rc"] in (0, 4), (limit, job["output"], err)
        assert "NOT recorded" not in job["output"], (limit, job["output"])
    with Store.open(site) as store:
        assert len(runs.history(store)) == 1
        run = runs.load(store, "awx-workflow-777")
        assert run is not None and run.run["hosts"] == 4
        assert set(run.hosts) == {"lt-a", "lt-b", "lt-c", "lt-gone"}
        with store.reading() as s:     # exactly once: no host row twice, whatever the store's keys allow
            rows = s.execute(select(ComplianceHost.hostname, func.count()).where(
                ComplianceHost.run_id == "awx-workflow-777").group_by(ComplianceHost.hostname)).all()
        assert sorted(rows) == [("lt-a", 1), ("lt-b", 1), ("lt-c", 1), ("lt-gone", 1)]
        scores = [run.hosts[h]["score"] for h in ("lt-a", "lt-b", "lt-c")]
        assert run.run["score"] == round(sum(scores) / 3, 1)
        assert run.hosts["lt-gone"]["state"] == "unreachable"
        assert [e.action for e in store.list_audit()].count("compliance.run") == len(slices)
        assert store.verify_audit() == (True, None)
