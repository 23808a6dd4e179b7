# -*- coding: utf-8 -*-
"""Rollback timers: a change that could cut IT's way into the laptop undoes itself unless IT still gets in.

Before the firewall, the VPN or the login configuration (accounts) changes, its module arms a transient
systemd timer (systemd-run, no unit file) that undoes the change after N seconds. The play stops the timer
only after a brand-new management connection succeeded (playbooks/tasks/management_guard.yml, which names
the same units; tests/unit/test_rollback.py keeps the two in step). A laptop whose management channel the
change broke repairs itself when the timer fires.

Shared by deskguard_ufw, deskguard_accounts_apply and deskguard_wireguard_apply; no Ansible import (the
agent deploys deskguard_ufw, and with it this file).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess

try:
    from ansible.module_utils import deskguard_files
except ImportError:  # unit tests and the agent import the kit's module_utils as plain modules
    import deskguard_files

# The unit of each timer, without ".timer"/".service" (systemd-run makes both).
FIREWALL_UNIT = "deskguard-firewall-rollback"
VPN_UNIT = "deskguard-vpn-rollback"
ACCOUNTS_UNIT = "deskguard-accounts-rollback"
UNITS = (FIREWALL_UNIT, VPN_UNIT, ACCOUNTS_UNIT)


def _quiet(argv):
    """Run a command whose failure is expected and harmless (no such unit); its output and status discarded."""
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def arm(unit, seconds, undo, command, run, quiet=None):
    """Arm `unit`'s timer to run `command` (argv) in `seconds` unless stopped first. `undo` completes the
    description "deskguard: UNDO unless the management channel was confirmed". `run` is the caller's command
    runner (raises the caller's error when systemd-run fails, so the change is not made unguarded); `quiet`
    runs the best-effort clean-up of a timer left from an earlier run (tests inject both)."""
    quiet = quiet or _quiet
    quiet(["systemctl", "stop", unit + ".timer"])
    quiet(["systemctl", "reset-failed", unit + ".service"])   # else systemd-run refuses the unit name
    return run(["systemd-run", "--unit", unit, "--on-active=%ds" % seconds,
                "--description=deskguard: %s unless the management channel was confirmed" % undo] + list(command))


def save_aside(directory, paths):
    """Copy each existing file of `paths` into `directory` (emptied first, 0700, root only): {path: copy}.
    A path absent now is absent from the result, so the restore removes it."""
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory, mode=0o700)
    saved = {}
    for i, path in enumerate(paths):
        if os.path.exists(path):
            copy = os.path.join(directory, str(i))
            shutil.copy2(path, copy)
            saved[path] = copy
    return saved


def restore_commands(saved, paths):
    """Shell lines that put every one of `paths` back as save_aside found it."""
    return ["cp -p %s %s" % (shlex.quote(saved[p]), shlex.quote(p)) if p in saved else "rm -f %s" % shlex.quote(p)
            for p in paths]


def write_script(path, why, lines):
    """A /bin/sh script for the timer, 0700 root, replaced atomically (the timer never runs half a script)."""
    text = "\n".join(["#!/bin/sh", "# deskguard: " + why] + list(lines)) + "\n"
    deskguard_files._write({"path": path, "content": text, "mode": "0700", "owner": "root", "group": "root"})
    return path
