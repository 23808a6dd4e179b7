# -*- coding: utf-8 -*-
"""Everything the compliance run needs to know about a Linux laptop, read in one call, changing nothing.

Pure Python 3.9+ stdlib (plus the kit's other module_utils), so the deskguard_posture module and, later, the
on-device agent run the same code. Each section is collected on its own: a section that fails is reported
in `errors` (the controller turns it into an `error` result for its controls) and the others still count.
What is read is the *observed state*, not whether it is right: the controller judges it against the policy.
"""

from __future__ import annotations

import configparser
import glob
import os
import platform
import subprocess
import time

try:  # inside a module (Ansiballz) the kit's module_utils live under ansible.module_utils
    # Only the reading halves (deskguard_luks_inspect, deskguard_tpm_inspect, …): this file and what it imports
    # ship in every nightly module call and are compiled there each time (AnsiballZ carries no bytecode).
    from ansible.module_utils import (deskguard_accounts, deskguard_agent_health, deskguard_av,
                                      deskguard_browser_policy, deskguard_desktop_session, deskguard_luks_inspect,
                                      deskguard_network, deskguard_reboot, deskguard_software, deskguard_tpm_inspect,
                                      deskguard_ufw_inspect, deskguard_usb_report, deskguard_vpn_facts,
                                      deskguard_wireguard)
except ImportError:  # unit tests and the agent import them as plain modules
    import deskguard_accounts
    import deskguard_agent_health
    import deskguard_av
    import deskguard_browser_policy
    import deskguard_desktop_session
    import deskguard_luks_inspect
    import deskguard_network
    import deskguard_reboot
    import deskguard_software
    import deskguard_tpm_inspect
    import deskguard_ufw_inspect
    import deskguard_usb_report
    import deskguard_vpn_facts
    import deskguard_wireguard

_C_ENV = dict(os.environ, LC_ALL="C", LANG="C")


def _out(argv, timeout=10):
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=_C_ENV, timeout=timeout)
    return proc.returncode, proc.stdout.decode(errors="replace")


def _os(root, params):
    release = {}
    try:
        with open(os.path.join(root, "etc/os-release")) as fh:
            for line in fh:
                key, _, value = line.strip().partition("=")
                if key:
                    release[key] = value.strip('"')
    except OSError:
        pass
    with open("/proc/uptime") as fh:
        uptime = float(fh.read().split()[0])
    return {"id": release.get("ID"), "version_id": release.get("VERSION_ID"), "kernel": platform.release(),
            "uptime_seconds": int(uptime)}


def _disk(root, params):
    # ENC-004's facts (TPM bindings, whether the TPM unseals them now, key files) in the same collection.
    return deskguard_tpm_inspect.add_facts(deskguard_luks_inspect.inventory())


def _dconf_value(text):
    """'uint32 300' -> 300, 'true' -> True, quoted strings unquoted; anything else as text."""
    text = text.strip()
    if text in ("true", "false"):
        return text == "true"
    word = text.split()[-1] if text else text
    try:
        return int(word)
    except ValueError:
        return text.strip("'\"")


def _screen_lock(root, params):
    """LCK-001: the dconf files the role writes, and the values the operator's session gets from them (params:
    operator)."""
    base = os.path.join(root, "etc/dconf")
    settings, files = {}, sorted(glob.glob(os.path.join(base, "db/local.d/*")))
    for path in files:
        if not os.path.isfile(path):
            continue
        parser = configparser.ConfigParser(interpolation=None, strict=False)
        parser.optionxform = str
        parser.read(path)
        for section in parser.sections():
            for key, value in parser.items(section):
                settings["/%s/%s" % (section, key)] = _dconf_value(value)
    locks = set()
    for path in sorted(glob.glob(os.path.join(base, "db/local.d/locks/*"))):
        with open(path) as fh:
            locks.update(line.strip() for line in fh if line.strip().startswith("/"))
    try:
        with open(os.path.join(base, "profile/user")) as fh:
            profile = fh.read()
    except OSError:
        profile = ""
    db = os.path.join(base, "db/local")
    newest = max([os.path.getmtime(p) for p in files if os.path.isfile(p)] or [0])
    return {"idle_delay": settings.get("/org/gnome/desktop/session/idle-delay"),
            "lock_enabled": settings.get("/org/gnome/desktop/screensaver/lock-enabled"),
            "lock_delay": settings.get("/org/gnome/desktop/screensaver/lock-delay"),
            "locked": sorted(locks), "profile_uses_local_db": "system-db:local" in profile,
            "db_compiled": os.path.exists(db) and os.path.getmtime(db) >= newest,
            # What the operator's session really gets (GNOME's own reader), or why it was not read.
            "session": deskguard_desktop_session.read(params.get("operator"), root)}


