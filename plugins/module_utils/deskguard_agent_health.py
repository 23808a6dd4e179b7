# -*- coding: utf-8 -*-
"""AGT-001 "check-in agent healthy": the facts the posture reports about the on-device agent.

Read-only and stdlib only (it runs inside the deskguard_posture module and inside the agent's own check-in).
The controller judges the facts: the timer must be enabled and active, and the last successful check-in
younger than the policy's limit. Facts (section "agent" of the posture):
  installed              the agent's launcher and configuration exist
  timer_enabled          `systemctl is-enabled deskguard-agent.timer` == enabled
  timer_active           `systemctl is-active deskguard-agent.timer` == active
  device_key_present     the device key file exists (its content is never read here)
  last_checkin           time of the last successful check-in (UTC, protocol format) or None
  last_checkin_age_seconds   now - last_checkin, or None when it never checked in
  pending_refusals       refused orders not reported to the server yet
  deadman_days           the dead-man switch setting (0 = off)
"""

from __future__ import annotations

import calendar
import json
import os
import subprocess
import time

AGENT_BIN = "usr/lib/deskguard-agent/deskguard-agent"
CONFIG = "etc/deskguard-agent/agent.json"
TIMER = "deskguard-agent.timer"


def _systemctl(verb, unit):
    try:
        proc = subprocess.run(["systemctl", verb, unit], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.decode(errors="replace").strip() or None


def _json(path):
    try:
        with open(path, "rb") as fh:
            return json.loads(fh.read().decode("utf-8"))
    except (OSError, ValueError):
        return None


def collect(root="/", now=None, systemctl=_systemctl):
    now = time.time() if now is None else now
    cfg = _json(os.path.join(root, CONFIG))
    installed = os.path.exists(os.path.join(root, AGENT_BIN)) and cfg is not None
    facts = {"installed": installed, "timer_enabled": False, "timer_active": False, "device_key_present": False,
             "last_checkin": None, "last_checkin_age_seconds": None, "pending_refusals": 0, "deadman_days": 0}
    if not installed:
        return facts
    facts["timer_enabled"] = systemctl("is-enabled", TIMER) == "enabled"
    facts["timer_active"] = systemctl("is-active", TIMER) == "active"
    facts["device_key_present"] = bool(cfg.get("device_key")) and os.path.exists(
        os.path.join(root, cfg["device_key"].lstrip("/")))
    facts["deadman_days"] = cfg.get("deadman_days") or 0
    state = _json(os.path.join(root, (cfg.get("state_dir") or "/var/lib/deskguard-agent").lstrip("/"),
                               "state.json")) or {}
    stamp = state.get("last_checkin")
    if stamp:
        try:
            seen = calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"))
            facts["last_checkin"] = stamp
            facts["last_checkin_age_seconds"] = max(0, int(now - seen))
        except ValueError:
            pass
    facts["pending_refusals"] = len(state.get("refusals") or [])
    return facts
