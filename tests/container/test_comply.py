"""The nightly compliance run on a real laptop container: a freshly onboarded laptop passes; settings broken
by hand fail exactly their controls, with the observed values; --fix repairs them; drift names each change;
a laptop that does not answer is "unreachable" (exit 3), never compliant."""

from __future__ import annotations

import json
from xml.etree import ElementTree as ET

import pytest

from deskguard.lab.image import lab_key

pytestmark = pytest.mark.container

HOST = "lap-ct1"


def deskguard(site, *args):
    from sitetools import run_deskguard

    return run_deskguard(site, *args, timeout=600)


def comply(site, *args):
    proc = deskguard(site, "comply", "--format", "json", *args)
    assert proc.stdout.strip().startswith("{"), proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.returncode, json.loads(proc.stdout)


def statuses(report, host=HOST):
    return {cid: r["status"] for cid, r in report["hosts"][host]["results"].items()}


@pytest.fixture(scope="module")
def site(make_site, lab_container):
    laptop = lab_container.hosts["lab-ct1"]
    site = make_site(management="10.213.0.0/16")
    proc = deskguard(site, "onboard", HOST, "--os", "debian", "--address", laptop.address, "--user", "tanaka",
                     "--ssh-key", str(lab_key()), "--json")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return site


@pytest.fixture(scope="module")
def laptop(lab_container):
    return lab_container.hosts["lab-ct1"]


def ssh(laptop, command):
    from deskguard.lab.access import run_ssh

    return run_ssh(laptop, command)


def test_a_freshly_onboarded_laptop_passes_everything(site):
    rc, report = comply(site)
    assert rc == 0, report
    # NET-001/002: the container's default route is its veth (a virtual link: not a phone, not Wi-Fi);
    # NET-003: the example policy names no call system.
    assert statuses(report) == {"ENC-001": "not_applicable", "ENC-002": "not_applicable", "FW-001": "pass",
                                "LCK-001": "pass", "UPD-001": "pass", "UPD-002": "pass",
                                "NET-001": "pass", "NET-002": "pass", "NET-003": "not_applicable"}
    assert report["hosts"][HOST]["compliant"] and report["run"]["score"] == 100.0


def test_broken_by_hand_fails_exactly_those_then_fix_repairs_them(site, laptop):
    r = ssh(laptop, "sudo ufw --force disable >/dev/null && "
                    "sudo sed -i 's/idle-delay=uint32 300/idle-delay=uint32 3600/' "
                    "/etc/dconf/db/local.d/00-deskguard-screenlock && "
                    "sudo systemctl disable --now apt-daily-upgrade.timer 2>/dev/null; echo ok")
    assert r.stdout.strip().endswith("ok"), r.stderr
    rc, report = comply(site)
    assert rc == 1
    failing = {cid for cid, s in statuses(report).items() if s == "fail"}
    assert failing == {"FW-001", "LCK-001", "UPD-001"}, statuses(report)
    results = report["hosts"][HOST]["results"]
    assert results["FW-001"]["observed"]["active"] is False
    assert results["LCK-001"]["observed"]["idle_delay"] == 3600
    assert results["UPD-001"]["observed"]["timers"] == ["enabled", "disabled"]
    assert {(d["control"], d["change"]) for d in report["drift"]} == {
        ("FW-001", "new failure"), ("LCK-001", "new failure"), ("UPD-001", "new failure")}

    rc, fixed = comply(site, "--fix")
    assert rc == 0, fixed
    assert set(statuses(fixed).values()) <= {"pass", "not_applicable"}
    assert {(d["control"], d["change"]) for d in fixed["drift"]} == {
        ("FW-001", "fixed"), ("LCK-001", "fixed"), ("UPD-001", "fixed")}
    assert ssh(laptop, "sudo ufw status").stdout.startswith("Status: active")


def test_a_laptop_that_does_not_answer_is_unreachable_and_the_run_completes(site, tmp_path):
    from deskguard import inventory

    inventory.add_host(site, "lap-gone", {"ansible_host": "10.213.9.250", "ansible_user": "dgadmin",
                                         "ansible_ssh_private_key_file": str(lab_key())})
    try:
        junit = tmp_path / "comply.xml"
        proc = deskguard(site, "comply", "--format", "junit", "--output", str(junit))
        assert proc.returncode == 3, proc.stdout + proc.stderr
        suites = {s.get("name"): s for s in ET.parse(junit).getroot()}
        assert suites["lap-gone"].get("errors") == "1"
        assert suites["lap-gone"].find("testcase/error").get("message") == "unreachable"
        assert suites[HOST].get("failures") == "0" and int(suites[HOST].get("tests")) == 6
    finally:
        inventory.remove_host(site, "lap-gone")