def _firewall(root, params):
    if not os.path.exists(os.path.join(root, "usr/sbin/ufw")):
        return {"tool": None, "active": False}
    return {"tool": "ufw", "active": deskguard_ufw_inspect.is_enabled(),
            "defaults": deskguard_ufw_inspect.read_defaults(os.path.join(root, "etc/default/ufw")),
            "rules": deskguard_ufw_inspect.added_rules()}


def _apt_config():
    rc, out = _out(["apt-config", "dump"])
    values, origins = {}, []
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        value = value.rstrip(";").strip('"')
        if key == "Unattended-Upgrade::Origins-Pattern::":
            origins.append(value)
        elif key.startswith(("APT::Periodic::", "Unattended-Upgrade::")):
            values[key] = value
    return values, origins


def _updates(root, params):
    if not os.path.isdir(os.path.join(root, "etc/apt")):
        return {"tool": None}
    values, origins = _apt_config()
    rc, out = _out(["systemctl", "is-enabled", "apt-daily.timer", "apt-daily-upgrade.timer"])
    stamp = os.path.join(root, "var/lib/apt/periodic/unattended-upgrades-stamp")
    pending, packages = deskguard_reboot.reboot_pending()
    return {"tool": "unattended-upgrades",
            "installed": os.path.exists(os.path.join(root, "usr/bin/unattended-upgrade")),
            "periodic_unattended_upgrade": values.get("APT::Periodic::Unattended-Upgrade"),
            "periodic_update_lists": values.get("APT::Periodic::Update-Package-Lists"),
            "automatic_reboot": values.get("Unattended-Upgrade::Automatic-Reboot"),
            "origins": origins, "timers": out.split(),
            "last_run_age_days": round((time.time() - os.path.getmtime(stamp)) / 86400, 2)
            if os.path.exists(stamp) else None,
            "reboot_pending": pending, "reboot_packages": packages[:20]}


def _usb(root, params):
    """USB-001..003: what is attached and whether the daemon runs the rules rendered from this policy, which is
    why the section needs the policy's mode and approved devices."""
    if not params.get("mode"):
        raise ValueError("the USB policy was not given (params.usb.mode)")
    return deskguard_usb_report.collect(dict({"approved_devices": [], "allowed_classes": []}, **params,
                                             rebaseline=False))


def _agent(root, params):
    return deskguard_agent_health.collect(root)


def _network(root, params):
    # The call system's targets come from the file the network_posture role leaves on the laptop.
    return deskguard_network.posture_section(root)


def _vpn(root, params):
    interface = params.get("interface") or "wg0"
    paths = deskguard_wireguard.Paths(interface)
    return deskguard_vpn_facts.gather(interface, paths.key, [paths.conf, paths.nm],
                                      deskguard_wireguard.KILL_SWITCH_TABLE, saved_dir=paths.backup_dir)


def _software(root, params):
    """SW-001..003: denied packages installed, sources outside the approved list, and each installed browser's
    policy file compared with the one rendered from the policy (params: denied_packages, allowed_sources,
    browser)."""
    section = deskguard_software.collect(root, params)
    section["browsers"] = deskguard_browser_policy.observe(params.get("browser") or {}, root)
    return section


def _av(root, params):
    return deskguard_av.collect(root, params)


def _accounts(root, params):
    # Which account is the operator's and which the management one comes from the policy (posture_params).
    return deskguard_accounts.collect(root, params)


# Sections the controller can ask for: collector(root, params), params being that section's part of the
# module's `params` option (the policy values a section needs to know what "in force" means).
COLLECTORS = {"os": _os, "disk": _disk, "screen_lock": _screen_lock, "firewall": _firewall, "updates": _updates,
              "usb": _usb, "vpn": _vpn, "agent": _agent, "network": _network,
              "software": _software, "av": _av, "accounts": _accounts}


def collect(sections=None, root="/", params=None):
    """({section: observed}, {section: error}) for the given sections (all by default), with timings."""
    posture, errors, timings = {}, {}, {}
    for name in sections or COLLECTORS:
        start = time.monotonic()
        try:
            posture[name] = COLLECTORS[name](root, (params or {}).get(name) or {})
        except Exception as exc:  # one broken section must not hide the others
            errors[name] = "%s: %s" % (type(exc).__name__, str(exc)[:300])
        timings[name] = round(time.monotonic() - start, 3)
    return posture, errors, timings
