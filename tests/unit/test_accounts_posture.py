"""The accounts posture section (module_utils/deskguard_accounts) on fixture trees, and the ACC judges on its
Linux and Windows shapes."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins" / "module_utils"))
import deskguard_accounts as da  # noqa: E402

from deskguard.compliance import accounts as judges  # noqa: E402
from deskguard.compliance.evaluate import evaluate  # noqa: E402
from deskguard.compliance.policy import effective, posture_params  # noqa: E402

pytestmark = pytest.mark.unit

SSHD_HARDENED = ("permitrootlogin no\npasswordauthentication no\nkbdinteractiveauthentication no\n"
                 "pubkeyauthentication yes\nauthorizedkeysfile .ssh/authorized_keys .ssh/authorized_keys2\n"
                 "port 22\n")


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


@pytest.fixture
def laptop(tmp_path, monkeypatch):
    """A hardened Debian laptop as the role leaves it: tanaka a standard user, dgadmin the management account."""
    root = tmp_path
    write(root, "etc/passwd", "root:x:0:0:root:/root:/bin/bash\ndgadmin:x:1000:1000::/home/dgadmin:/bin/bash\n"
                              "tanaka:x:1001:1001::/home/tanaka:/bin/bash\n")
    write(root, "etc/group", "root:x:0:\nsudo:x:27:\nadm:x:4:\ndgadmin:x:1000:\ntanaka:x:1001:\naudio:x:29:tanaka\n")
    write(root, "etc/shadow", "root:!:1::::::\ndgadmin:!:1::::::\ntanaka:$y$j9T$x:1::::::\n")
    write(root, "etc/sudoers", "Defaults env_reset\nroot ALL=(ALL:ALL) ALL\n%sudo ALL=(ALL:ALL) ALL\n"
                               "@includedir /etc/sudoers.d\n")
    write(root, "etc/sudoers.d/deskguard-management", "# managed\ndgadmin ALL=(ALL:ALL) NOPASSWD: ALL\n")
    write(root, "etc/sudoers.d/README", "# sudo skips files with a dot; this one has none but only comments\n")
    write(root, "home/dgadmin/.ssh/authorized_keys", "# lab\nssh-ed25519 AAAA lab\n")
    write(root, "etc/pam.d/common-auth", """\
        auth	requisite	pam_faillock.so preauth
        auth	[success=1 default=ignore]	pam_unix.so nullok
        auth	[default=die]	pam_faillock.so authfail
        auth	requisite	pam_deny.so
        auth	required	pam_permit.so
        """)
    write(root, "etc/pam.d/common-account", "account	required	pam_faillock.so\naccount	required	pam_unix.so\n")
    write(root, "etc/pam.d/common-password", """\
        password	requisite	pam_pwquality.so retry=3
        password	requisite	pam_pwhistory.so remember=5 enforce_for_root use_authtok
        password	[success=1 default=ignore]	pam_unix.so obscure use_authtok try_first_pass yescrypt
        """)
    write(root, "etc/security/pwquality.conf", "# minlen = 8\n")
    write(root, "etc/security/pwquality.conf.d/50-deskguard.conf", "minlen = 12\nminclass = 3\nretry = 3\n"
                                                                    "enforce_for_root\n")
    write(root, "etc/security/faillock.conf", "deny = 5\nfail_interval = 900\nunlock_time = 900\n")
    write(root, "etc/gdm3/daemon.conf", "[daemon]\nAutomaticLoginEnable=false\n# AutomaticLogin=user1\n")
    monkeypatch.setattr(da, "run", lambda argv, timeout=10: (0, SSHD_HARDENED))
    return root


def collect(root, operator="tanaka", manager="dgadmin"):
    return da.collect(str(root), {"operator": operator, "management_user": manager})


POLICY = effective({"deskguard_operator": "tanaka", "ansible_user": "dgadmin"})


def statuses(section, policy=POLICY):
    return {cid: judge(section, policy, {}).status for cid, (_s, judge) in judges.JUDGES.items()}


def test_a_hardened_laptop_reads_as_such_and_passes_every_acc_control(laptop):
    got = collect(laptop)
    assert got["operator_exists"] and got["operator_groups"] == ["audio", "tanaka"]
    assert got["operator_privileged_groups"] == [] and got["operator_sudo_rules"] == []
    assert (got["password_minlen"], got["password_minclass"], got["password_remember"]) == (12, 3, 5)
    assert got["password_quality_in_pam"] and got["password_history_in_pam"] and got["lockout_in_pam"]
    assert (got["lockout_deny"], got["lockout_unlock_seconds"]) == (5, 900)
    assert got["autologin_enabled"] is False and got["guest_enabled"] is False
    assert got["sshd"]["permitrootlogin"] == "no" and got["sshd"]["allowusers"] == []
    assert got["management_authorized_keys"] == 1 and got["management_sudo_rules"] == 1
    assert set(statuses(got).values()) == {"pass"}


def test_operator_in_sudo_and_a_sudo_rule_naming_it_fail_acc_001(laptop):
    write(laptop, "etc/group", "root:x:0:\nsudo:x:27:dgadmin,tanaka\ndgadmin:x:1000:\ntanaka:x:1001:\n")
    write(laptop, "etc/sudoers.d/tanaka", "tanaka ALL=(root) /usr/bin/apt\n")
    got = collect(laptop)
    assert got["operator_privileged_groups"] == ["sudo"]
    assert got["operator_sudo_rules"] == ["etc/sudoers: %sudo ALL=(ALL:ALL) ALL",
                                          "etc/sudoers.d/tanaka: tanaka ALL=(root) /usr/bin/apt"]
    result = judges.operator_standard(got, POLICY)
    assert result.status == "fail"
    assert "the operator is in the privileged group 'sudo'" in result.evidence


def test_sudo_skips_include_files_with_a_dot_and_so_does_the_collector(laptop):
    write(laptop, "etc/sudoers.d/tanaka.disabled", "tanaka ALL=(ALL) ALL\n")
    assert collect(laptop)["operator_sudo_rules"] == []


def test_an_operator_missing_from_the_laptop_fails_acc_001_with_its_name(laptop):
    got = collect(laptop, operator="suzuki")
    assert got["operator_exists"] is False
    result = judges.operator_standard(got, POLICY)
    assert result.status == "fail" and "'suzuki' does not exist" in result.evidence[0]


def test_pam_arguments_override_the_configuration_files(laptop):
    write(laptop, "etc/pam.d/common-password", "password requisite pam_pwquality.so retry=3 minlen=8\n"
                                               "password [success=1 default=ignore] pam_unix.so\n")
    got = collect(laptop)
    assert got["password_minlen"] == 8 and got["password_history_in_pam"] is False
    result = judges.passwords(got, POLICY)
    assert result.status == "fail"
    assert "minimum length is 8, the policy wants at least 12" in result.evidence
    assert any("pam_pwhistory is not in the password stack" in e for e in result.evidence)


def test_faillock_without_authfail_counts_nothing(laptop):
    write(laptop, "etc/pam.d/common-auth", "auth requisite pam_faillock.so preauth\nauth required pam_unix.so\n")
    got = collect(laptop)
    assert got["lockout_in_pam"] is False
    assert judges.lockout(got, POLICY).status == "fail"


def test_a_lax_lockout_fails_acc_003(laptop):
    write(laptop, "etc/security/faillock.conf", "deny = 50\nunlock_time = 60\n")
    result = judges.lockout(collect(laptop), POLICY)
    assert result.status == "fail" and len(result.evidence) == 2


def test_gdm_autologin_and_a_lightdm_guest_fail_acc_004(laptop):
    write(laptop, "etc/gdm3/daemon.conf", "[daemon]\nAutomaticLoginEnable=True\nAutomaticLogin=tanaka\n")
    write(laptop, "usr/share/lightdm/lightdm.conf.d/50-guest.conf", "[Seat:*]\nallow-guest=true\n")
    got = collect(laptop)
    assert got["autologin_users"] == ["tanaka"] and got["guest_enabled"] is True
    result = judges.login_screen(got, POLICY)
    assert result.status == "fail" and "automatic login is on (tanaka)" in result.evidence


def test_a_later_lightdm_drop_in_turns_the_guest_off_again(laptop):
    write(laptop, "usr/share/lightdm/lightdm.conf.d/50-guest.conf", "[Seat:*]\nallow-guest=true\n")
    write(laptop, "etc/lightdm/lightdm.conf.d/50-deskguard-accounts.conf", "[Seat:*]\nautologin-user=\n"
                                                                           "allow-guest=false\n")
    got = collect(laptop)
    assert got["guest_enabled"] is False and got["autologin_enabled"] is False


def test_an_unlocked_guest_account_counts_as_a_guest(laptop):
    with open(laptop / "etc/passwd", "a") as fh:
        fh.write("guest:x:1002:1002::/home/guest:/bin/bash\n")
    with open(laptop / "etc/shadow", "a") as fh:
        fh.write("guest:$y$abc:1::::::\n")
    assert collect(laptop)["guest_account_enabled"] is True


def test_passwords_on_sshd_and_root_login_fail_acc_005(laptop, monkeypatch):
    monkeypatch.setattr(da, "run", lambda argv, timeout=10: (0, SSHD_HARDENED.replace(
        "permitrootlogin no", "permitrootlogin without-password").replace("passwordauthentication no",
                                                                          "passwordauthentication yes")))
    result = judges.management_channel(collect(laptop), POLICY)
    assert result.status == "fail"
    assert result.evidence == ["sshd permitrootlogin is 'without-password', not 'no'",
                               "sshd passwordauthentication is 'yes', not 'no'"]


def test_sshd_unreadable_and_no_management_key_fail_acc_005(laptop, monkeypatch):
    monkeypatch.setattr(da, "run", lambda argv, timeout=10: (255, ""))
    (laptop / "home/dgadmin/.ssh/authorized_keys").write_text("# no key left\n")
    got = collect(laptop)
    assert got["sshd"] is None and got["management_authorized_keys"] == 0
    evidence = judges.management_channel(got, POLICY).evidence
    assert evidence == ["sshd's effective settings could not be read (sshd -T failed)",
                        "the management account has no authorized key"]


def test_allow_users_in_the_policy_must_be_what_sshd_runs(laptop, monkeypatch):
    policy = dict(POLICY, accounts_ssh_allow_users=["dgadmin"])
    assert judges.management_channel(collect(laptop), policy).status == "fail"
    monkeypatch.setattr(da, "run", lambda argv, timeout=10: (0, SSHD_HARDENED + "allowusers dgadmin\n"))
    assert judges.management_channel(collect(laptop), policy).status == "pass"


WINDOWS_GOOD = {"operator": "tanaka", "operator_exists": True, "operator_groups": ["Users"],
                "operator_privileged_groups": [], "password_minlen": 14, "password_complexity": True,
                "password_remember": 24, "lockout_deny": 5, "lockout_unlock_seconds": 900,
                "autologin_enabled": False, "autologin_users": [], "guest_enabled": False,
                "management_channel": "winrm", "management_user": "dgadmin", "management_exists": True,
                "management_is_admin": True, "winrm_allow_unencrypted": False, "winrm_basic_auth": False}


def test_the_windows_shape_passes_when_hardened():
    assert set(statuses(WINDOWS_GOOD).values()) == {"pass"}


@pytest.mark.parametrize("change,control", [
    ({"operator_privileged_groups": ["Administrators"]}, "ACC-001"),
    ({"password_complexity": False}, "ACC-002"),
    ({"lockout_deny": 0}, "ACC-003"),
    ({"autologin_enabled": True, "autologin_users": ["tanaka"]}, "ACC-004"),
    ({"winrm_basic_auth": True}, "ACC-005"),
])
def test_each_windows_weakness_fails_its_control_alone(change, control):
    got = statuses({**WINDOWS_GOOD, **change})
    assert {cid for cid, s in got.items() if s == "fail"} == {control}


def test_the_nightly_evaluation_scores_acc_controls_from_the_section(laptop):
    posture = {"accounts": collect(laptop)}
    results = {r.id: r for r in evaluate("lap-1", posture, {}, POLICY)}
    assert {cid: results[cid].status for cid in judges.JUDGES} == dict.fromkeys(judges.JUDGES, "pass")
    assert results["ACC-001"].title.startswith("Operator is a standard user")
    off = {r.id: r.status for r in evaluate("lap-1", posture, {}, dict(POLICY, accounts_enabled=False))}
    assert {off[cid] for cid in judges.JUDGES} == {"not_applicable"}
    missing = {r.id: r for r in evaluate("lap-1", {}, {"accounts": "OSError: boom"}, POLICY)}
    assert missing["ACC-003"].status == "error" and "boom" in missing["ACC-003"].evidence[0]


def test_posture_params_name_the_operator_and_the_management_account():
    assert posture_params(POLICY)["accounts"] == {"operator": "tanaka", "management_user": "dgadmin"}
    explicit = effective({"accounts_operator": "sato", "deskguard_operator": "tanaka", "ansible_user": "it"})
    assert posture_params(explicit)["accounts"] == {"operator": "sato", "management_user": "it"}
