# -*- coding: utf-8 -*-
"""Apply ACC-001..005 on a Linux laptop in one call: drop the operator's admin groups, write the password,
lockout, login-screen, sshd and sudoers files (each validated before it replaces the old one), enable the PAM
profiles, reload sshd.

Before anything changes, the files that decide who can log in (PAM stacks, sshd and sudoers drop-ins, the
login screen) are copied aside and a transient systemd timer is armed that puts them back; the play stops it
only after a brand-new SSH connection with `sudo -n` succeeded (playbooks/tasks/management_guard.yml). A
laptop whose management channel this broke repairs itself.
"""

from __future__ import annotations

import os
import pwd
import shlex
import subprocess

try:
    from ansible.module_utils import deskguard_accounts, deskguard_files, deskguard_rollback, deskguard_sshd_dropins
except ImportError:  # unit tests import the kit's module_utils as plain modules
    import deskguard_accounts
    import deskguard_files
    import deskguard_rollback
    import deskguard_sshd_dropins

ROLLBACK_UNIT = deskguard_rollback.ACCOUNTS_UNIT
ROLLBACK_DIR = "/var/lib/deskguard/accounts-rollback"
# Originals of the foreign sshd drop-ins whose lines the module commented out (kept: the rollback copy is not).
BACKUP_DIR = "/var/lib/deskguard/accounts-backup"


class AccountsError(Exception):
    pass


def _run(argv, env=None):
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          env=dict(os.environ, **(env or {})))
    out = proc.stdout.decode(errors="replace").strip()
    if proc.returncode != 0:
        raise AccountsError("%s failed (rc %d): %s" % (" ".join(argv), proc.returncode, out[-500:]))
    return out


def set_ini_values(text, section, values):
    """`text` with `key=value` set in [section] (existing keys replaced in place, others appended to it)."""
    lines, out, current, done = (text or "").splitlines(), [], None, set()

    def flush():
        if current == section:
            out.extend("%s=%s" % (k, v) for k, v in values.items() if k not in done)
            done.update(values)

    for line in lines:
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            flush()
            current = stripped[1:-1]
        elif current == section and "=" in stripped and not stripped.startswith("#"):
            key = stripped.split("=", 1)[0].strip()
            if key in values:
                out.append("%s=%s" % (key, values[key]))
                done.add(key)
                continue
        out.append(line)
    flush()
    if section not in (l.strip()[1:-1] for l in lines if l.strip().startswith("[")):
        out.extend(["", "[%s]" % section] + ["%s=%s" % kv for kv in values.items()])
    return "\n".join(out) + "\n"


def _pam_missing(root, markers):
    """Modules the PAM stacks must carry but do not: {'common-auth': ['pam_faillock.so'], ...}."""
    have = {}
    for rel, _t, _c, module, _a in deskguard_accounts.pam_lines(root):
        have.setdefault(os.path.basename(rel), set()).add(module)
    missing = {}
    for name, modules in markers.items():
        lacking = [m for m in modules if m not in have.get(name, set())]
        if lacking:
            missing[name] = lacking
    return missing


def preconditions(operator, manager, root="/", allow_groups=()):
    """Refuse, before any change, what would leave the laptop without a working management channel or with
    nobody to harden. The controller refuses bad policies earlier; this is what only the laptop can tell."""
    try:
        op = pwd.getpwnam(operator)
    except KeyError:
        raise AccountsError("the operator account %r does not exist on this laptop: create it first, or correct "
                            "deskguard_operator (or accounts_operator) in the host's vars" % operator) from None
    try:
        mgmt = pwd.getpwnam(manager)
    except KeyError:
        raise AccountsError("the management account %r does not exist on this laptop" % manager) from None
    rc, out = deskguard_accounts.run(["sshd", "-T"])
    keys_file = deskguard_accounts.sshd_effective(out).get("authorizedkeysfile") if rc == 0 else None
    if not deskguard_accounts.authorized_keys(root, {"home": mgmt.pw_dir, "name": manager}, keys_file):
        raise AccountsError("the management account %r has no authorized SSH key: turning password login off "
                            "would lock IT out; nothing was changed" % manager)
    if allow_groups and not set(allow_groups) & set(deskguard_accounts.groups_of(root, manager, mgmt.pw_gid)):
        raise AccountsError("AllowGroups %s would shut out the management account %r (it is in none of them); "
                            "nothing was changed" % (" ".join(allow_groups), manager))
    return op


