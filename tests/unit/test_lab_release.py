"""The lab says which Debian release each laptop runs: `lab status` shows it, and `lab up --suite X` says so when
laptops of another release are running (they are kept, so counts already met start nothing on X)."""

from __future__ import annotations

import json
import os

import clirun
import pytest

from deskguard.lab import manager
from deskguard.lab.state import LabHost, LabState

pytestmark = pytest.mark.unit

HOSTS = [LabHost("lab-ct1", "container", "10.0.0.2", extra={"suite": "bookworm"}),
         LabHost("lab-ct2", "container", "10.0.0.3", extra={"suite": "bookworm"}),
         LabHost("lab-vm1", "vm", "127.0.0.1", 2201, extra={"suite": "trixie"}),
         LabHost("lab-vm2", "vm", "127.0.0.1", 2202),            # started before releases were recorded
         LabHost("fleet-001", "fleet", "10.0.1.2")]


def state(*hosts) -> LabState:
    return LabState(hosts={h.name: h for h in hosts})


def test_laptops_of_another_release_are_named_with_theirs():
    said = manager.other_release(state(*HOSTS), "trixie")
    assert said == ("lab-ct1, lab-ct2 run Debian 12 (bookworm); lab-vm2 runs an unrecorded release, not the "
                    "Debian 13 (trixie) asked for: running laptops are kept (`deskguard lab down` first to have "
                    "every laptop on Debian 13 (trixie))")
    said = manager.other_release(state(*HOSTS), "bookworm")
    assert said.startswith("lab-vm1 runs Debian 13 (trixie); lab-vm2 runs an unrecorded release, not the "
                           "Debian 12 (bookworm) asked for"), said


def test_nothing_is_said_when_every_laptop_runs_the_release_asked_for():
    assert manager.other_release(state(HOSTS[0], HOSTS[1], HOSTS[4]), "bookworm") is None
    assert manager.other_release(state(HOSTS[4]), "trixie") is None     # fleet hosts have no release of their own
    assert manager.other_release(state(), "trixie") is None


@pytest.fixture
def lab_run(tmp_path, monkeypatch):
    """A lab run folder whose state records HOSTS (none of them running)."""
    monkeypatch.setenv("DESKGUARD_LAB_RUN", str(tmp_path / "run"))
    (tmp_path / "run").mkdir()
    state(*HOSTS).save()
    return dict(os.environ)


def test_lab_status_shows_each_laptops_release(lab_run):
    proc = clirun.deskguard("lab", "status", env=lab_run)
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines()}
    assert rows["lab-ct1"][2] == "bookworm" and rows["lab-vm1"][2] == "trixie", proc.stdout
    assert rows["lab-vm2"][2] == "unrecorded" and rows["fleet-001"][2] == "-", proc.stdout
    assert all(row[-1] == "DEAD" for row in rows.values()), proc.stdout      # none of them has a process
    proc = clirun.deskguard("lab", "status", "--json", env=lab_run)
    release = {h["name"]: h["release"] for h in json.loads(proc.stdout)}
    assert release == {"lab-ct1": "bookworm", "lab-ct2": "bookworm", "lab-vm1": "trixie", "lab-vm2": None,
                       "fleet-001": None}
