"""The accounts policy refused or warned on the controller before any change (deskguard.site.accounts_policy, the
deskguard_accounts action through a real ansible-playbook run), and the laptop-side apply helpers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins" / "module_utils"))
import deskguard_accounts_apply as apply_mod  # noqa: E402

from deskguard.site import accounts_policy  # noqa: E402
from deskguard.compliance.policy import effective  # noqa: E402

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]
GOOD = effective({"deskguard_operator": "tanaka", "ansible_user": "dgadmin"})


def test_the_default_policy_with_an_operator_and_a_management_account_is_accepted_silently():
    assert accounts_policy.refusals(GOOD) == [] and accounts_policy.warnings(GOOD) == []


@pytest.mark.parametrize("change,words", [
    ({"ansible_user": "tanaka"}, "is also the management account"),
    ({"accounts_management_user": "tanaka"}, "is also the management account"),
    ({"ansible_user": "root"}, "the management account is root"),
    ({"accounts_ssh_allow_users": ["tanaka"]}, "leaves out the management account 'dgadmin'"),
    ({"accounts_ssh_allow_users": ["dgadmin", "tanaka"]}, "lets the standard user 'tanaka' in"),
    ({"accounts_standard_users": ["dgadmin"]}, "lists the management account 'dgadmin'"),
    ({"deskguard_operator": ""}, "no operator account"),
    ({"ansible_user": ""}, "no management account"),
])
def test_a_policy_that_costs_the_management_channel_is_refused(change, words):
    found = accounts_policy.refusals({**GOOD, **change})
    assert any(words in f for f in found), found


@pytest.mark.parametrize("change,words", [
    ({"accounts_password_minlen": 8}, "accounts_password_minlen is 8, below the kit's minimum of 12"),
    ({"accounts_password_remember": 0}, "accounts_password_remember is 0"),
    ({"accounts_password_minclass": 1}, "accounts_password_minclass is 1"),
    ({"accounts_lockout_deny": 0}, "accounts_lockout_deny is 0"),
    ({"accounts_lockout_unlock_seconds": 30}, "accounts_lockout_unlock_seconds is 30"),
])
def test_a_weaker_password_policy_is_warned_not_refused(change, words):
    policy = {**GOOD, **change}
    assert accounts_policy.refusals(policy) == []
    assert [w for w in accounts_policy.warnings(policy) if words in w]


def _preflight(tmp_path, **hostvars):
    """The role's preflight (the action plugin, controller side) in a real ansible-playbook run, on a host
    that does not exist: a refusal must come before any connection is tried."""
    inventory = tmp_path / "hosts.json"  # JSON is YAML: the host's variables as they are
    inventory.write_text(json.dumps({"all": {"hosts": {"lap-unreachable": {"ansible_host": "192.0.2.1",
                                                                           **hostvars}}}}))
    play = tmp_path / "play.yml"
    play.write_text("- hosts: all\n  gather_facts: false\n  tasks:\n"
                    "    - ansible.builtin.include_role: {name: accounts, tasks_from: preflight.yml}\n")
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_ROLES_PATH=str(REPO / "roles"),
               ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_TIMEOUT="3")
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory), str(play)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stdout + proc.stderr


def test_the_action_refuses_before_connecting(tmp_path):
    rc, out = _preflight(tmp_path, deskguard_operator="dgadmin", ansible_user="dgadmin")
    assert rc == 2, out
    assert "accounts policy refused, nothing changed" in out and "is also the management account" in out
    assert "UNREACHABLE" not in out  # it never tried the laptop


def test_the_action_warns_about_a_weak_policy_and_goes_on(tmp_path):
    rc, out = _preflight(tmp_path, deskguard_operator="tanaka", ansible_user="dgadmin", accounts_password_minlen=6)
    assert rc == 0, out
    assert "[WARNING]: accounts_password_minlen is 6, below the kit's minimum of 12" in out


def test_ini_values_are_replaced_in_place_and_missing_ones_added():
    text = "# GDM\n[daemon]\nAutomaticLoginEnable=True\nAutomaticLogin=tanaka\n\n[security]\n"
    got = apply_mod.set_ini_values(text, "daemon", {"AutomaticLoginEnable": "false", "TimedLoginEnable": "false"})
    assert got == ("# GDM\n[daemon]\nAutomaticLoginEnable=false\nAutomaticLogin=tanaka\n\nTimedLoginEnable=false\n"
                   "[security]\n")
    assert apply_mod.set_ini_values(got, "daemon", {"AutomaticLoginEnable": "false",
                                                    "TimedLoginEnable": "false"}) == got  # converged
    assert apply_mod.set_ini_values("", "daemon", {"A": "1"}) == "\n[daemon]\nA=1\n"


def test_pam_stacks_missing_a_module_are_named(tmp_path):
    (tmp_path / "etc/pam.d").mkdir(parents=True)
    (tmp_path / "etc/pam.d/common-auth").write_text("auth [success=1 default=ignore] pam_unix.so\n")
    missing = apply_mod._pam_missing(str(tmp_path), {"common-auth": ["pam_faillock.so", "pam_unix.so"],
                                                     "common-password": ["pam_pwhistory.so"]})
    assert missing == {"common-auth": ["pam_faillock.so"], "common-password": ["pam_pwhistory.so"]}


def test_an_operator_missing_from_the_laptop_is_one_clear_error():
    with pytest.raises(apply_mod.AccountsError) as exc:
        apply_mod.preconditions("no-such-operator-xyz", "root")
    assert str(exc.value).startswith("the operator account 'no-such-operator-xyz' does not exist on this laptop")


def test_a_management_account_without_a_key_is_refused(tmp_path, monkeypatch):
    import pwd

    me = pwd.getpwuid(os.getuid()).pw_name
    monkeypatch.setattr(apply_mod.deskguard_accounts, "run", lambda argv, timeout=10: (0, "authorizedkeysfile "
                                                                                        ".ssh/none-here\n"))
    with pytest.raises(apply_mod.AccountsError, match="has no authorized SSH key: turning password login off"):
        apply_mod.preconditions(me, me, root=str(tmp_path))


def test_the_rollback_script_puts_back_what_was_there_and_removes_what_was_new(tmp_path, monkeypatch):
    """The restore script the timer would run: the saved PAM file comes back, the new drop-in goes, sshd is
    reloaded. systemd-run is recorded, not run; the script itself runs for real with a stand-in systemctl."""
    pam, dropin = tmp_path / "common-auth", tmp_path / "00-deskguard-accounts.conf"
    pam.write_text("auth required pam_unix.so\n")
    armed = []
    monkeypatch.setattr(apply_mod, "ROLLBACK_DIR", str(tmp_path / "rollback"))
    monkeypatch.setattr(apply_mod, "_run", lambda argv, env=None: armed.append(argv) or "")
    with monkeypatch.context() as m:
        m.setattr(apply_mod.subprocess, "run", lambda *a, **k: None)  # systemctl stop / reset-failed
        script = apply_mod.arm_rollback([str(pam), str(dropin)], 300, "ssh")
    assert armed == [["systemd-run", "--unit", "deskguard-accounts-rollback", "--on-active=300s",
                      "--description=deskguard: undo the accounts change unless the management channel was "
                      "confirmed", "/bin/sh", script]]
    pam.write_text("auth requisite pam_faillock.so preauth\n")   # the change the guard could not confirm
    dropin.write_text("PasswordAuthentication no\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path}/systemctl.log\n")
    (bin_dir / "systemctl").chmod(0o755)
    subprocess.run(["/bin/sh", script], check=True, env=dict(os.environ, PATH=f"{bin_dir}:/usr/bin:/bin"))
    assert pam.read_text() == "auth required pam_unix.so\n" and not dropin.exists()
    assert (tmp_path / "systemctl.log").read_text() == "reload-or-restart ssh\n"
