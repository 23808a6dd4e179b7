"""The nightly compliance run on a Windows laptop, through Ansible's winrm connection against the loopback
responder: playbooks/comply.yml sends deskguard_posture.ps1 (not the Linux .py) with every section's
PowerShell module_util bundled, and the controller scores every control from the scripted answer
(posture_fixtures.py, from Microsoft documentation examples). What Windows itself would answer is not
verified here (docs/windows.md)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from posture_fixtures import POLICY, POSTURE, answer, changed, escrow_recovery_password
from test_golden import assert_golden

from deskguard.compliance import disk as dgdisk
from deskguard.compliance import runs, windows
from deskguard.compliance.catalog import CONTROLS
from deskguard.compliance.evaluate import evaluate
from deskguard.compliance.policy import effective, posture_params
from deskguard.store import Store

pytestmark = pytest.mark.windows

REPO = Path(__file__).resolve().parents[2]
MODULE = REPO / "plugins" / "modules_windows" / "deskguard_posture.ps1"
# The collection (section table, errors, timings), shared with the Windows check-in agent.
COLLECT = REPO / "plugins" / "module_utils" / "Ansible.ModuleUtils.DeskguardCollectPosture.psm1"
SECTION_UTILS = sorted(p.name for p in (REPO / "plugins" / "module_utils").glob("Ansible.ModuleUtils.DeskguardPosture*.psm1"))
# Not applicable with POLICY: USB-002 is for allow_listed mode only, VPN-003 when the policy wants a kill switch.
NOT_APPLICABLE = {"USB-002", "VPN-003", "SW-002", "ENC-004"}   # SW-002: no approved sources listed; ENC-004 is Linux


def comply(play, site, uuid, **extra):
    play("comply.yml", deskguard_device_uuid=uuid, **{**POLICY, **extra})
    with Store.open(site) as store:
        return runs.load(store).hosts["win-loopback"]


def test_comply_sends_the_powershell_module_and_scores_every_control(responder, play, enc_site):
    site, uuid, _ = enc_site
    escrow_recovery_password(site, uuid)
    responder.answers["deskguard_posture"] = answer()
    host = comply(play, site, uuid)
    (call,) = responder.calls
    # Ansible chose the PowerShell file for the winrm host, and bundled every section's module_util with it.
    assert call.script == "ansible.legacy.deskguard_posture.ps1"   # from the kit's library, the .ps1
    assert len(SECTION_UTILS) >= 9 and set(SECTION_UTILS) <= set(call.bundled), call.bundled
    assert COLLECT.name in call.bundled, call.bundled
    # The policy's params go to Windows exactly as to Linux (the management account is the connection's user).
    assert call.args["params"] == posture_params(effective({**POLICY, "ansible_user": "deskguard-test"}))
    assert_golden("comply", responder.calls)
    results = host["results"]
    assert set(results) == set(CONTROLS)
    assert {cid for cid, r in results.items() if r["status"] != "pass"} == NOT_APPLICABLE, \
        {cid: r["evidence"] for cid, r in results.items() if r["status"] != "pass"}
    for cid, r in results.items():
        if cid not in NOT_APPLICABLE:
            assert r["observed"] is not None and r["expected"] is not None, cid
    assert results["ENC-002"]["observed"] == {"volumes": ["C:"]}
    assert host["state"] == "ok" and host["compliant"] is True


def test_bitlocker_off_fails_enc_001_and_the_host_is_not_compliant(responder, play, enc_site):
    site, uuid, _ = enc_site
    escrow_recovery_password(site, uuid)
    off = {**POSTURE["disk"], "volumes": [{**POSTURE["disk"]["volumes"][0], "protection_status": "Off",
                                           "volume_status": "FullyDecrypted", "encryption_percentage": 0.0,
                                           "encryption_method": "None"}]}
    responder.answers["deskguard_posture"] = answer(changed("disk", **off))
    host = comply(play, site, uuid)
    enc1 = host["results"]["ENC-001"]
    assert enc1["status"] == "fail"
    assert "C: is FullyDecrypted (0.0% encrypted)" in enc1["evidence"]
    assert any("protection is Off" in line for line in enc1["evidence"])
    assert host["results"]["ENC-002"]["status"] == "pass"   # the escrowed protector is still on the volume
    assert host["compliant"] is False


@pytest.fixture
def escrowed(enc_site):
    site, uuid, _ = enc_site
    escrow_recovery_password(site, uuid)
    store = Store.open(site)
    yield lambda posture, errors=None, policy=None: {
        r.id: r for r in evaluate("win-loopback", posture, errors or {}, effective({**POLICY, **(policy or {})}),
                                  dgdisk.verify(store, uuid, "win-loopback", posture,
                                                effective({**POLICY, **(policy or {})})))}
    store.close()


def test_the_fixture_passes_when_judged_directly(escrowed):
    results = escrowed(POSTURE)
    assert {cid for cid, r in results.items() if r.status != "pass"} == NOT_APPLICABLE


BROKEN = [
    ("screen_lock", {"inactivity_timeout_secs": 900}, "LCK-001", "InactivityTimeoutSecs is 900 s, policy wants 1..300 s"),
    ("screen_lock", {"inactivity_timeout_secs": None}, "LCK-001",
     "InactivityTimeoutSecs is not set: Windows does not lock an idle session"),
    ("firewall", {"profiles": {**POSTURE["firewall"]["profiles"],
                               "Public": {"enabled": "False", "default_inbound_action": "Block"}}},
     "FW-001", "the Public profile is off (Enabled=False)"),
    ("firewall", {"profiles": {**POSTURE["firewall"]["profiles"],
                               "Private": {"enabled": "True", "default_inbound_action": "Allow"}}},
     "FW-001", "the Private profile's inbound default is Allow, not Block"),
    ("updates", {"policy": {**POSTURE["updates"]["policy"], "AUOptions": 2}}, "UPD-001", "AUOptions is 2, policy wants 4"),
    ("updates", {"service": {"name": "wuauserv", "start_type": "Disabled"}}, "UPD-001",
     "the Windows Update service (wuauserv) is disabled"),
    ("updates", {"reboot_pending": True, "reboot_reasons": ["WindowsUpdate RebootRequired"]}, "UPD-002",
     "reboot pending after updates (WindowsUpdate RebootRequired)"),
    ("updates", {"last_run_age_days": 12.5}, "UPD-002", "last windows-update run 12.5 days ago (policy: 7)"),
    ("usb", {"values": []}, "USB-001",
     "HKLM:\\SOFTWARE\\Policies\\Microsoft\\Windows\\RemovableStorageDevices\\Deny_All is not set, policy wants 1"),
    ("usb", {"values": POSTURE["usb"]["values"] + [
        {"path": "HKLM:\\SOFTWARE\\Policies\\Microsoft\\Windows\\RemovableStorageDevices\\"
                 "{53f5630d-b6bf-11d0-94f2-00a0c91efb8b}", "name": "Deny_Write", "type": "dword", "data": 1}]},
     "USB-003", "HKLM:\\SOFTWARE\\Policies\\Microsoft\\Windows\\RemovableStorageDevices\\"
                "{53f5630d-b6bf-11d0-94f2-00a0c91efb8b}\\Deny_Write is set (1) but belongs to another mode"),
    ("vpn", {"service": {"name": "WireGuardTunnel$wg0", "status": "Stopped"}}, "VPN-001",
     "the tunnel service WireGuardTunnel$wg0 is Stopped"),
    ("vpn", {"config_private": False}, "VPN-001",
     "the tunnel configuration (it holds the private key) is readable beyond SYSTEM and Administrators"),
    ("vpn", {"peers": [{**POSTURE["vpn"]["peers"][0], "latest_handshake_age": 900}]}, "VPN-002",
     "last handshake 900 s ago (more than 180 s)"),
    ("agent", {"timer_enabled": False}, "AGT-001", "scheduled task deskguard-agent is not enabled and active"),
    ("agent", {"last_run_result": 2147942402}, "AGT-001", "the agent's last scheduled run failed (result 2147942402)"),
    ("network", {"uplink": {"interface": "Ethernet 3", "kind": "usb_tether", "driver": "usb8023.sys",
                            "usb_id": "18d1:4ee4", "present": True}},
     "NET-001", "Connected through a phone's USB tethering (driver usb8023.sys, USB id 18d1:4ee4)."),
]


@pytest.mark.parametrize("section,values,cid,evidence", BROKEN, ids=[f"{b[2]}-{i}" for i, b in enumerate(BROKEN)])
def test_each_broken_windows_setting_fails_its_control_with_the_observed_value(escrowed, section, values, cid,
                                                                               evidence):
    results = escrowed(changed(section, **values))
    assert results[cid].status == "fail", results[cid]
    assert evidence in results[cid].evidence, results[cid].evidence
    others = {c for c, r in results.items() if r.status not in ("pass", "not_applicable")}
    assert others == {cid}, others


def test_unescrowed_and_foreign_protectors_fail_enc_003(escrowed):
    volume = POSTURE["disk"]["volumes"][0]
    extra = [{"id": "{11111111-2222-4333-8444-555555555555}", "type": "RecoveryPassword"},
             {"id": "{99999999-2222-4333-8444-555555555555}", "type": "ExternalKey"}]
    results = escrowed(changed("disk", volumes=[{**volume, "protectors": volume["protectors"] + extra}]))
    assert results["ENC-003"].status == "fail"
    assert results["ENC-003"].evidence == [
        "C:: recovery password protector {11111111-2222-4333-8444-555555555555} is not in the escrow record",
        "C:: ExternalKey protector {99999999-2222-4333-8444-555555555555} is a key outside the escrow"]
    assert results["ENC-001"].status == results["ENC-002"].status == "pass"


def test_an_escrowed_protector_missing_from_the_volume_fails_enc_002(escrowed):
    volume = POSTURE["disk"]["volumes"][0]
    other = [{"id": "{0B9C8D7E-1111-4111-8111-0000000000A1}", "type": "Tpm"}]
    results = escrowed(changed("disk", volumes=[{**volume, "protectors": other}]))
    assert results["ENC-002"].status == "fail"
    assert any("no longer on the volume" in line for line in results["ENC-002"].evidence)


def test_a_home_edition_fails_enc_001(escrowed):
    home = {"edition": {"name": "Home", "edition_id": "Core", "build": "22631", "bitlocker_capable": False},
            "tpm": {"present": True, "ready": True}, "volumes": []}
    results = escrowed(changed("disk", **home))
    assert results["ENC-001"].status == "fail"
    assert results["ENC-001"].evidence[0].startswith("Windows Home cannot use BitLocker")


def test_a_section_that_failed_on_windows_is_an_error_and_the_others_still_count(escrowed):
    posture = {k: v for k, v in POSTURE.items() if k != "usb"}
    results = escrowed(posture, {"usb": "CimException: access denied"})
    assert {cid for cid, r in results.items() if r.status == "error"} == {"USB-001", "USB-002", "USB-003"}
    assert results["USB-001"].evidence == ["usb not collected: CimException: access denied"]
    assert results["FW-001"].status == "pass"


def test_the_ikev2_client_is_judged_from_get_vpnconnection(escrowed):
    ikev2 = {"interface": "wg0", "client": "ikev2", "configured": True,
             "ikev2": {"name": "deskguard-wg0", "server": "vpn.example.com", "tunnel_type": "Ikev2",
                       "status": "Disconnected", "split_tunneling": True}}
    posture = {**POSTURE, "vpn": ikev2}
    results = escrowed(posture, policy={"vpn_windows_client": "ikev2", "vpn_windows_ikev2_server": "vpn.example.com"})
    assert results["VPN-001"].status == "pass"
    assert results["VPN-002"].status == "fail" and results["VPN-002"].evidence == ["the IKEv2 connection is Disconnected"]


def test_the_update_policy_judged_is_the_one_the_role_writes():
    golden = json.loads((REPO / "tests" / "windows" / "golden" / "auto_update.json").read_text())
    written = {c["args"]["name"]: c["args"]["data"] for c in golden if c["module"].endswith("win_regedit")}
    assert windows.update_policy(effective({})) == written


# ---------------------------------------------------------------------------- one name, two implementations

def test_every_posture_section_util_is_required_and_in_the_table():
    """Adding a section is one `#Requires -Module` line in the module plus one entry in the collection's table:
    this keeps the three in step (the util file, its line, its entry) and the Windows sections a superset of
    the Linux ones."""
    from deskguard.site import module_utils

    text = MODULE.read_text()
    required = set(re.findall(r"(?m)^#Requires -Module (Ansible\.ModuleUtils\.DeskguardPosture\w+)$", text))
    assert required == {name[:-len(".psm1")] for name in SECTION_UTILS}
    assert f"#Requires -Module {COLLECT.stem}" in text.splitlines()
    table = dict(re.findall(r"(?m)^    (\w+) = '(Get-DeskguardPosture\w+)'$", COLLECT.read_text()))
    assert set(module_utils("deskguard_posture").COLLECTORS) <= set(table)
    for util in SECTION_UTILS:
        section_fn = "Get-" + util[len("Ansible.ModuleUtils."):-len(".psm1")]
        util_text = (REPO / "plugins" / "module_utils" / util).read_text()
        assert section_fn in table.values(), f"{util}: {section_fn} is not in the collection's table"
        assert re.search(rf"(?mi)^function {section_fn}\b", util_text), f"{util} does not define {section_fn}"
        # New-Module exports every function unless the util names its exports; then the section must be one.
        exports = re.findall(r"(?m)^Export-ModuleMember -Function (.*)$", util_text)
        assert not exports or any(re.search(rf"\b{section_fn}\b", e) for e in exports), util


def test_a_non_powershell_connection_runs_the_linux_module():
    """With the `local` connection (ssh's sh shell alike: no '.ps1' preference) Ansible takes the first file
    named deskguard_posture in its library folders; plugins/modules holds only the .py, so it is always that."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    proc = subprocess.run([str(Path(sys.executable).with_name("ansible")), "localhost", "-c", "local", "-i",
                           "localhost,", "-e", f"ansible_python_interpreter={sys.executable}",
                           "-m", "deskguard_posture", "-a", "sections=os", "-o"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout.split("=>", 1)[1])
    assert "family" not in result["posture"]["os"] and "kernel" in result["posture"]["os"]


