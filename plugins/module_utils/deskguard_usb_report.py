# -*- coding: utf-8 -*-
"""USB-001..003 read from a laptop: what is attached, what was blocked, and whether the policy the daemon
runs is the one deskguard renders for this laptop ("in force", not merely "file present"). Read-only.

`collect` gathers facts on the laptop; `evaluate` turns facts + policy into one result per control, the
shape the nightly run stores ({id, title, status, observed, expected}).
"""

from __future__ import annotations

try:  # inside Ansible
    from ansible.module_utils.deskguard_usb_desired import PATHS, TOOLS, UNIT, desired, differences, parse_rules
    from ansible.module_utils.deskguard_usb_policy import check_approved, normalise_rules
    from ansible.module_utils.deskguard_usb_probe import (attached_devices, no_usb_reason, recent_blocks, run,
                                                          running_rules, unit_state)
except ImportError:  # unit tests put plugins/module_utils on sys.path
    from deskguard_usb_desired import PATHS, TOOLS, UNIT, desired, differences, parse_rules
    from deskguard_usb_policy import check_approved, normalise_rules
    from deskguard_usb_probe import attached_devices, no_usb_reason, recent_blocks, run, running_rules, unit_state

TITLES = {
    "USB-001": "mass storage restricted as the policy says",
    "USB-002": "approved devices allowed",
    "USB-003": "USB policy in force",
}


def collect(params, paths=PATHS, tools=TOOLS, sysfs=None, audit_log=None):
    """Facts about this laptop's USB state (no changes, safe in check mode)."""
    why = no_usb_reason(paths.get("usb_bus", PATHS["usb_bus"]), tools.get("detect_virt", TOOLS["detect_virt"]))
    if why:
        return {"not_applicable": why, "devices": [], "blocked": [], "recent_blocks": []}
    devices = attached_devices(sysfs) if sysfs else attached_devices()
    facts = {"installed": run([tools["usbguard"], "--version"])[0] != 127, "devices": devices,
             "blocked": [d for d in devices if not d["authorized"]],
             "recent_blocks": recent_blocks(audit_log) if audit_log else recent_blocks()}
    if not facts["installed"]:
        return facts
    facts["unit"] = unit_state(UNIT, tools["systemctl"])
    want, rules_text, _new = desired(params, paths, tools)
    facts["drift"] = [{"path": p, "reason": r} for p, r in differences(want)]
    expected, error = parse_rules(rules_text, tools)
    facts["rendered_error"] = error
    listing = running_rules(tools["usbguard"]) if facts["unit"]["active"] == "active" else None
    running = None if listing is None else normalise_rules(listing)
    facts["running_rules"] = None if running is None else len(running)
    facts["rendered_rules"] = None if expected is None else len(expected)
    facts["running_matches"] = running is not None and running == expected
    return facts


def is_approved(device, approved):
    return any(a["id"] == device["id"] and (a["serial"] is None or a["serial"] == device["serial"])
               for a in approved)


def _result(cid, ok, observed, expected, evidence=None):
    return {"id": cid, "title": TITLES[cid], "status": "pass" if ok else "fail", "observed": observed,
            "expected": expected, "evidence": evidence or {}}


def evaluate(facts, mode, approved_devices):
    """[USB-001, USB-002, USB-003] results from collected facts and the policy."""
    approved = check_approved(approved_devices)
    if facts.get("not_applicable"):
        return [{"id": c, "title": t, "status": "not-applicable", "observed": facts["not_applicable"],
                 "expected": "a laptop with a USB bus", "evidence": {}} for c, t in TITLES.items()]
    if not facts.get("installed"):
        missing = "usbguard not installed"
        return [_result(c, False, missing, "usbguard installed and running") for c in TITLES]
    unit = facts["unit"]
    running = unit["active"] == "active" and unit["enabled"] == "enabled"
    storage = [d for d in facts["devices"] if d["storage"]]
    if mode == "read_only":
        writable = [b["name"] for d in storage if d["authorized"] for b in d["block_devices"]
                    if not b["read_only"] or any("rw" in m["options"].split(",") for m in b["mounts"])]
        ok = running and not writable
        usb1 = _result("USB-001", ok, "writable: %s" % (", ".join(writable) or "none"),
                       "every USB disk read-only", {"writable": writable})
    else:
        allowed = [d for d in storage if d["authorized"] and not (mode == "allow_listed" and is_approved(d, approved))]
        ok = running and not allowed
        shown = ["%s %s" % (d["id"], d["serial"] or "-") for d in allowed]
        usb1 = _result("USB-001", ok, "daemon %s/%s; unapproved storage allowed: %s" % (
            unit["enabled"], unit["active"], ", ".join(shown) or "none"),
            "usbguard enabled and active; no unapproved mass storage authorised", {"allowed": shown})
    if mode == "allow_listed":
        refused = [d for d in storage if is_approved(d, approved) and not d["authorized"]]
        shown = ["%s %s" % (d["id"], d["serial"] or "-") for d in refused]
        usb2 = _result("USB-002", running and facts["running_matches"] and not refused,
                       "%d approved entries; attached but blocked: %s" % (len(approved), ", ".join(shown) or "none"),
                       "approved devices in the running policy and authorised when attached", {"refused": shown})
    else:
        usb2 = {"id": "USB-002", "title": TITLES["USB-002"], "status": "not-applicable",
                "observed": "mode %s" % mode, "expected": "mode allow_listed", "evidence": {}}
    drift = facts["drift"]
    ok = running and facts["running_matches"] and not drift and not facts["rendered_error"]
    usb3 = _result("USB-003", ok, "daemon %s/%s; running %s rules (rendered %s); drift: %s" % (
        unit["enabled"], unit["active"], facts["running_rules"], facts["rendered_rules"],
        ", ".join("%s (%s)" % (d["path"], d["reason"]) for d in drift) or "none"),
        "the daemon runs exactly the rendered rules; config, rules and IPC files as rendered",
        {"drift": drift, "rendered_error": facts["rendered_error"]})
    return [usb1, usb2, usb3]
