"""Golden tests: each role's Windows path, run by Ansible's winrm connection against the loopback responder,
sends exactly the module invocations in tests/windows/golden/*.json (regenerate: DESKGUARD_UPDATE_GOLDEN=1).
They pin what the kit asks Windows to do; whether Windows does it is not verified here (docs/windows.md)."""

from __future__ import annotations

import json

import pytest
from golden import GOLDEN, golden_diff

pytestmark = pytest.mark.windows

ROLES = ["screen_lock", "firewall", "auto_update", "software_policy"]
ENC_DEFAULTS = {"disk_encryption_enabled": True, "disk_encryption_windows_method": "XtsAes256",
                "disk_encryption_windows_protector": "tpm"}
CAPABLE = {"changed": False, "edition": {"name": "Professional", "edition_id": "Professional", "build": "22631",
                                         "bitlocker_capable": True},
           "tpm": {"present": True, "ready": True}, "volumes": [], "findings": ["OS volume is not encrypted"]}


def assert_golden(name, calls):
    diff = golden_diff(name, calls)
    if diff is not None:
        pytest.fail(diff, pytrace=False)  # the diff alone, without a repr of it


@pytest.mark.parametrize("role", ROLES)
def test_role_windows_path_matches_golden(role, responder, play):
    play("role.yml", deskguard_test_role=role)
    assert responder.calls, f"{role} sent no module to Windows"
    assert_golden(role, responder.calls)


# win_reg_stat always answers `exists`: here no list key exists yet (a laptop never managed before).
NO_KEY = {"changed": False, "exists": False}


@pytest.mark.parametrize("mode", ["block", "read_only", "allow_listed"])
def test_usb_control_windows_path_matches_golden(mode, responder, play):
    """block: deny all removable storage; read_only: deny write; allow_listed: disk drives and portable devices
    denied by class, the approved stick's hardware ID allowed. Keyboards and mice are in no deny list."""
    responder.answers["win_reg_stat"] = NO_KEY
    play("role.yml", deskguard_test_role="usb_control", usb_control_mode=mode,
         usb_control_approved_devices=[{"id": "0951:1666", "serial": "E0D55EA573DCF450", "reason": "company stick"}])
    assert_golden(f"usb_control_{mode}", responder.calls)
    sent = json.dumps([c.args for c in responder.calls])
    assert ("VID_0951&PID_1666" in sent) == (mode == "allow_listed"), sent
    assert "Keyboard" not in sent and "Mouse" not in sent


def test_usb_control_removes_a_stale_device_list_whole_before_writing_it(responder, play):
    # An allow list left from an earlier policy (another stick): removed whole, so no numbered entry lingers.
    responder.answers["win_reg_stat"] = {"changed": False, "exists": True,
                                         "properties": {"1": {"value": "USB\\VID_1234&PID_5678\\OLD", "type": "REG_SZ"},
                                                        "2": {"value": "USB\\VID_1234&PID_5678\\OLDER", "type": "REG_SZ"}}}
    play("role.yml", deskguard_test_role="usb_control", usb_control_mode="allow_listed",
         usb_control_approved_devices=[{"id": "0951:1666", "serial": "E0D55EA573DCF450", "reason": "company stick"}])
    removed = [c.args["path"] for c in responder.calls if c.short == "win_regedit" and c.args.get("delete_key")]
    assert any(p.endswith("\\AllowInstanceIDs") for p in removed), removed


def test_a_changed_policy_value_is_a_golden_mismatch(responder, play):
    # The policy says 10 idle minutes instead of 5: the golden file (300 s) must no longer match.
    play("role.yml", deskguard_test_role="screen_lock", screen_lock_idle_minutes=10)
    diff = golden_diff("screen_lock", responder.calls, update=False)  # never rewrite the golden file here
    assert diff is not None
    assert '-      "data": 300,' in diff and '+      "data": 600,' in diff, diff


ADDED = {"changed": True, "protector_id": "{00000000-0000-4000-8000-000000000001}", "verified": True}


def test_disk_encryption_windows_matches_golden(responder, play, enc_site):
    responder.answers[("deskguard_bitlocker", "inventory")] = CAPABLE
    responder.answers[("deskguard_bitlocker", "add_recovery")] = ADDED
    responder.answers[("deskguard_bitlocker", "enable")] = {"changed": True, "volume_status": "FullyDecrypted",
                                                            "encryption_percentage": 0.0,
                                                            "hardware_test_pending": True}
    play("disk_encryption.yml", deskguard_device_uuid=enc_site[1], **ENC_DEFAULTS)
    assert_golden("disk_encryption", responder.calls)
    fve = {c.args["name"]: c.args["data"] for c in responder.calls if c.short == "win_regedit"}
    assert fve["EncryptionMethodWithXtsOs"] == 7 and fve["UseTPMPIN"] == 2 and fve["UseTPM"] == 2


def test_disk_encryption_tpm_pin_keeps_the_pin_out_of_the_golden_file(responder, play, enc_site):
    responder.answers[("deskguard_bitlocker", "inventory")] = CAPABLE
    responder.answers[("deskguard_bitlocker", "add_recovery")] = ADDED
    play("disk_encryption.yml", deskguard_device_uuid=enc_site[1], **{**ENC_DEFAULTS, "disk_encryption_windows_protector": "tpm_pin",
                                   "disk_encryption_windows_pin": "482916"})
    enable = [c for c in responder.calls if c.args.get("state") == "enable"]
    assert enable and enable[0].args["pin"] == "482916" and enable[0].no_log  # the module got it, in memory
    assert_golden("disk_encryption_tpm_pin", responder.calls)
    assert "482916" not in (GOLDEN / "disk_encryption_tpm_pin.json").read_text()


