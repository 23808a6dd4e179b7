"""Judging a posture against the policy (deskguard.compliance.evaluate): every control can pass and fail,
waivers are honoured only when valid, mandatory controls cannot be outweighed."""

from __future__ import annotations

import datetime as dt

import pytest

from deskguard.compliance.evaluate import PolicyError, evaluate, host_summary, parse_waivers
from deskguard.compliance.policy import effective
from deskguard.recovery.escrow import Outcome

pytestmark = pytest.mark.unit

TODAY = dt.date(2026, 11, 28)
# Judged as the compliance play does: every role's defaults (USB mode block, VPN off) under the host's values.
POLICY = effective({"screen_lock_idle_minutes": 5, "firewall_management_sources": ["10.8.0.0/16"],
                    "firewall_management_port": 22, "auto_update_security_only": True})
LOCKS = ["/org/gnome/desktop/session/idle-delay", "/org/gnome/desktop/screensaver/lock-enabled"]
GOOD = {
    "os": {"id": "debian", "uptime_seconds": 3600},
    "screen_lock": {"idle_delay": 300, "lock_enabled": True, "locked": LOCKS, "profile_uses_local_db": True,
                    "db_compiled": True,
                    # Shape from plugins/module_utils/deskguard_desktop_session.read: GNOME's reader answered.
                    "session": {"desktop": "GNOME", "desktops_found": ["GNOME"], "checked": True,
                                "reader": "gsettings as tanaka in a D-Bus session (dbus-run-session)",
                                "values": {"idle_delay": 300, "lock_enabled": True, "lock_delay": 0},
                                "writable": {"idle_delay": False, "lock_enabled": False, "lock_delay": False}}},
    "firewall": {"tool": "ufw", "active": True, "defaults": {"input": "DROP", "output": "ACCEPT"},
                 "rules": ["allow from 10.8.0.0/16 to any port 22 proto tcp comment 'deskguard management'"]},
    "updates": {"installed": True, "periodic_unattended_upgrade": "1", "periodic_update_lists": "1",
                "timers": ["enabled", "enabled"], "origins": ["origin=Debian,label=Debian-Security"],
                "last_run_age_days": 0.5, "reboot_pending": False},
    # Shapes from plugins/module_utils/deskguard_usb_report.collect and deskguard_vpn_facts.gather.
    "usb": {"installed": True, "devices": [], "blocked": [], "recent_blocks": [],
            "unit": {"active": "active", "enabled": "enabled"}, "drift": [], "rendered_error": None,
            "running_rules": 7, "rendered_rules": 7, "running_matches": True},
    # Shape from plugins/module_utils/deskguard_agent_health.collect.
    "agent": {"installed": True, "timer_enabled": True, "timer_active": True, "device_key_present": True,
              "last_checkin": "2026-11-28T23:50:00Z", "last_checkin_age_seconds": 600, "pending_refusals": 0,
              "deadman_days": 0},
    "vpn": {"interface": "wg0", "config_files": [], "key_file": None, "interface_up": False, "public_key": None,
            "peers": [], "kill_switch": False},
    "software": {"family": "Debian", "denied_installed": [], "denylist_pinned": True, "sources": [], "browsers": {}},
    "av": {"engine": "clamav", "installed": False, "daemon_active": False, "updater_active": False,
           "signature_age_days": None, "databases": []},
    "network": {"uplink": {"interface": "enp0s31f6", "kind": "wired", "driver": "e1000e", "present": True},
                "default_routes": [{"dev": "enp0s31f6"}], "networkmanager": None, "android_metered": None,
                "wifi": None, "vpn": None, "call_system": None, "unknown": [], "complete": True},
    # Shape from plugins/module_utils/deskguard_accounts.collect (a hardened laptop).
    "accounts": {"operator": "tanaka", "operator_exists": True, "operator_groups": ["tanaka"],
                 "operator_privileged_groups": [], "operator_sudo_rules": [], "password_minlen": 12,
                 "password_minclass": 3, "password_remember": 5, "password_quality_in_pam": True,
                 "password_history_in_pam": True, "lockout_in_pam": True, "lockout_deny": 5,
                 "lockout_unlock_seconds": 900, "autologin_enabled": False, "autologin_users": [],
                 "guest_enabled": False, "management_user": "dgadmin", "management_exists": True,
                 "management_authorized_keys": 1,
                 "sshd": {"permitrootlogin": "no", "passwordauthentication": "no",
                          "kbdinteractiveauthentication": "no", "pubkeyauthentication": "yes", "allowusers": []}},
}
PASSING = ["ENC-001", "ENC-002", "ENC-003", "LCK-001", "FW-001", "UPD-001", "UPD-002", "USB-001", "USB-003",
           "NET-001", "NET-002", "SW-001", "ACC-001", "ACC-002", "ACC-003", "ACC-004", "ACC-005"]
