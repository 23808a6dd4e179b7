"""A Windows laptop that is off at night, judged from its agent's check-in through the real CLI: a signed
check-in carrying a Windows-shaped posture (tests/windows/posture_fixtures.py: what deskguard_posture.ps1, and
so the Windows agent, returns) is posted to a real `deskguard serve` process, and `deskguard comply` (the real
play, the laptop's WinRM port refusing connections) judges it with the Windows judges, marked as coming from
the check-in with its age; evidence older than the policy allows is stale. What the PowerShell agent sends on a
real Windows host is not verified here (docs/agent.md)."""

from __future__ import annotations

import contextlib
import copy
import json
import socket
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

WINDOWS_TESTS = Path(__file__).resolve().parents[1] / "windows"
if str(WINDOWS_TESTS) not in sys.path:
    sys.path.insert(0, str(WINDOWS_TESTS))

from posture_fixtures import POLICY, POSTURE, answer, changed, escrow_recovery_password  # noqa: E402

pytestmark = pytest.mark.unit

HOST = "win-away"
# As for a live Windows posture (tests/windows/test_posture_windows.py): USB-002 is for allow_listed mode,
# VPN-003 for a kill switch, SW-002 for listed sources.
# ENC-004 (the LUKS root bound to the TPM) is Linux's: on Windows BitLocker's TPM protector is ENC-001's.
NOT_APPLICABLE = {"USB-002", "VPN-003", "SW-002", "ENC-004"}


@pytest.fixture(scope="module")
def away(make_site):
    """A site with a Windows laptop registered (its agent key, its escrowed recovery password) whose WinRM port
    answers nothing, and `deskguard serve` running for it."""
    from sitetools import free_port, serving

    from deskguard.site import inventory
    from deskguard.site import module_utils
    from deskguard.store import Store

    proto = module_utils("deskguard_protocol")
    site = make_site()
    key = proto.generate_private_key()
    port = free_port()
    with Store.open(site) as store:
        dev = store.register_device(HOST, "windows", "127.0.0.1", port, "deskguard-test", None)
        store.set_agent_public_key(dev.uuid, proto.public_key_pem(key).decode())
    escrow_recovery_password(site, dev.uuid, hostname=HOST)
    policy = {k: v for k, v in POLICY.items() if k != "deskguard_hosts"}
    # The agent and the VPN are on, so the policy check wants their URLs and endpoint (the check-ins below are posted by the test itself).
    policy.update(endpoint_agent_orders_url="https://orders.example/orders",
                  endpoint_agent_server_url="https://orders.example", vpn_endpoint="vpn.example.com:51820")
    inventory.add_host(site, HOST, {"ansible_host": "127.0.0.1", "ansible_port": port, "ansible_connection": "winrm",
                                    "ansible_winrm_scheme": "https", "ansible_winrm_transport": "ntlm",
                                    "ansible_winrm_message_encryption": "always", "ansible_user": "deskguard-test",
                                    "ansible_password": "nobody-answers", "deskguard_device_uuid": dev.uuid,
                                    "deskguard_os": "windows", **policy})
    with serving(site) as served:
        yield {"site": site, "uuid": dev.uuid, "key": key, "url": f"http://127.0.0.1:{served}", "proto": proto,
               "port": port}


def check_in(away, collected, agent_version="2-windows"):
    proto = away["proto"]
    time.sleep(1.1)   # sent_at has one-second resolution and must move forward between check-ins
    body = proto.sign(proto.build_checkin(away["uuid"], collected, agent_version), away["key"])
    req = urllib.request.Request(away["url"] + "/v1/checkin", data=body, headers={"content-type": "application/json"})
    assert urllib.request.urlopen(req, timeout=20).status == 200


def comply(away, *args, limit=HOST, host=HOST):
    from sitetools import run_deskguard

    proc = run_deskguard(away["site"], "comply", "--format", "json", "--limit", limit, *args, timeout=600)
    assert proc.stdout.strip().startswith("{"), proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.returncode, json.loads(proc.stdout)["hosts"][host]


def statuses(host):
    return {cid: r["status"] for cid, r in host["results"].items()}


def test_a_windows_checkin_is_judged_like_a_live_windows_posture(away):
    check_in(away, answer())
    rc, host = comply(away)
    assert rc == 0 and host["state"] == "ok" and host["source"] == "checkin", host
    assert host["evidence_at"] and "latest check-in" in host["message"] and host["compliant"] is True
    assert {cid for cid, st in statuses(host).items() if st != "pass"} == NOT_APPLICABLE, \
        {cid: r["evidence"] for cid, r in host["results"].items() if r["status"] != "pass"}
    results = host["results"]
    # The Windows judges scored it (their observed values have the Windows facts, not the Linux ones), and
    # BitLocker's protectors were compared with the escrow records.
    assert set(results["FW-001"]["observed"]) >= {"Domain", "Private", "Public", "management_rules"}
    assert results["LCK-001"]["observed"]["inactivity_timeout_secs"] == 300
    assert results["UPD-001"]["expected"]["policy"]["AUOptions"] == 4
    assert results["ENC-002"]["observed"] == {"volumes": ["C:"]}


