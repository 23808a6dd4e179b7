# -*- coding: utf-8 -*-
"""The files a USB policy wants on a laptop, and how the laptop's files differ from them. Changes nothing.

What the policy renders (rules checked by USBGuard's own parser, the daemon's settings, the read-only udev
rule, the enrolment recorded once) is the one definition both halves use: deskguard_usb_apply puts it in
force, deskguard_usb_report (the nightly run) tells whether it is. In a file of its own so the nightly
posture collector never carries the half that writes files and restarts the daemon.
"""

from __future__ import annotations

import os
import tempfile

try:  # inside Ansible
    from ansible.module_utils.deskguard_usb_policy import (check_approved, enrolment_rules, normalise_rules,
                                                           render_daemon_conf, render_rules, render_udev_read_only)
    from ansible.module_utils.deskguard_usb_probe import run
except ImportError:  # unit tests put plugins/module_utils on sys.path
    from deskguard_usb_policy import (check_approved, enrolment_rules, normalise_rules, render_daemon_conf,
                                      render_rules, render_udev_read_only)
    from deskguard_usb_probe import run

UNIT = "usbguard.service"
PATHS = {
    "daemon_conf": "/etc/usbguard/usbguard-daemon.conf",
    "rules": "/etc/usbguard/rules.conf",
    "rules_dir": "/etc/usbguard/rules.d",
    "ipc_dir": "/etc/usbguard/IPCAccessControl.d",
    # The laptop's own devices as seen at enrolment: recorded once, so a later run never turns whatever is
    # plugged in at that moment into an allowed device.
    "enrolment": "/var/lib/deskguard/usb/enrolment.rules",
    # 99-: after udisks' and the persistent-storage rules, as udisks' documentation asks for overrides.
    "udev": "/etc/udev/rules.d/99-deskguard-usb-read-only.rules",
    "controllers": "/sys/bus/usb/devices/usb*/authorized_default",
    "usb_bus": "/sys/bus/usb/devices",
}
TOOLS = {"usbguard": "usbguard", "parser": "usbguard-rule-parser", "systemctl": "systemctl",
         "udevadm": "udevadm", "blockdev": "/sbin/blockdev", "detect_virt": "systemd-detect-virt"}

class UsbError(Exception):
    pass


def _read_bytes(path):
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def _files_in(directory):
    try:
        return sorted(os.path.join(directory, n) for n in os.listdir(directory)
                      if os.path.isfile(os.path.join(directory, n)) or os.path.islink(os.path.join(directory, n)))
    except FileNotFoundError:
        return []


def parse_rules(text, tools=TOOLS, workdir=None):
    """USBGuard's parser over the whole rules text: (normalised rules, None) or (None, its error)."""
    fd, tmp = tempfile.mkstemp(prefix=".deskguard-rules-", dir=workdir)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        rc, out, err = run([tools["parser"], "-f", tmp])
    finally:
        os.unlink(tmp)
    if rc != 0:
        detail = " ".join((err or out).strip().splitlines()[-2:])[:400]
        return None, detail or "rc %d" % rc
    return normalise_rules(out), None


def enrolment(paths, tools, rebaseline):
    """(rules, is_new): the recorded enrolment rules, or a fresh `generate-policy` minus storage."""
    recorded = _read_bytes(paths["enrolment"])
    if recorded is not None and not rebaseline:
        return [line for line in recorded.decode().splitlines() if line.strip()], False
    rc, out, err = run([tools["usbguard"], "generate-policy"])
    if rc != 0:
        raise UsbError("usbguard generate-policy failed (%s); nothing was changed" % (err.strip() or rc))
    return enrolment_rules(out), True


def desired(params, paths=PATHS, tools=TOOLS):
    """{path: (bytes or None for absent, mode)} plus the enrolment rules and whether they are new."""
    approved = check_approved(params.get("approved_devices"))
    rules_enrolment, new = enrolment(paths, tools, params.get("rebaseline", False))
    rules = render_rules(params["mode"], approved, params.get("allowed_classes") or [], rules_enrolment)
    want = {
        paths["daemon_conf"]: (render_daemon_conf().encode(), 0o600),
        paths["rules"]: (rules.encode(), 0o600),
        paths["enrolment"]: (("\n".join(rules_enrolment) + "\n").encode() if rules_enrolment else b"", 0o600),
        paths["udev"]: ((render_udev_read_only(tools["blockdev"]).encode(), 0o644)
                        if params["mode"] == "read_only" else (None, 0o644)),
    }
    # Exclusive: the kit's rules.conf is the whole policy, and only root may use the daemon's IPC.
    for path in _files_in(paths["rules_dir"]) + _files_in(paths["ipc_dir"]):
        want[path] = (None, 0)
    return want, rules, new


def differences(want):
    out = []
    for path, (data, mode) in sorted(want.items()):
        have = _read_bytes(path)
        if data is None:
            if have is not None or os.path.islink(path):
                out.append((path, "remove"))
        elif have is None:
            out.append((path, "create"))
        elif have != data:
            out.append((path, "content"))
        elif (os.stat(path).st_mode & 0o7777) != mode:
            out.append((path, "mode"))
    return out