def test_disk_encryption_on_home_edition_only_takes_inventory(responder, play, enc_site):
    responder.answers[("deskguard_bitlocker", "inventory")] = {
        **CAPABLE, "edition": {"name": "Home", "edition_id": "Core", "build": "22631", "bitlocker_capable": False},
        "findings": ["edition Home cannot use BitLocker"]}
    play("disk_encryption.yml", deskguard_device_uuid=enc_site[1], **ENC_DEFAULTS)
    states = [c.args.get("state") for c in responder.calls if c.short == "deskguard_bitlocker"]
    assert states == ["inventory"]


def test_disk_encryption_fails_when_the_module_refuses_to_enable(responder, play, enc_site):
    # What the module answers without a recovery-password protector: the play must stop, loudly.
    responder.answers[("deskguard_bitlocker", "inventory")] = CAPABLE
    refusal = "refusing to enable BitLocker on C:: it has no recovery-password protector; escrow one first (ENC-002)"
    responder.answers[("deskguard_bitlocker", "add_recovery")] = ADDED
    responder.answers[("deskguard_bitlocker", "enable")] = {"failed": True, "changed": False, "msg": refusal}
    proc = play("disk_encryption.yml", expect_rc=2, deskguard_device_uuid=enc_site[1], **ENC_DEFAULTS)
    assert "no recovery-password protector" in proc.stdout


def test_golden_files_are_valid_and_free_of_secrets():
    files = sorted(GOLDEN.glob("*.json"))
    assert {f.stem for f in files} >= set(ROLES) | {"disk_encryption", "disk_encryption_tpm_pin"}
    for path in files:
        for call in json.loads(path.read_text()):
            for key in ("recovery_password", "pin", "password"):
                assert call["args"].get(key) in (None, "<no_log>"), f"{path.name}: {key} in clear"


def test_disk_encryption_check_mode_probes_for_real_and_changes_nothing(responder, play, enc_site):
    responder.answers[("deskguard_bitlocker", "inventory")] = CAPABLE
    play("disk_encryption.yml", check=True, deskguard_device_uuid=enc_site[1], **ENC_DEFAULTS)
    modes = {(c.short, c.args.get("state")): c.check_mode for c in responder.calls}
    # The inventory runs for real (check_mode: false) so the play sees the truth; everything else is a dry run.
    assert modes == {("win_regedit", None): True, ("deskguard_bitlocker", "inventory"): False,
                     ("deskguard_bitlocker", "enable"): True}


SW_POLICY = {"software_policy_denied_windows_software": [{"name": "AnyDesk*"},
                                                          {"name": "TeamViewer*", "product_code": "{0F0E0D0C-1111-2222-3333-444455556666}"}],
             "software_policy_url_blocklist": ["games.example"],
             "software_policy_browser_extension_allowlist": ["aaaabbbbccccddddeeeeffffgggghhhh"],
             "software_policy_firefox_extension_allowlist": ["sip@corp.example"],
             "software_policy_doh_resolver": "https://dns.corp.example/dns-query"}


def test_software_policy_with_a_denylist_and_a_resolver_matches_golden(responder, play):
    play("role.yml", deskguard_test_role="software_policy", **SW_POLICY)
    assert_golden("software_policy_full", responder.calls)
    browser = next(c for c in responder.calls if c.short == "win_powershell" and "Values" in c.args["parameters"])
    values = {(v["key"].rsplit("\\", 1)[-1], v["name"]): v["data"] for v in json.loads(browser.args["parameters"]["Values"])}
    assert values[("Chrome", "DnsOverHttpsMode")] == "secure" and values[("Edge", "SmartScreenEnabled")] == 1
    assert values[("DNSOverHTTPS", "ProviderURL")] == "https://dns.corp.example/dns-query"
    assert json.loads(values[("Firefox", "ExtensionSettings")]) == {
        "*": {"installation_mode": "blocked"}, "sip@corp.example": {"installation_mode": "allowed"}}
    lists = {v["key"]: v["items"] for v in json.loads(browser.args["parameters"]["Lists"])}
    assert lists["HKLM:\\SOFTWARE\\Policies\\Google\\Chrome\\ExtensionInstallBlocklist"] == ["*"]
    assert lists["HKLM:\\SOFTWARE\\Policies\\Mozilla\\Firefox\\WebsiteFilter\\Block"] == ["*://*.games.example/*"]
    defender = next(c for c in responder.calls if c.short == "win_regedit")
    assert defender.args["name"] == "DisableRealtimeMonitoring" and defender.args["data"] == 0


def test_accounts_windows_path_matches_golden(responder, play):
    play("role.yml", deskguard_test_role="accounts", deskguard_operator="tanaka")
    assert_golden("accounts", responder.calls)
    policy = {c.args["key"]: c.args["value"] for c in responder.calls if c.short == "win_security_policy"}
    # Lockout times are minutes on Windows: 900 s -> 15.
    assert policy == {"MinimumPasswordLength": 12, "PasswordComplexity": 1, "PasswordHistorySize": 5,
                      "LockoutBadCount": 5, "ResetLockoutCount": 15, "LockoutDuration": 15}


def test_accounts_refuses_the_management_account_as_operator_before_any_windows_call(responder, play):
    proc = play("role.yml", expect_rc=2, deskguard_test_role="accounts", deskguard_operator="deskguard-test")
    assert "is also the management account" in proc.stdout
    assert responder.calls == []
