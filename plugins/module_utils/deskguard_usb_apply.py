# -*- coding: utf-8 -*-
"""Put a USB policy in force on a laptop in one pass, all or nothing.

Order: render → validate the rules with USBGuard's own parser → back up what will change → write →
restart the daemon → prove the daemon runs exactly the rendered rules. If anything after the backup fails,
the old files come back and the daemon is restarted on them: the old policy stays in force until a new
one has validated and is running. What the policy renders and how the files differ is deskguard_usb_desired.
"""

from __future__ import annotations

import glob
import os
import time

try:  # inside Ansible
    from ansible.module_utils.deskguard_usb_desired import (PATHS, TOOLS, UNIT, UsbError, _read_bytes, desired,
                                                            differences, parse_rules)
    from ansible.module_utils.deskguard_usb_policy import PolicyError, normalise_rules
    from ansible.module_utils.deskguard_usb_probe import no_usb_reason, run, running_rules, unit_state
    from ansible.module_utils.deskguard_files import _write as files_write
except ImportError:  # unit tests put plugins/module_utils on sys.path
    from deskguard_usb_desired import PATHS, TOOLS, UNIT, UsbError, _read_bytes, desired, differences, parse_rules
    from deskguard_usb_policy import PolicyError, normalise_rules
    from deskguard_usb_probe import no_usb_reason, run, running_rules, unit_state
    from deskguard_files import _write as files_write

VERIFY_SECONDS = 20


def _write(path, data, mode):
    """Atomic replace through deskguard_files (one writer for every module); root-owned, `mode`."""
    files_write({"path": path, "content": data.decode(), "mode": "%04o" % mode, "owner": "root", "group": "root"})


def _restart(tools):
    for argv in ([tools["systemctl"], "unmask", UNIT], [tools["systemctl"], "enable", UNIT],
                 [tools["systemctl"], "restart", UNIT]):
        rc, out, err = run(argv, timeout=120)
        if rc != 0:
            raise UsbError("%s failed: %s" % (" ".join(argv), (err or out).strip()[-300:]))


def _verify(expected, tools, seconds=VERIFY_SECONDS):
    """Wait until the daemon answers with exactly the expected rules; UsbError otherwise."""
    deadline = time.monotonic() + seconds
    running = None
    while time.monotonic() < deadline:
        listing = running_rules(tools["usbguard"])
        running = None if listing is None else normalise_rules(listing)
        if running == expected:
            return
        time.sleep(0.5)
    if running is None:
        raise UsbError("usbguard did not answer `list-rules` within %d s after the restart" % seconds)
    raise UsbError("usbguard runs %d rules, not the %d rendered ones" % (len(running), len(expected)))


def apply(params, check_mode=False, paths=PATHS, tools=TOOLS):
    """Converge; returns {changed, files, restarted, enrolment_recorded, rules, ...}. UsbError/PolicyError
    carry one-line messages that say what is still in force."""
    why = no_usb_reason(paths["usb_bus"], tools["detect_virt"])
    if why:
        # Nothing to control and nothing to break: said once, as a finding, never as a change.
        return {"changed": False, "not_applicable": True, "finding": "USB control not applicable: " + why,
                "files": [], "restarted": False, "mode": params["mode"]}
    if run([tools["usbguard"], "--version"])[0] == 127 or run([tools["parser"], "-h"])[0] == 127:
        raise UsbError("usbguard is not installed on this laptop (the package `usbguard` provides it); "
                       "nothing was changed")
    want, rules_text, enrolment_new = desired(params, paths, tools)
    expected, error = parse_rules(rules_text, tools)
    if error:
        raise UsbError("the rendered USB rules do not validate (%s); nothing was changed and the running "
                       "policy stays in force" % error)
    diffs = differences(want)
    unit = unit_state(UNIT, tools["systemctl"])
    listing = running_rules(tools["usbguard"]) if unit["active"] == "active" else None
    running_ok = listing is not None and normalise_rules(listing) == expected
    daemon_files = {p for p, _ in diffs if p != paths["udev"] and p != paths["enrolment"]}
    restart = bool(daemon_files) or unit["enabled"] != "enabled" or not running_ok
    result = {"changed": bool(diffs) or restart, "files": [{"path": p, "reason": r} for p, r in diffs],
              "restarted": False, "would_restart": restart, "enrolment_recorded": enrolment_new,
              "rules": len(expected), "mode": params["mode"], "unit": unit, "running_matched": running_ok}
    if check_mode or not result["changed"]:
        return result
    backups = {p: (_read_bytes(p), os.stat(p).st_mode & 0o7777 if os.path.exists(p) else 0o600)
               for p, _ in diffs}
    try:
        for path, reason in diffs:
            data, mode = want[path]
            if reason == "remove":
                os.unlink(path)
            else:
                _write(path, data, mode)
        if restart:
            _restart(tools)
            result["restarted"] = True
            _verify(expected, tools)
    except (UsbError, OSError) as exc:
        _restore(backups)
        raise UsbError("%s; the previous files were restored, %s" % (exc, _back_to(unit, tools, paths))) from None
    if paths["udev"] in {p for p, _ in diffs}:
        run([tools["udevadm"], "control", "--reload"])
        if params["mode"] == "read_only":
            # Disks attached right now get the read-only flag too, not only the next ones.
            run([tools["udevadm"], "trigger", "--action=change", "--subsystem-match=block"])
    return result


def _back_to(unit, tools, paths):
    """Put the daemon back as it was before this run; says what happened, for the error message."""
    if unit["active"] == "active":
        rc = run([tools["systemctl"], "restart", UNIT], timeout=120)[0]
        return "usbguard restarted on them" if rc == 0 else "but usbguard did not restart on them"
    run([tools["systemctl"], "stop", UNIT], timeout=120)
    if unit["enabled"] != "enabled":
        run([tools["systemctl"], "disable", UNIT])
    # A stopped daemon leaves the controllers deauthorising new devices: a keyboard plugged in later would
    # stay dead. Give the kernel's default back, as it was before the daemon first ran.
    for path in sorted(glob.glob(paths["controllers"])):
        try:
            with open(path, "w") as fh:
                fh.write("1")
        except OSError:
            pass
    return "usbguard stopped again (it was not running before) and new devices are authorised by default"


def _restore(backups):
    for path, (data, mode) in backups.items():
        try:
            if data is None:
                if os.path.lexists(path):
                    os.unlink(path)
            else:
                _write(path, data, mode)
        except OSError:
            pass  # best effort: the error that brought us here is what the admin must see


__all__ = ["PATHS", "TOOLS", "PolicyError", "UsbError", "apply", "desired", "differences", "parse_rules"]
