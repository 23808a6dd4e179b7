"""ACC-001..005 judged from the `accounts` posture section, Linux (deskguard_accounts.py) or Windows
(Ansible.ModuleUtils.DeskguardPostureAccounts.psm1): the keys mean the same on both; a key one OS does not
have is absent (sshd on Windows, the PAM wiring there) and not held against it."""

from __future__ import annotations

from .results import _check
from .wording import shown


def _limits(policy: dict) -> dict:
    return {k: int(policy.get(f"accounts_{k}", d)) for k, d in (
        ("password_minlen", 12), ("password_minclass", 3), ("password_remember", 5), ("lockout_deny", 5),
        ("lockout_unlock_seconds", 900))}


def operator_standard(p: dict, policy: dict, _posture: dict | None = None):
    observed = {k: p.get(k) for k in ("operator", "operator_exists", "operator_privileged_groups",
                                      "operator_sudo_rules")}
    expected = {"operator_exists": True, "operator_privileged_groups": [], "operator_sudo_rules": []}
    problems = []
    if not p.get("operator"):
        problems.append("no operator is recorded for this laptop (deskguard_operator)")
    elif not p.get("operator_exists"):
        problems.append(f"the operator account {shown(p['operator'])} does not exist on the laptop")
    for group in p.get("operator_privileged_groups") or []:
        problems.append(f"the operator is in the privileged group {group!r}")
    for rule in p.get("operator_sudo_rules") or []:
        problems.append(f"sudo grants the operator: {rule}")
    return _check("ACC-001", observed, expected, problems)


def passwords(p: dict, policy: dict, _posture: dict | None = None):
    want = _limits(policy)
    windows = "password_complexity" in p
    expected = {"password_minlen": f">= {want['password_minlen']}", "password_remember": f">= {want['password_remember']}",
                ("password_complexity" if windows else "password_minclass"):
                True if windows else f">= {want['password_minclass']}"}
    keys = ("password_minlen", "password_minclass", "password_complexity", "password_remember",
            "password_quality_in_pam", "password_history_in_pam")
    observed = {k: p.get(k) for k in keys if k in p}
    problems = []
    for key, name in (("password_minlen", "minimum length"), ("password_remember", "remembered passwords")):
        value, least = p.get(key), want[key]
        if not isinstance(value, int) or value < least:
            problems.append(f"{name} is {shown(value)}, the policy wants at least {least}")
    if windows:
        if want["password_minclass"] >= 3 and p.get("password_complexity") is not True:
            problems.append("password complexity is off")
    else:
        value = p.get("password_minclass")
        if not isinstance(value, int) or value < want["password_minclass"]:
            problems.append(f"character classes required: {shown(value)}, the policy wants {want['password_minclass']}")
        if p.get("password_quality_in_pam") is False:
            problems.append("pam_pwquality is not in the password stack (its settings are not used)")
        if p.get("password_history_in_pam") is False:
            problems.append("pam_pwhistory is not in the password stack (old passwords can be reused)")
    return _check("ACC-002", observed, expected, problems)


def lockout(p: dict, policy: dict, _posture: dict | None = None):
    want = _limits(policy)
    expected = {"lockout_deny": f"1..{want['lockout_deny']}",
                "lockout_unlock_seconds": f"0 (admin unlocks) or >= {want['lockout_unlock_seconds']}"}
    observed = {k: p.get(k) for k in ("lockout_deny", "lockout_unlock_seconds", "lockout_in_pam") if k in p}
    problems = []
    deny, unlock = p.get("lockout_deny"), p.get("lockout_unlock_seconds")
    if not isinstance(deny, int) or not 0 < deny <= want["lockout_deny"]:
        problems.append(f"accounts lock after {shown(deny)} failures, the policy wants 1..{want['lockout_deny']}"
                        if isinstance(deny, int) and deny > 0 else
                        f"the failed-login limit is {shown(deny)}, the policy wants 1..{want['lockout_deny']}")
    if not isinstance(unlock, int) or 0 < unlock < want["lockout_unlock_seconds"]:
        problems.append((f"a locked account unlocks after {unlock} s" if isinstance(unlock, int) else
                         f"the unlock time is {shown(unlock)}")
                        + f", the policy wants 0 (an administrator unlocks) or at least {want['lockout_unlock_seconds']} s")
    if p.get("lockout_in_pam") is False:
        problems.append("pam_faillock is not in the login stack (preauth and authfail): nothing is counted")
    return _check("ACC-003", observed, expected, problems)


def login_screen(p: dict, policy: dict, _posture: dict | None = None):
    observed = {k: p.get(k) for k in ("autologin_enabled", "autologin_users", "guest_enabled")}
    expected = {"autologin_enabled": False, "guest_enabled": False}
    problems = []
    if p.get("autologin_enabled") is not False:
        problems.append("automatic login is on" + (f" ({', '.join(p['autologin_users'])})"
                                                   if p.get("autologin_users") else ""))
    if p.get("guest_enabled") is not False:
        problems.append("a guest session or an enabled guest account exists")
    return _check("ACC-004", observed, expected, problems)


def management_channel(p: dict, policy: dict, _posture: dict | None = None):
    if p.get("management_channel") == "winrm":
        return _winrm_channel(p)
    sshd = p.get("sshd")
    allow = sorted(str(u) for u in policy.get("accounts_ssh_allow_users") or [])
    expected = {"permitrootlogin": "no", "passwordauthentication": "no", "kbdinteractiveauthentication": "no",
                "pubkeyauthentication": "yes", "management_authorized_keys": ">= 1",
                "allowusers": allow or "any (not restricted by the policy)"}
    observed = {"sshd": sshd, "management_user": p.get("management_user"),
                "management_authorized_keys": p.get("management_authorized_keys")}
    problems = []
    if sshd is None:
        problems.append("sshd's effective settings could not be read (sshd -T failed)")
    else:
        for key in ("permitrootlogin", "passwordauthentication", "kbdinteractiveauthentication"):
            if sshd.get(key) != "no":
                problems.append(f"sshd {key} is {shown(sshd.get(key))}, not 'no'")
        if sshd.get("pubkeyauthentication") != "yes":
            problems.append("sshd does not accept keys (pubkeyauthentication)")
        if allow and sorted(sshd.get("allowusers") or []) != allow:
            problems.append(f"sshd AllowUsers is {shown(sshd.get('allowusers'))}, the policy says {shown(allow)}")
    if not p.get("management_exists"):
        problems.append(f"the management account {p['management_user']!r} does not exist" if p.get("management_user")
                        else "the management account is not named (no management user recorded)")
    elif not p.get("management_authorized_keys"):
        problems.append("the management account has no authorized key")
    return _check("ACC-005", observed, expected, problems)


def _winrm_channel(p: dict):
    keys = ("management_user", "management_exists", "management_is_admin", "winrm_allow_unencrypted",
            "winrm_basic_auth")
    observed = {k: p.get(k) for k in keys}
    expected = {"management_exists": True, "management_is_admin": True, "winrm_allow_unencrypted": False,
                "winrm_basic_auth": False}
    problems = [f"{k} is {shown(p.get(k))}, expected {shown(v)}" for k, v in expected.items() if p.get(k) is not v]
    return _check("ACC-005", observed, expected, problems)


JUDGES = {"ACC-001": ("accounts", operator_standard), "ACC-002": ("accounts", passwords),
          "ACC-003": ("accounts", lockout), "ACC-004": ("accounts", login_screen),
          "ACC-005": ("accounts", management_channel)}
