# -*- coding: utf-8 -*-
"""The `accounts` posture section (ACC-001..005): who may do what on a Linux laptop, read only.

Stdlib only. Every file is read under `root`, so unit tests run it on a fixture tree; the two commands it
runs (`sshd -T` for sshd's effective settings) go through `run`, which tests replace. What is read is the
observed state; the controller judges it (cli/deskguard/compliance/accounts.py).
"""

from __future__ import annotations

import configparser
import glob
import os
import subprocess

# Groups whose members can become root (Debian sudo/admin, RedHat wheel) or read every log (adm is not root,
# but an operator has no business there either; the role's list is what it removes, this is what it reports).
PRIVILEGED_GROUPS = ("sudo", "admin", "wheel", "root")
# The PAM files that carry the login stacks: Debian (pam-auth-update) and RedHat (authselect).
PAM_FILES = ("etc/pam.d/common-auth", "etc/pam.d/common-account", "etc/pam.d/common-password",
             "etc/pam.d/system-auth", "etc/pam.d/password-auth")
SSHD_KEYS = ("permitrootlogin", "passwordauthentication", "kbdinteractiveauthentication", "pubkeyauthentication",
             "allowusers", "allowgroups", "authenticationmethods", "authorizedkeysfile")


def run(argv, timeout=10):
    """(rc, stdout) of a command in the C locale; (127, "") when it is not installed."""
    try:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=timeout,
                              env=dict(os.environ, LC_ALL="C", LANG="C"))
    except OSError:
        return 127, ""
    return proc.returncode, proc.stdout.decode(errors="replace")


def _read(root, rel):
    try:
        with open(os.path.join(root, rel), errors="replace") as fh:
            return fh.read()
    except OSError:
        return None


def _colon_table(root, rel):
    rows = []
    for line in (_read(root, rel) or "").splitlines():
        if line and not line.startswith("#"):
            rows.append(line.split(":"))
    return rows


def users(root):
    """name -> {uid, gid, home, shell} from etc/passwd."""
    return {r[0]: {"uid": int(r[2]), "gid": int(r[3]), "home": r[5], "shell": r[6]}
            for r in _colon_table(root, "etc/passwd") if len(r) >= 7 and r[2].isdigit() and r[3].isdigit()}


def groups_of(root, name, gid=None):
    """The groups `name` belongs to: supplementary members in etc/group plus its primary group."""
    found = []
    for r in _colon_table(root, "etc/group"):
        if len(r) < 4:
            continue
        members = [m for m in r[3].split(",") if m]
        if name in members or (gid is not None and r[2] == str(gid)):
            found.append(r[0])
    return sorted(set(found))


def key_value_file(text, sep="="):
    """`key = value` lines (pwquality.conf, faillock.conf, pwhistory.conf); bare words are flags (True)."""
    values = {}
    for line in (text or "").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        key, has, value = line.partition(sep)
        values[key.strip().lower()] = value.strip() if has else True
    return values


def pam_lines(root):
    """[(file, type, control, module, {arg: value})] of the login stacks, comments dropped."""
    out = []
    for rel in PAM_FILES:
        for line in (_read(root, rel) or "").splitlines():
            words = line.split("#", 1)[0].split()
            if len(words) < 3 or words[0].startswith("@"):
                continue
            if words[1].startswith("["):  # [success=1 default=ignore] spans words
                end = next((i for i, w in enumerate(words) if w.endswith("]")), 1)
                control, rest = " ".join(words[1:end + 1]), words[end + 1:]
            else:
                control, rest = words[1], words[2:]
            if not rest:
                continue
            args = {}
            for arg in rest[1:]:
                key, has, value = arg.partition("=")
                args[key] = value if has else True
            out.append((rel, words[0].lstrip("-"), control, os.path.basename(rest[0]), args))
    return out


