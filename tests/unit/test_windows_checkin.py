"""A Windows laptop that is off at night, judged from its agent's check-in through the real CLI: a signed
check-in carrying a Windows-shaped posture (tests/windows/posture_fixtures.py: what deskguard_posture.ps1, and
so the Windows agent, returns) is posted to a real `deskguard serve` process, and `deskguard comply` (the real
play, the laptop's WinRM port refusing connections) judges it with the Windows judges, marked as coming from
the check-in with its age; evidence older than the policy allows is stale. What the PowerShell agent sends on a
real Windows host is not verified here (docs/agent.md)."""

from __future__ import annotations

import copy
import json
import sys
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
        yield {"site": site, "uuid": dev.uuid, "key": key, "url": f"http://127.0.0.1:{served}", "proto": proto}


def check_in(away, collected, agent_version="2-windows"):
    proto = away["proto"]
    time.sleep(1.1)   # sent_at has one-second resolution and must move forward between check-ins
    body = proto.sign(proto.build_checkin(away["uuid"], collected, agent_version), away["key"])
    req = urllib.request.Request(away["url"] + "/v1/checkin", data=body, headers={"content-type": "application/json"})
    assert urllib.request.urlopen(req, timeout=20).status == 200


def comply(away, *args):
    from sitetools import run_deskguard

    proc = run_deskguard(away["site"], "comply", "--format", "json", "--limit", HOST, *args, timeout=600)
    assert proc.stdout.strip().startswith("{"), proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.returncode, json.loads(proc.stdout)["hosts"][HOST]


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