# USB mode block; VPN off by default; the policy names no call system.
# The agent is off by default; no approved sources listed, no browser installed, no antivirus required on Linux.
# ENC-004: the default policy unlocks with a passphrase (nothing bound to the TPM).
NOT_APPLICABLE = ["ENC-004", "USB-002", "VPN-001", "VPN-002", "VPN-003", "NET-003", "AGT-001", "SW-002", "SW-003",
                  "AV-001"]


def disk_ok():
    return Outcome(volumes=[{"device": "/dev/vda2", "escrowed": [1]}])


def by_id(results):
    return {r.id: r for r in results}


def run(posture=GOOD, errors=None, policy=POLICY, outcome=None, today=TODAY):
    return by_id(evaluate("lt-1", posture, errors or {}, policy, outcome or disk_ok(), today))


def broken(section, **changes):
    return {**GOOD, section: {**GOOD[section], **changes}}


def test_a_good_laptop_passes_everything():
    results = run()
    assert {cid: r.status for cid, r in results.items()} == {
        **dict.fromkeys(PASSING, "pass"), **dict.fromkeys(NOT_APPLICABLE, "not_applicable")}
    assert host_summary(list(results.values())) == {
        "score": 100.0, "compliant": True,
        "counts": {"pass": 17, "warn": 0, "fail": 0, "error": 0, "waived": 0, "not_applicable": 10,
                   "not_checked": 0}}


@pytest.mark.parametrize("section, changes, cid, reason", [
    ("screen_lock", {"idle_delay": 3600}, "LCK-001", "idle-delay is 3600 s, policy wants 1..300 s"),
    ("screen_lock", {"idle_delay": 0}, "LCK-001", "idle-delay is 0 s"),
    ("screen_lock", {"locked": []}, "LCK-001", "is not locked"),
    ("screen_lock", {"db_compiled": False}, "LCK-001", "dconf update not run"),
    ("firewall", {"active": False}, "FW-001", "the firewall is not active"),
    ("firewall", {"defaults": {"input": "ACCEPT"}}, "FW-001", "inbound default is 'ACCEPT'"),
    ("firewall", {"rules": []}, "FW-001", "no rule lets the management network 10.8.0.0/16 reach port 22"),
    ("updates", {"timers": ["enabled", "disabled"]}, "UPD-001", "not both enabled"),
    ("updates", {"periodic_unattended_upgrade": "0"}, "UPD-001", "Unattended-Upgrade is '0'"),
    ("updates", {"origins": ["origin=Debian,label=Debian"]}, "UPD-001", "origins beyond security updates"),
    ("updates", {"reboot_pending": True, "reboot_packages": ["linux-image"]}, "UPD-002", "linux-image"),
    ("updates", {"last_run_age_days": 12.0}, "UPD-002", "12.0 days ago"),
    ("network", {"uplink": {"interface": "enp0s20u11", "kind": "usb_tether", "driver": "rndis_host"}}, "NET-001",
     "Connected through a phone's USB tethering (driver rndis_host)."),
    ("network", {"android_metered": True}, "NET-001", "ANDROID_METERED"),
    ("network", {"uplink": {"interface": "wlp2s0", "kind": "wifi"}, "wifi": {"ssid": "Cafe", "security": "open"}},
     "NET-002", 'Connected to the open Wi-Fi "Cafe"'),
])
def test_each_broken_setting_fails_its_control_with_the_observed_value(section, changes, cid, reason):
    results = run(broken(section, **changes))
    failing = {k for k, r in results.items() if r.status not in ("pass", "not_applicable")}
    assert failing == {cid}
    assert any(reason in e for e in results[cid].evidence), results[cid].evidence
    assert results[cid].observed and results[cid].expected