def _module_settings(root, module, conf_files, pam):
    """A PAM module's settings: its configuration files in order, then its arguments in the stack (which win)."""
    settings = {}
    for pattern in conf_files:
        for path in sorted(glob.glob(os.path.join(root, pattern))):
            settings.update(key_value_file(_read(root, os.path.relpath(path, root))))
    lines = [line for line in pam if line[3] == module]
    for line in lines:
        settings.update({k.lower(): v for k, v in line[4].items() if k not in ("preauth", "authfail", "authsucc")})
    return settings, sorted({"%s:%s" % (os.path.basename(f), t) for f, t, _c, _m, _a in lines})


def _int(value):
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def password_policy(root):
    pam = pam_lines(root)
    quality, quality_in = _module_settings(root, "pam_pwquality.so",
                                           ["etc/security/pwquality.conf", "etc/security/pwquality.conf.d/*.conf"],
                                           pam)
    history, history_in = _module_settings(root, "pam_pwhistory.so", ["etc/security/pwhistory.conf"], pam)
    lockout, lockout_in = _module_settings(root, "pam_faillock.so", ["etc/security/faillock.conf"], pam)
    faillock_auth = {line[4].get("preauth") and "preauth" or line[4].get("authfail") and "authfail" or "plain"
                     for line in pam if line[3] == "pam_faillock.so" and line[1] == "auth"}
    return {
        "password_quality_in_pam": any(s.endswith(":password") for s in quality_in),
        "password_minlen": _int(quality.get("minlen")),
        "password_credits": {k: _int(quality.get(k)) for k in ("dcredit", "ucredit", "lcredit", "ocredit")},
        "password_minclass": _int(quality.get("minclass")),
        "password_retry": _int(quality.get("retry")),
        "password_enforce_for_root": bool(quality.get("enforce_for_root")),
        "password_history_in_pam": any(s.endswith(":password") for s in history_in),
        "password_remember": _int(history.get("remember")),
        # Both halves are needed: preauth refuses a locked account, authfail counts the failure.
        "lockout_in_pam": {"preauth", "authfail"} <= faillock_auth,
        "lockout_deny": _int(lockout.get("deny")),
        "lockout_unlock_seconds": _int(lockout.get("unlock_time")),
        "lockout_fail_interval_seconds": _int(lockout.get("fail_interval")),
    }


def _ini(paths):
    parser = configparser.ConfigParser(interpolation=None, strict=False, delimiters=("=",))
    parser.optionxform = str.lower
    for path in paths:
        try:
            parser.read(path)
        except configparser.Error:
            continue
    return parser


def _true(value):
    return str(value).strip().lower() in ("true", "1", "yes")


def login_screen(root, accounts):
    """Auto-login (GDM, LightDM) and guest sessions (LightDM allow-guest, an unlocked `guest` account)."""
    gdm = _ini([os.path.join(root, p) for p in ("etc/gdm3/daemon.conf", "etc/gdm/custom.conf")])
    lightdm_files = [*sorted(glob.glob(os.path.join(root, "usr/share/lightdm/lightdm.conf.d/*.conf"))),
                     os.path.join(root, "etc/lightdm/lightdm.conf"),
                     *sorted(glob.glob(os.path.join(root, "etc/lightdm/lightdm.conf.d/*.conf")))]
    lightdm = _ini(lightdm_files)
    seat = {}
    for section in ("SeatDefaults", "Seat:*"):
        if lightdm.has_section(section):
            seat.update(dict(lightdm.items(section)))
    auto_users = []
    if gdm.has_section("daemon"):
        daemon = dict(gdm.items("daemon"))
        for switch, user in (("automaticloginenable", "automaticlogin"), ("timedloginenable", "timedlogin")):
            if _true(daemon.get(switch)) and daemon.get(user):
                auto_users.append(daemon[user])
    if seat.get("autologin-user", "").strip():
        auto_users.append(seat["autologin-user"].strip())
    shadow = {r[0]: r[1] for r in _colon_table(root, "etc/shadow") if len(r) > 1}
    guest = accounts.get("guest")
    guest_account = bool(guest and not guest["shell"].endswith(("nologin", "false"))
                         and not shadow.get("guest", "!").startswith(("!", "*")))
    return {"display_managers": [n for n, p in (("gdm", "etc/gdm3"), ("gdm", "etc/gdm"), ("lightdm", "etc/lightdm"))
                                 if os.path.isdir(os.path.join(root, p))],
            "autologin_enabled": bool(auto_users), "autologin_users": sorted(set(auto_users)),
            "guest_enabled": _true(seat.get("allow-guest")) or guest_account,
            "guest_account_enabled": guest_account}