def test_no_real_linux_module_shares_a_folder_with_its_powershell_twin():
    # Listing order decides between such twins for a non-PowerShell host (os.listdir, not sorted).
    for ps1 in (REPO / "plugins" / "modules").glob("*.ps1"):
        twin = ps1.with_suffix(".py")
        assert not (twin.exists() and "AnsibleModule(" in twin.read_text()), \
            f"{ps1.name} must live in plugins/modules_windows: {twin.name} is a real Linux module"


def test_allow_listed_mode_judges_the_allow_lists_against_the_approved_devices(escrowed):
    """The registry as the role writes it for allow_listed (windows_usb_values) passes; a list that misses an
    approved stick fails USB-002 and nothing else."""
    from deskguard.site import module_utils

    policy = {"usb_control_mode": "allow_listed", "usb_control_approved_devices": [{"id": "0951:1666"}]}
    written = module_utils("deskguard_usb_windows").windows_usb_values("allow_listed", [{"id": "0951:1666"}])
    values = [dict(v) for v in written["present"] + written["list_values"]]
    results = escrowed(changed("usb", values=values), policy=policy)
    assert {cid: results[cid].status for cid in ("USB-001", "USB-002", "USB-003")} == \
        {"USB-001": "pass", "USB-002": "pass", "USB-003": "pass"}
    short = [v for v in values if not v["path"].endswith("\\AllowDeviceIDs")]
    results = escrowed(changed("usb", values=short), policy=policy)
    assert {cid: results[cid].status for cid in ("USB-001", "USB-002", "USB-003")} == \
        {"USB-001": "pass", "USB-002": "fail", "USB-003": "pass"}
    assert results["USB-002"].evidence == ["HKLM:\\SOFTWARE\\Policies\\Microsoft\\Windows\\DeviceInstall\\Restrictions"
                                           "\\AllowDeviceIDs lists nothing, policy wants USB\\VID_0951&PID_1666"]
