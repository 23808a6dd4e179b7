# -*- coding: utf-8 -*-
"""Converge the laptop's tunnel (VPN-001, VPN-003) without ever cutting the management channel.

Order: key (made here if missing, or on rotation) -> render every file -> compare -> if anything differs:
keep the current files aside -> arm the rollback timer when IT manages the laptop over this tunnel -> validate
the new files (`wg-quick strip`, `nft -c`) in a staging directory -> install -> restart -> prove the interface
is up. A failed validation changes nothing; a failed restart puts the old files back and restarts them.

The files kept aside hold the previous private key, so they live only as long as a rollback may need them:
deleted at the end of a run that armed no timer (and no earlier timer is still running), by the timer's
script after it restored them, and by the management guard when it confirms the change (issue 20).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile

try:
    from ansible.module_utils.deskguard_wireguard import (KILL_SWITCH_TABLE, KILL_SWITCH_UNIT, WireGuardError,
                                                          _run, make_key, public_key, render_kill_switch,
                                                          render_kill_switch_unit, render_nm, render_wg_quick,
                                                          resolve_endpoint)
except ImportError:  # unit tests put module_utils on sys.path
    from deskguard_wireguard import (KILL_SWITCH_TABLE, KILL_SWITCH_UNIT, WireGuardError, _run, make_key,
                                     public_key, render_kill_switch, render_kill_switch_unit, render_nm,
                                     render_wg_quick, resolve_endpoint)
try:
    from ansible.module_utils.deskguard_wireguard_impl import (ImplementationError, Laptop, choose, render_dropin,
                                                               running_implementation)
except ImportError:  # unit tests put module_utils on sys.path
    from deskguard_wireguard_impl import ImplementationError, Laptop, choose, render_dropin, running_implementation
try:
    from ansible.module_utils import deskguard_rollback
except ImportError:  # unit tests put module_utils on sys.path
    import deskguard_rollback

ROLLBACK_UNIT = deskguard_rollback.VPN_UNIT


def _probe(cmd):
    """Exit status of a read-only command (systemctl is-active ...); quiet."""
    return subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode


def nm_manages_network(probe=_probe):
    """NetworkManager is running (then the tunnel belongs in NM, where the operator sees and toggles it)."""
    return bool(shutil.which("nmcli")) and probe(["systemctl", "is-active", "--quiet", "NetworkManager"]) == 0


def desired_files(p, paths, backend, run=_run, implementation="kernel"):
    """{path: (content, mode)} for everything the tunnel needs; None content = must not exist."""
    files = {paths.dropin: (render_dropin(implementation), 0o644)}
    if backend == "networkmanager":
        with open(paths.key) as fh:
            files[paths.nm] = (render_nm(p, fh.read().strip()), 0o600)
        files[paths.conf] = (None, 0)
    else:
        files[paths.conf] = (render_wg_quick(dict(p, key_path=paths.key)), 0o600)
        files[paths.nm] = (None, 0)
    if p.get("kill_switch"):
        files[paths.nft] = (render_kill_switch(p, resolve_endpoint(p["endpoint"])), 0o644)
        files[paths.unit] = (render_kill_switch_unit(paths.nft), 0o644)
    else:
        files[paths.nft] = (None, 0)
        files[paths.unit] = (None, 0)
    return files


def _differs(path, content, mode):
    if content is None:
        return os.path.lexists(path)
    if not os.path.exists(path):
        return True
    with open(path) as fh:
        if fh.read() != content:
            return True
    return (os.stat(path).st_mode & 0o7777) != mode


def _service_ok(unit, probe=_probe):
    return probe(["systemctl", "is-active", "--quiet", unit]) == 0 and \
        probe(["systemctl", "is-enabled", "--quiet", unit]) == 0


def _atomic(path, content, mode):
    d = os.path.dirname(path)
    os.makedirs(d, mode=0o700 if d.endswith("wireguard") else 0o755, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".deskguard-")
    try:
        os.fchmod(fd, mode)
        os.write(fd, content.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)


def _backup(paths, names):
    """Keep the current files (and the key) aside, 0700, for the rollback timer and a failed restart."""
    return deskguard_rollback.save_aside(paths.backup_dir, sorted(set(names) | {paths.key}))


def _restore(saved, names):
    for path in names:
        if path in saved:
            shutil.copy2(saved[path], path)
        elif os.path.lexists(path):
            os.unlink(path)


def _rollback_script(paths, saved, names, iface):
    """A shell script the rollback timer runs: old files back, tunnel and kill switch restarted (or gone)."""
    lines = deskguard_rollback.restore_commands(saved, sorted(set(names) | {paths.key}))
    lines += ["nft delete table inet %s 2>/dev/null" % KILL_SWITCH_TABLE, "systemctl daemon-reload",
              "systemctl restart %s 2>/dev/null || true" % KILL_SWITCH_UNIT,
              "if [ -e '%s' ]; then systemctl restart wg-quick@%s; else systemctl disable --now wg-quick@%s; fi"
              % (paths.conf, iface, iface),
              "rm -rf %s" % shlex.quote(paths.backup_dir)]   # restored: the old key needs no copy any more
    return deskguard_rollback.write_script(os.path.join(paths.state_dir, "rollback.sh"),
                                           "put the VPN back as it was (the management channel was not confirmed)",
                                           lines)


def forget_saved(paths, probe=_probe):
    """Delete the files kept aside (the previous private key among them) unless the rollback timer, which
    restores from them, is still running. True if none are left."""
    if probe(["systemctl", "is-active", "--quiet", ROLLBACK_UNIT + ".timer"]) == 0:
        return False
    shutil.rmtree(paths.backup_dir, ignore_errors=True)
    return True


def arm_rollback(seconds, script, run=_run, probe=_probe):
    deskguard_rollback.arm(ROLLBACK_UNIT, seconds, "restore the VPN", ["/bin/sh", script], run, quiet=probe)


def _validate(files, paths, run):
    """Check the new files before they replace anything: wg-quick parses the config, nft the ruleset."""
    stage = tempfile.mkdtemp(prefix="deskguard-vpn-")
    try:
        conf = files.get(paths.conf, (None, 0))[0]
        if conf is not None:
            staged = os.path.join(stage, os.path.basename(paths.conf))
            _atomic(staged, conf, 0o600)
            run(["wg-quick", "strip", staged])
        nft = files.get(paths.nft, (None, 0))[0]
        if nft is not None:
            staged = os.path.join(stage, "killswitch.nft")
            _atomic(staged, nft, 0o600)
            run(["nft", "-c", "-f", staged])
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def converge(p, paths, check_mode=False, run=_run, backend=None, probe=_probe, laptop=None):
    """Returns {changed, public_key, backend, implementation, implementation_reason, files, key_created,
    rollback_armed}. Never the private key. An implementation the laptop cannot run changes nothing."""
    backend = backend or ("networkmanager" if nm_manages_network(probe) else "wg-quick")
    try:
        implementation, reason = choose(p.get("implementation") or "auto", backend, laptop or Laptop(probe=probe))
    except ImplementationError as exc:
        raise WireGuardError(str(exc))
    result = {"changed": False, "backend": backend, "implementation": implementation,
              "implementation_reason": reason, "files": [], "key_created": False, "rollback_armed": False}
    pub = public_key(paths, run)
    need_key = pub is None or p.get("rotate")
    if need_key and check_mode:
        result.update(changed=True, public_key=pub, files=["(new key)"])
        return result
    names = [paths.conf, paths.nm, paths.nft, paths.unit, paths.dropin]
    saved = None
    if need_key:
        saved = _backup(paths, names)   # the old key too: a rotation the gateway never learnt is undone
        pub = make_key(paths, run)
        result["key_created"] = True
    files = desired_files(p, paths, backend, run, implementation)
    differ = [path for path, (content, mode) in files.items() if _differs(path, content, mode)]
    unit = "wg-quick@%s" % p["interface"]
    service_ok = backend == "networkmanager" or _service_ok(unit, probe)
    ks_ok = not p.get("kill_switch") or _service_ok(KILL_SWITCH_UNIT, probe)
    result.update(public_key=pub, files=sorted(differ))
    if not differ and service_ok and ks_ok and not need_key:
        forget_saved(paths, probe)   # a copy an earlier run left (its timer gone) goes now
        return result
    result["changed"] = True
    if check_mode:
        return result
    _validate(files, paths, run)
    if saved is None:
        saved = _backup(paths, names)
    if p.get("rollback_seconds"):
        arm_rollback(int(p["rollback_seconds"]), _rollback_script(paths, saved, names, p["interface"]), run, probe)
        result["rollback_armed"] = True
    for path, (content, mode) in files.items():
        if content is None:
            if os.path.lexists(path):
                os.unlink(path)
        elif path in differ:
            _atomic(path, content, mode)
    # The tunnel restarts only when its own files or key changed (or it is down): a laptop managed through it
    # (enrolled at home, onboarded over its VPN address) would otherwise lose the very connection running this,
    # e.g. when onboarding only adds the kill switch to the tunnel its first boot made (seen on the lab VM).
    tunnel_changed = need_key or not service_ok or any(path in differ for path in (paths.conf, paths.nm,
                                                                                     paths.dropin))
    try:
        _activate(p, paths, backend, run, probe, restart_tunnel=tunnel_changed)
        _prove_implementation(paths, backend, implementation)
    except WireGuardError as exc:
        _restore(saved, names + [paths.key])
        try:
            _activate(p, paths, backend, run, probe, disable_missing=True)
        finally:
            if not result["rollback_armed"]:
                forget_saved(paths, probe)
            raise WireGuardError("the new tunnel did not come up (%s); the previous configuration is back" % exc)
    if not result["rollback_armed"]:
        forget_saved(paths, probe)
    return result


def _prove_implementation(paths, backend, implementation):
    """The tunnel runs on what was chosen (wg-quick could otherwise fall back to wireguard-go unseen)."""
    if backend == "networkmanager":
        return
    running = running_implementation(paths.interface, paths.uapi_dir)
    if running != implementation:
        raise WireGuardError("the tunnel came up on the %s implementation, not the %s one the policy chose"
                             % (running, implementation))


def _activate(p, paths, backend, run, probe, disable_missing=False, restart_tunnel=True):
    iface = p["interface"]
    run(["systemctl", "daemon-reload"])
    if os.path.exists(paths.unit):
        run(["systemctl", "enable", KILL_SWITCH_UNIT])
        run(["systemctl", "restart", KILL_SWITCH_UNIT])
    else:
        # Best effort: no kill switch wanted, none may stay loaded (absent already is fine).
        probe(["systemctl", "disable", "--now", KILL_SWITCH_UNIT])
        probe(["nft", "delete", "table", "inet", KILL_SWITCH_TABLE])
    if backend == "networkmanager":
        if restart_tunnel:
            run(["nmcli", "connection", "reload"])
            run(["nmcli", "connection", "up", "id", "deskguard-%s" % iface])
        return
    if not os.path.exists(paths.conf):
        if disable_missing:
            probe(["systemctl", "disable", "--now", "wg-quick@%s" % iface])
        return
    run(["systemctl", "enable", "wg-quick@%s" % iface])
    if restart_tunnel:
        run(["systemctl", "restart", "wg-quick@%s" % iface])
    run(["wg", "show", iface, "public-key"])   # the interface exists and has its key