def sudoers_lines(root):
    """Every rule line of etc/sudoers and its include folder, with its file (comments, Defaults, aliases dropped)."""
    files = [os.path.join(root, "etc/sudoers"), *sorted(glob.glob(os.path.join(root, "etc/sudoers.d/*")))]
    out = []
    for path in files:
        name = os.path.basename(path)
        if name.endswith("~") or "." in name and path != files[0]:  # sudo skips these in its includedir
            continue
        text = _read(root, os.path.relpath(path, root)) or ""
        for line in text.replace("\\\n", " ").splitlines():
            line = line.strip()
            if not line or line.startswith(("#", "@", "Defaults")) or line.split()[0].endswith("_Alias"):
                continue
            out.append((os.path.relpath(path, root), line))
    return out


def sudo_rules_for(root, name, member_of):
    """Rules that grant `name` anything: by name, through one of its groups (%group) or to ALL."""
    granted = []
    for path, line in sudoers_lines(root):
        who = {w.strip() for w in line.split(None, 1)[0].split(",")}
        if name in who or "ALL" in who or any("%" + g in who for g in member_of):
            granted.append("%s: %s" % (path, line))
    return granted


def sshd_effective(text):
    """`sshd -T` output -> the settings the judges read (lists for AllowUsers/AllowGroups)."""
    values = {}
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        key = key.lower()
        if key in ("allowusers", "allowgroups"):
            values.setdefault(key, []).extend(value.split())
        elif key in SSHD_KEYS:
            values[key] = value.strip()
    for key in ("allowusers", "allowgroups"):
        values.setdefault(key, [])
    return values


def authorized_keys(root, user, keys_file_setting):
    """How many keys the account's authorized_keys files hold (sshd's AuthorizedKeysFile, %h/%u expanded)."""
    patterns = (keys_file_setting or ".ssh/authorized_keys .ssh/authorized_keys2").split()
    count = 0
    for pattern in patterns:
        path = pattern.replace("%h", user["home"]).replace("%u", user["name"]).replace("%%", "%")
        if not path.startswith("/"):
            path = os.path.join(user["home"], path)
        text = _read(root, path.lstrip("/")) or ""
        count += sum(1 for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))
    return count


def collect(root="/", params=None):
    """The section. params: {operator, management_user} (the names the policy gives)."""
    params = params or {}
    accounts = users(root)
    operator = params.get("operator") or ""
    manager = params.get("management_user") or ""
    op = accounts.get(operator)
    op_groups = groups_of(root, operator, op["gid"]) if op else []
    rc, out = run(["sshd", "-T"])
    sshd = sshd_effective(out) if rc == 0 else None
    mgmt = accounts.get(manager)
    section = {
        "operator": operator, "operator_exists": op is not None, "operator_groups": op_groups,
        "operator_privileged_groups": [g for g in op_groups if g in PRIVILEGED_GROUPS],
        "operator_sudo_rules": sudo_rules_for(root, operator, op_groups) if op else [],
        "management_user": manager, "management_exists": mgmt is not None,
        "management_authorized_keys": authorized_keys(root, dict(mgmt, name=manager),
                                                      (sshd or {}).get("authorizedkeysfile")) if mgmt else 0,
        "management_sudo_rules": len(sudo_rules_for(root, manager, groups_of(root, manager, mgmt["gid"])))
        if mgmt else 0,
        "sshd": sshd,
    }
    section.update(password_policy(root))
    section.update(login_screen(root, accounts))
    return section
