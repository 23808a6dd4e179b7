"""`deskguard netcheck`'s play on Windows against the loopback responder: the PowerShell module
(deskguard_network_posture.ps1) is what goes to the laptop, with the policy's targets and limits, and its answer
(the same shape as Linux) is judged on the controller. Golden file pins the invocation; whether Windows's
Get-NetRoute / Get-NetAdapter / netsh / cost API say what the module expects is not verified here."""

from __future__ import annotations

import pytest
from test_golden import assert_golden

pytestmark = pytest.mark.windows

POLICY = {"deskguard_hosts": "win-loopback", "network_posture_vpn_interface": "wg0",
          "network_posture_call_system": [{"host": "cti.example.com", "ports": [5061, 443]}],
          "network_posture_time_limit": 12, "network_posture_samples": 8}
# What the .ps1 returns for an Android phone's USB tethering (Windows' in-box RNDIS driver usb8023.sys).
TETHERED = {"changed": False, "network": {
    "uplink": {"interface": "Ethernet 3", "kind": "usb_tether", "driver": "usb8023.sys", "usb_id": "18d1:4ee4",
               "present": True, "evidence": ["driver usb8023.sys", "media 802.3"]},
    "default_routes": [{"dev": "Ethernet 3", "gateway": "192.168.42.129", "metric": 25}],
    "networkmanager": {"type": None, "metered": "yes"}, "android_metered": None, "wifi": None,
    "vpn": {"interface": "wg0", "up": True, "handshake_age": 20},
    "call_system": {"targets": [{"host": "cti.example.com", "addresses": ["10.20.0.5"], "resolved": True,
                                 "route_dev": "wg0", "through_vpn": True,
                                 "ports": {"5061": {"state": "open", "ms": 31.0}, "443": {"state": "open", "ms": 30.2}}}],
                    "samples": {"sent": 8, "received": 8, "loss_pct": 0.0, "rtt_avg_ms": 31.5, "jitter_ms": 4.2}},
    "unknown": [], "complete": True, "elapsed": 3.1, "time_limit": 12}}


def test_netcheck_sends_the_powershell_module_with_the_policy_and_judges_the_answer(responder, play):
    responder.answers["deskguard_network_posture"] = TETHERED
    proc = play("netcheck.yml", **POLICY)
    assert_golden("netcheck", responder.calls)
    (call,) = responder.calls
    assert call.short == "deskguard_network_posture"
    assert call.args["targets"] == [{"host": "cti.example.com", "ports": [5061, 443]}]
    assert "ok: [win-loopback]" in proc.stdout


def test_the_windows_answer_is_judged_like_linux(responder):
    from deskguard.compliance.network import judge_all

    results = {r.id: r for r in judge_all(TETHERED["network"], POLICY)}
    assert results["NET-001"].status == "fail"
    assert results["NET-001"].evidence[0] == ("Connected through a phone's USB tethering (driver usb8023.sys, "
                                              "USB id 18d1:4ee4).")
    assert results["NET-003"].status == "pass"


def test_the_role_leaves_the_targets_on_windows_only_when_there_is_a_call_system(responder, play):
    play("role.yml", deskguard_test_role="network_posture")
    assert responder.calls == []                       # no call system: nothing to leave, no round trip
    play("role.yml", deskguard_test_role="network_posture",
         network_posture_call_system=[{"host": "cti.example.com", "ports": [5061]}])
    assert_golden("network_posture", responder.calls)
    (call,) = responder.calls
    assert '"host": "cti.example.com"' in call.args["parameters"]["Content"]