def test_a_setting_broken_on_windows_fails_from_the_checkin(away):
    volume = POSTURE["disk"]["volumes"][0]
    broken = changed("firewall", profiles={**POSTURE["firewall"]["profiles"],
                                           "Public": {"enabled": "False", "default_inbound_action": "Block"}})
    broken["disk"]["volumes"] = [{**volume, "protectors": volume["protectors"] + [
        {"id": "{11111111-2222-4333-8444-555555555555}", "type": "RecoveryPassword"}]}]
    check_in(away, answer(broken))
    rc, host = comply(away)
    assert rc == 1 and host["source"] == "checkin" and host["compliant"] is False, host
    assert {cid for cid, st in statuses(host).items() if st == "fail"} == {"FW-001", "ENC-003"}
    assert "the Public profile is off (Enabled=False)" in host["results"]["FW-001"]["evidence"]
    assert host["results"]["ENC-003"]["evidence"] == [
        "C:: recovery password protector {11111111-2222-4333-8444-555555555555} is not in the escrow record"]


def test_a_section_the_windows_agent_could_not_collect_is_an_error(away):
    posture = copy.deepcopy(POSTURE)
    del posture["usb"]
    check_in(away, answer(posture, {"usb": "CimException: access denied"}))
    rc, host = comply(away)
    assert rc == 1 and host["compliant"] is False
    assert {cid for cid, st in statuses(host).items() if st == "error"} == {"USB-001", "USB-002", "USB-003"}
    assert host["results"]["USB-001"]["evidence"] == ["usb not collected: CimException: access denied"]


def test_stale_windows_evidence_is_never_compliant(away):
    from deskguard.site import inventory

    check_in(away, answer())
    inventory.add_host(away["site"], HOST, {"deskguard_checkin_max_age_hours": 0.0001})
    try:
        rc, host = comply(away)
    finally:
        inventory.add_host(away["site"], HOST, {"deskguard_checkin_max_age_hours": 24})
    assert rc == 3 and host["state"] == "stale" and host["compliant"] is False, host
    assert "older than the policy's 0.0001 h" in host["message"]


def test_without_its_os_section_a_windows_checkin_is_still_judged_as_windows(away):
    """The `os` section says which judges apply; when it failed on the laptop, the host's WinRM connection
    still says Windows (the Linux judges would misread Windows facts)."""
    posture = copy.deepcopy(POSTURE)
    del posture["os"]
    check_in(away, answer(posture, {"os": "CimException: access denied"}))
    rc, host = comply(away)
    assert rc == 0 and host["compliant"] is True, host
    assert {cid for cid, st in statuses(host).items() if st != "pass"} == NOT_APPLICABLE
    assert set(host["results"]["FW-001"]["observed"]) >= {"Domain", "Private", "Public"}


# -- check-in first (policy deskguard_comply_evidence: checkin_first; issue 24) --------------------------------

@contextlib.contextmanager
def counting_listener(port: int):
    """The laptop's WinRM port, counting the connections the run opens to it (each closed at once, so a run
    that does connect finds the laptop unreachable). Yields a function: how many so far."""
    seen = []
    server = socket.create_server(("127.0.0.1", port))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            seen.append(1)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield lambda: len(seen)
    finally:
        stop.set()
        thread.join(5)
        server.close()


@contextlib.contextmanager
def host_policy(away, **values):
    from deskguard.site import inventory

    inventory.add_host(away["site"], HOST, values)
    try:
        yield
    finally:
        inventory.add_host(away["site"], HOST, {"deskguard_comply_evidence": "live",
                                                "deskguard_checkin_max_age_hours": 24})


def test_live_evidence_contacts_the_laptop_before_its_checkin(away):
    """The default: the run tries the laptop, and only then takes the check-in (what the listener counts)."""
    check_in(away, answer())
    with counting_listener(away["port"]) as seen:
        rc, host = comply(away)
    assert seen() >= 1 and rc == 0 and host["source"] == "checkin", host
    assert host["message"].startswith("unreachable now; latest check-in"), host["message"]


def verified_at(away):
    from deskguard.store import Store

    with Store.open(away["site"]) as store:
        return [s.verified_at for s in store.live_secrets(away["uuid"])]