@pytest.mark.parametrize("changes, failing, reason", [
    # usbguard stopped: nothing enforces the rules, and the running policy cannot be the rendered one.
    ({"unit": {"active": "inactive", "enabled": "enabled"}, "running_matches": False, "running_rules": None},
     {"USB-001", "USB-003"}, "daemon enabled/inactive"),
    ({"drift": [{"path": "/etc/usbguard/rules.conf", "reason": "content differs"}]}, {"USB-003"},
     "/etc/usbguard/rules.conf (content differs)"),
    ({"devices": [{"id": "0781:5567", "serial": "A1", "storage": True, "authorized": True, "block_devices": []}]},
     {"USB-001"}, "0781:5567 A1"),
    ({"installed": False}, {"USB-001", "USB-002", "USB-003"}, "usbguard not installed"),
])
def test_usb_controls_fail_with_what_was_observed(changes, failing, reason):
    results = run(broken("usb", **changes))
    assert {k for k, r in results.items() if r.status == "fail"} == failing
    for cid in failing:   # every failure says what was seen
        assert results[cid].evidence and results[cid].observed, cid
    assert any(reason in e for cid in failing for e in results[cid].evidence), \
        {cid: results[cid].evidence for cid in failing}


VPN_POLICY = {**POLICY, "vpn_enabled": True, "vpn_gateway_public_key": "G" * 43 + "=", "vpn_kill_switch": True,
              "vpn_enrolled_public_key": "L" * 43 + "="}
VPN_UP = {"interface": "wg0", "config_files": ["/etc/wireguard/wg0.conf"], "key_file": {"mode": "0600", "uid": 0},
          "interface_up": True, "public_key": "L" * 43 + "=", "kill_switch": True,
          "peers": [{"public_key": "G" * 43 + "=", "endpoint": "192.0.2.1:51820", "allowed_ips": ["10.77.0.0/24"],
                     "latest_handshake_age": 30, "rx_bytes": 1, "tx_bytes": 1}]}


@pytest.mark.parametrize("changes, failing, reason", [
    ({}, set(), None),
    ({"interface_up": False, "peers": []}, {"VPN-001", "VPN-002"}, "interface wg0 is not up"),
    ({"peers": [{**VPN_UP["peers"][0], "latest_handshake_age": 900}]}, {"VPN-002"}, "900 s ago"),
    ({"public_key": "X" * 43 + "="}, {"VPN-001"}, "not the one enrolled"),
    ({"kill_switch": False}, {"VPN-003"}, "kill switch not loaded"),
])
def test_vpn_controls_when_the_policy_enables_the_vpn(changes, failing, reason):
    results = run({**GOOD, "vpn": {**VPN_UP, **changes}}, policy=VPN_POLICY)
    assert {k for k, r in results.items() if r.status == "fail"} == failing
    for cid in failing:   # every failure says what was seen
        assert results[cid].evidence, cid
    if failing:
        assert any(reason in e for cid in failing for e in results[cid].evidence), \
            {cid: results[cid].evidence for cid in failing}


def test_a_section_that_was_not_collected_is_an_error_not_a_pass():
    posture = {k: v for k, v in GOOD.items() if k != "firewall"}
    results = run(posture, errors={"firewall": "UfwError: ufw status failed"})
    assert results["FW-001"].status == "error" and "UfwError" in results["FW-001"].evidence[0]
    assert host_summary(list(results.values()))["compliant"] is False


def test_disk_results_come_from_the_escrow_verification():
    outcome = Outcome(enc001=["root (/) on /dev/sda2 is not encrypted: reinstall with encryption"])
    outcome.enc002.append("no encrypted volume to escrow a recovery key for")
    results = run(outcome=outcome)
    assert results["ENC-001"].status == "fail" and results["ENC-002"].status == "fail"
    assert "reinstall" in results["ENC-001"].evidence[0]


def test_mandatory_controls_cannot_be_outweighed_by_the_score():
    outcome = Outcome()
    outcome.enc002.append("/dev/vda2: no recovery key escrowed")
    summary = host_summary(list(run(outcome=outcome).values()))
    assert summary["score"] > 80 and summary["compliant"] is False


def test_a_disabled_control_is_not_applicable():
    results = run(broken("firewall", active=False), policy={**POLICY, "firewall_enabled": False})
    assert results["FW-001"].status == "not_applicable"


