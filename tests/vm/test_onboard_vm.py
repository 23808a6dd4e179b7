"""Onboarding end to end on the laptop VM (real kernel, real ufw/nftables, systemd timers): check mode,
apply, verify the real state, converge with 0 changed within the round-trip budget. Few round trips: each
module call costs 8-15 s under TCG."""

from __future__ import annotations

import json
import pytest

from deskguard.lab import vm
from deskguard.lab.image import lab_key
from deskguard.lab.state import LabState

pytestmark = pytest.mark.vm

HOST = "lap-vm1"


def deskguard(site, *args):
    from sitetools import run_deskguard

    return run_deskguard(site, *args)


@pytest.fixture(scope="module")
def laptop(lab_laptop):
    return LabState.load().hosts["lab-vm1"]


@pytest.fixture(scope="module")
def site(make_site):
    return make_site(management="10.0.2.0/24")  # under qemu's user networking SSH arrives from 10.0.2.2


def onboard(site, laptop, *extra):
    proc = deskguard(site, "onboard", HOST, "--os", "debian", "--address", laptop.address, "--port",
                     str(laptop.port), "--user", "tanaka", "--ssh-key", str(lab_key()), "--json", *extra)
    assert proc.stdout.strip().startswith("{"), proc.stderr
    return proc, json.loads(proc.stdout)


def test_check_apply_verify_converge(site, laptop):
    proc, out = onboard(site, laptop, "--check")
    assert proc.returncode == 0, (proc.stderr, out)
    assert {c["state"] for c in out["controls"]} == {"would change"}, out

    proc, out = onboard(site, laptop)
    assert proc.returncode == 0, (proc.stderr, out)
    assert {c["control"]: c["state"] for c in out["controls"]} == {
        "FW-001": "applied", "LCK-001": "applied", "UPD-001": "applied", "USB-001": "applied"}

    r = vm.ssh(laptop, "dconf read /org/gnome/desktop/session/idle-delay; sudo ufw status verbose; "
                       "apt-config dump | grep -c Debian-Security; systemctl is-enabled apt-daily-upgrade.timer; "
                       "systemctl is-active deskguard-firewall-rollback.timer; true", timeout=180)
    assert "uint32 300" in r.stdout and "Status: active" in r.stdout and "10.0.2.0/24" in r.stdout, r.stdout
    assert "Default: deny (incoming)" in r.stdout and "\nenabled\n" in r.stdout, r.stdout
    assert r.stdout.rstrip().endswith("inactive"), r.stdout  # the guard disarmed the rollback timer

    proc, out = onboard(site, laptop)
    assert proc.returncode == 0, (proc.stderr, out)
    assert out["changed_tasks"] == 0 and {c["state"] for c in out["controls"]} == {"already compliant"}, out
    assert out["module_calls"] <= 20, out