def test_check_in_first_judges_a_fresh_checkin_without_contacting_the_laptop(away):
    check_in(away, answer())
    before = verified_at(away)
    with host_policy(away, deskguard_comply_evidence="checkin_first"), counting_listener(away["port"]) as seen:
        rc, host = comply(away)
    assert seen() == 0, "the laptop was contacted"
    # The escrow record was verified against the check-in and stamped so (written after the judging).
    assert [after > was for after, was in zip(verified_at(away), before)] == [True], (before, verified_at(away))
    assert rc == 0 and host["state"] == "ok" and host["source"] == "checkin" and host["compliant"] is True, host
    assert "not contacted (deskguard_comply_evidence: checkin_first)" in host["message"], host["message"]
    assert {cid for cid, st in statuses(host).items() if st != "pass"} == NOT_APPLICABLE
    assert host["results"]["ENC-002"]["observed"] == {"volumes": ["C:"]}   # compared with the escrow records


def test_check_in_first_judges_a_broken_setting_from_the_checkin(away):
    broken = changed("firewall", profiles={**POSTURE["firewall"]["profiles"],
                                           "Public": {"enabled": "False", "default_inbound_action": "Block"}})
    check_in(away, answer(broken))
    with host_policy(away, deskguard_comply_evidence="checkin_first"), counting_listener(away["port"]) as seen:
        rc, host = comply(away)
    assert seen() == 0 and rc == 1 and host["compliant"] is False, host
    assert {cid for cid, st in statuses(host).items() if st == "fail"} == {"FW-001"}


def test_check_in_first_contacts_a_laptop_whose_checkin_is_too_old(away):
    check_in(away, answer())
    with host_policy(away, deskguard_comply_evidence="checkin_first", deskguard_checkin_max_age_hours=0.0001), \
            counting_listener(away["port"]) as seen:
        rc, host = comply(away)
    assert seen() >= 1 and rc == 3 and host["state"] == "stale", host
    assert "older than the policy's 0.0001 h" in host["message"]


def test_a_templated_check_in_first_is_honoured_by_the_play_itself(away):
    """What AWX or plain ansible-playbook run: the play's action plugin reads the host's templated policy and
    takes the fresh check-in without contacting the laptop (the CLI's own pre-judging does not see it)."""
    check_in(away, answer())
    with host_policy(away, deskguard_comply_evidence="{{ 'checkin_' ~ 'first' }}"), \
            counting_listener(away["port"]) as seen:
        rc, host = comply(away)
    assert seen() == 0 and rc == 0 and host["source"] == "checkin", host
    assert "not contacted" in host["message"]


def test_one_run_records_the_judged_and_the_contacted_laptops(away):
    """A second laptop with no check-in is contacted (its port refuses: unreachable) in the same run."""
    from deskguard.site import inventory
    from deskguard.store import Store
    from sitetools import free_port

    other = "win-never"
    with Store.open(away["site"]) as store:
        dev = store.register_device(other, "windows", "127.0.0.1", free_port(), "deskguard-test", None)
    inventory.add_host(away["site"], other, {"ansible_host": "127.0.0.1", "ansible_port": dev.port,
                                             "ansible_connection": "winrm", "ansible_user": "deskguard-test",
                                             "ansible_password": "nobody-answers", "deskguard_device_uuid": dev.uuid,
                                             "deskguard_comply_evidence": "checkin_first"})
    check_in(away, answer())
    try:
        with host_policy(away, deskguard_comply_evidence="checkin_first"), counting_listener(away["port"]) as seen:
            rc, host = comply(away, limit=f"{HOST},{other}")
            _, never = comply(away, limit=f"{HOST},{other}", host=other)
    finally:
        inventory.remove_host(away["site"], other)
    assert seen() == 0 and host["source"] == "checkin" and host["compliant"] is True, host
    assert rc == 3 and never["state"] == "unreachable", never


def test_after_a_repair_the_repaired_host_is_left_to_the_live_play(away):
    from deskguard.compliance import checkin_first

    check_in(away, answer())
    with host_policy(away, deskguard_comply_evidence="checkin_first"):
        judged = checkin_first.split(away["site"], HOST, "laptops")
        repaired = checkin_first.split(away["site"], HOST, "laptops", force_live={HOST})
    assert list(judged.judged) == [HOST] and judged.live == []
    assert repaired.judged == {} and repaired.live == [HOST]


def test_an_unknown_evidence_setting_is_refused_before_anything_runs(away):
    from sitetools import run_deskguard

    with host_policy(away, deskguard_comply_evidence="sometimes"), counting_listener(away["port"]) as seen:
        proc = run_deskguard(away["site"], "comply", "--limit", HOST, timeout=600)
    assert proc.returncode == 2 and seen() == 0, proc.stdout + proc.stderr
    assert "deskguard_comply_evidence" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