def test_waivers_valid_expired_and_per_host():
    waiver = {"control": "LCK-001", "reason": "kiosk laptop, INC-9", "expires": "2027-01-31"}
    policy = {**POLICY, "deskguard_waivers": [waiver]}
    assert run(broken("screen_lock", idle_delay=3600), policy=policy)["LCK-001"].status == "waived"
    late = run(broken("screen_lock", idle_delay=3600), policy=policy, today=dt.date(2027, 2, 1))["LCK-001"]
    assert late.status == "fail" and any("waiver expired on 2027-01-31" in e for e in late.evidence)
    other_host = {**POLICY, "deskguard_waivers": [{**waiver, "hosts": ["lt-2"]}]}
    assert run(broken("screen_lock", idle_delay=3600), policy=other_host)["LCK-001"].status == "fail"
    # A waiver never turns a pass into "waived".
    assert run(policy=policy)["LCK-001"].status == "pass"


@pytest.mark.parametrize("waiver, message", [
    ({"control": "XYZ-999", "reason": "r", "expires": "2027-01-01"}, "unknown control 'XYZ-999'"),
    ({"control": "LCK-001", "expires": "2027-01-01"}, "needs a reason"),
    ({"control": "LCK-001", "reason": "r"}, "expires must be a date"),
    ({"control": "LCK-001", "reason": "r", "expires": "soon"}, "expires must be a date"),
    ({"control": "ENC-001", "reason": "r", "expires": "2027-01-01"}, "mandatory and cannot be waived"),
    ("LCK-001", "is not a mapping"),
])
def test_unusable_waivers_are_refused_with_a_clear_message(waiver, message):
    with pytest.raises(PolicyError, match=message):
        parse_waivers({"deskguard_waivers": [waiver]}, "lt-1")


@pytest.mark.parametrize("changes, reason", [
    ({}, None),
    ({"timer_active": False}, "deskguard-agent.timer is not enabled and active"),
    ({"device_key_present": False}, "the device key is missing"),
    ({"last_checkin": None, "last_checkin_age_seconds": None}, "never checked in"),
    ({"last_checkin_age_seconds": 3 * 3600}, "last successful check-in 180 min ago"),
    ({"installed": False}, "not installed"),
])
def test_agt_001_when_the_policy_turns_the_agent_on(changes, reason):
    results = run({**GOOD, "agent": {**GOOD["agent"], **changes}}, policy={**POLICY, "endpoint_agent_enabled": True})
    r = results["AGT-001"]
    assert r.status == ("pass" if reason is None else "fail"), r
    if reason:
        assert any(reason in e for e in r.evidence), r.evidence


GNOME_SESSION = GOOD["screen_lock"]["session"]


@pytest.mark.parametrize("session, reason", [
    ({"values": {"idle_delay": 3600, "lock_enabled": True}}, "the operator's session gets idle-delay 3600 s (GNOME)"),
    ({"values": {"idle_delay": 300, "lock_enabled": False}}, "the operator's session has the screen lock off"),
    # GSettings without the dconf backend answers its defaults (300 s, lock on) and calls them writable.
    ({"writable": {"idle_delay": True, "lock_enabled": True}}, "the operator can change idle-delay in their session"),
])
def test_lck001_fails_on_what_the_operators_session_gets_even_with_right_files(session, reason):
    posture = broken("screen_lock", session={**GNOME_SESSION, **session})
    r = run(posture)["LCK-001"]
    assert r.status == "fail" and any(reason in e for e in r.evidence), r.evidence
    assert r.observed["desktop"] == "GNOME"


@pytest.mark.parametrize("session, why", [
    ({"desktop": "KDE Plasma", "desktops_found": ["KDE Plasma"], "checked": False, "values": {}, "writable": {},
      "why": "KDE Plasma found: the kit sets GNOME's idle lock only"}, "KDE Plasma found"),
    ({"desktop": "GNOME", "desktops_found": [], "checked": False, "values": {}, "writable": {},
      "why": "GNOME's settings reader is not installed (no /usr/bin/gsettings)"}, "no /usr/bin/gsettings"),
    (None, "an older agent"),
])
def test_lck001_without_a_reading_of_the_session_is_not_checked_never_a_pass(session, why):
    posture = broken("screen_lock", session=session)
    results = run(posture)
    r = results["LCK-001"]
    assert r.status == "not_checked" and why in r.evidence[0], r.evidence
    summary = host_summary(list(results.values()))
    assert summary["counts"]["not_checked"] == 1 and summary["counts"]["pass"] == 16
    assert summary["score"] == 100.0 and summary["compliant"]   # left out of the score, like not applicable
    # Wrong files still fail without a reader.
    assert run(broken("screen_lock", session=session, idle_delay=3600))["LCK-001"].status == "fail"