def plan(params, root="/"):
    op = preconditions(params["operator"], params["management_user"], root, params.get("allow_groups") or ())
    # Optional files (LightDM's drop-in, pam-auth-update's profiles) only where their program is installed.
    files = [f for f in params["files"] if not f.get("when_dir") or os.path.isdir(f["when_dir"])]
    gdm = params.get("gdm_conf")
    if gdm and os.path.exists(gdm):
        with open(gdm) as fh:
            current = fh.read()
        files.append({"path": gdm, "content": set_ini_values(current, "daemon", params["gdm_settings"]),
                      "mode": "%04o" % (os.stat(gdm).st_mode & 0o7777)})
    todo = deskguard_files.plan(files)
    drops = []
    for name in [op.pw_name] + [u for u in params.get("standard_users") or () if u != op.pw_name]:
        try:
            gid = pwd.getpwnam(name).pw_gid
        except KeyError:
            continue  # an extra standard user absent from this laptop has nothing to lose
        supplementary = [g for g in deskguard_accounts.groups_of(root, name) if g in params["privileged_groups"]]
        primary = [g for g in deskguard_accounts.groups_of(root, name, gid)
                   if g in params["privileged_groups"] and g not in supplementary]
        if primary:
            raise AccountsError("%s's primary group is %s, a privileged group: change it by hand (usermod -g); "
                                "nothing was changed" % (name, primary[0]))
        drops.extend((name, g) for g in supplementary)
    pam_missing = _pam_missing(root, params.get("pam_markers") or {})
    pam_changed = any(spec["path"].startswith("/usr/share/pam-configs/") for spec, _ in todo)
    dropin = next((f for f in files if f["path"] == params.get("sshd_dropin")), None)
    foreign = deskguard_sshd_dropins.overrides(dropin["path"], dropin["content"]) if dropin else []
    return {"files": todo, "groups": drops, "sshd_foreign": foreign,
            "pam_update": bool(params.get("pam_profiles")) and (pam_changed or bool(pam_missing)),
            "pam_missing": pam_missing}


def arm_rollback(paths, seconds, sshd_service):
    """Copy `paths` aside and arm a timer that restores them (absent ones removed) and reloads sshd."""
    saved = deskguard_rollback.save_aside(ROLLBACK_DIR, paths)
    restore = deskguard_rollback.write_script(
        os.path.join(ROLLBACK_DIR, "restore.sh"),
        "undo the accounts change, the management channel was not confirmed",
        deskguard_rollback.restore_commands(saved, paths) + ["systemctl reload-or-restart %s" % shlex.quote(sshd_service)])
    deskguard_rollback.arm(ROLLBACK_UNIT, seconds, "undo the accounts change", ["/bin/sh", restore], _run)
    return restore


def apply(params, check_mode=False, root="/"):
    """Converge; returns {changed, files, sshd_neutralised, groups_removed, pam_updated, sshd_reloaded,
    rollback_armed}."""
    steps = plan(params, root)
    foreign = steps["sshd_foreign"]
    result = {"changed": bool(steps["files"] or steps["groups"] or steps["pam_update"] or foreign),
              "files": [{"path": s["path"], "reason": r} for s, r in steps["files"]],
              "sshd_neutralised": [{"path": f["path"], "lines": f["lines"]} for f in foreign],
              "groups_removed": ["%s:%s" % d for d in steps["groups"]], "pam_updated": steps["pam_update"], "sshd_reloaded": False,
              "rollback_armed": False}
    if check_mode or not result["changed"]:
        return result
    login_paths = ([s["path"] for s, _ in steps["files"]] + [f["path"] for f in foreign]
                   + list(params.get("pam_files") or []))
    restore = None
    if params.get("rollback_seconds") and (steps["files"] or steps["pam_update"] or foreign):
        restore = arm_rollback(login_paths, int(params["rollback_seconds"]), params["sshd_service"])
        result["rollback_armed"] = True
    sshd_dropin = params.get("sshd_dropin")
    for spec, reason in steps["files"]:
        if reason == "remove":
            os.unlink(spec["path"])
        else:
            deskguard_files._write(spec)  # validated (sshd -t -f, visudo -cf) before it replaces anything
    if foreign:
        result["sshd_neutralised"] = deskguard_sshd_dropins.neutralise(foreign, BACKUP_DIR)
    if foreign or any(s["path"] == sshd_dropin for s, _ in steps["files"]):
        # The drop-in parsed on its own; now the whole configuration with it must, or it goes back at once.
        check = subprocess.run(["sshd", "-t"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if check.returncode != 0:
            if restore:
                subprocess.run(["/bin/sh", restore])
            raise AccountsError("sshd rejects its configuration with the new drop-in (restored): %s"
                                % check.stdout.decode(errors="replace").strip()[-300:])
        _run(["systemctl", "reload", params["sshd_service"]])
        result["sshd_reloaded"] = True
    if steps["pam_update"]:
        _run(["pam-auth-update", "--enable", *params["pam_profiles"]], env={"DEBIAN_FRONTEND": "noninteractive"})
        missing = _pam_missing(root, params.get("pam_markers") or {})
        if missing:
            raise AccountsError("pam-auth-update left the stacks without %s" % missing)
    for name, group in steps["groups"]:
        _run(["gpasswd", "--delete", name, group])
    return result
