# -*- coding: utf-8 -*-
"""ufw, converged in one call: default policies, the exact set of allow rules, enabled.

The management rules are added before ufw is enabled, and a rollback timer (deskguard_rollback) is armed
before any change that could cut the management channel; the play disarms it only after a *new* SSH connection
has succeeded. A laptop that loses its management channel disables its own firewall within minutes.
"""

from __future__ import annotations

import re
import subprocess

try:
    from ansible.module_utils import deskguard_rollback
except ImportError:  # unit tests and the agent import the kit's module_utils as plain modules
    import deskguard_rollback

ROLLBACK_UNIT = deskguard_rollback.FIREWALL_UNIT


class UfwError(Exception):
    pass


def rule_args(rule):
    """A rule dict -> the argument list after `ufw` (also how `ufw show added` prints it back)."""
    args = ["allow"]
    if rule.get("direction", "in") == "out":
        args.append("out")
    args += ["from", rule.get("src") or "any", "to", "any"]
    if rule.get("port"):
        args += ["port", str(rule["port"])]
    if rule.get("proto"):
        args += ["proto", rule["proto"]]
    if rule.get("comment"):
        args += ["comment", rule["comment"]]
    return args


def _canonical(args):
    return " ".join(a if " " not in a and a else "'%s'" % a for a in args)


def _run(argv):
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.decode(errors="replace")
    if proc.returncode != 0:
        raise UfwError("%s failed (rc %d): %s" % (" ".join(argv), proc.returncode, out.strip()[-500:]))
    return out


def added_rules():
    """Rules ufw holds (active or not), as canonical strings."""
    out = _run(["ufw", "show", "added"])
    rules = []
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("ufw "):
            rules.append(line[4:])
    return rules


def read_defaults(path="/etc/default/ufw"):
    values = {}
    with open(path) as fh:
        for line in fh:
            m = re.match(r'^(DEFAULT_(INPUT|OUTPUT)_POLICY)="?(\w+)"?', line.strip())
            if m:
                values[m.group(2).lower()] = m.group(3).upper()
    return values


def is_enabled():
    return "Status: active" in _run(["ufw", "status"])


POLICY_WORDS = {"deny": "DROP", "reject": "REJECT", "allow": "ACCEPT"}


def plan(incoming, outgoing, management_rules, rules, enabled):
    want = [_canonical(rule_args(r)) for r in list(management_rules) + list(rules)]
    have = added_rules()
    defaults = read_defaults()
    steps = []
    # Management rules first, so they exist before any default or enable step.
    for rule, text in zip(list(management_rules) + list(rules), want):
        if text not in have:
            steps.append(("add", rule_args(rule)))
    for text in have:
        if text not in want:
            steps.append(("delete", text))
    if defaults.get("input") != POLICY_WORDS[incoming]:
        steps.append(("default", ["default", incoming, "incoming"]))
    if defaults.get("output") != POLICY_WORDS[outgoing]:
        steps.append(("default", ["default", outgoing, "outgoing"]))
    if enabled and not is_enabled():
        steps.append(("enable", ["--force", "enable"]))
    if not enabled and is_enabled():
        steps.append(("disable", ["disable"]))
    return steps


def arm_rollback(seconds):
    deskguard_rollback.arm(ROLLBACK_UNIT, seconds, "disable the firewall", ["/usr/sbin/ufw", "--force", "disable"],
                           _run)


def apply(incoming, outgoing, management_rules, rules, enabled, rollback_seconds, check_mode=False):
    if enabled and not management_rules:
        raise UfwError("refusing to enable the firewall without a management rule (it would lock IT out)")
    steps = plan(incoming, outgoing, management_rules, rules, enabled)
    result = {"changed": bool(steps), "steps": [" ".join(s[1]) if isinstance(s[1], list) else "delete " + s[1]
                                                for s in steps], "rollback_armed": False}
    if check_mode or not steps:
        return result
    if enabled and rollback_seconds:
        arm_rollback(rollback_seconds)
        result["rollback_armed"] = True
    for kind, arg in steps:
        if kind == "delete":
            _run(["ufw", "--force", "delete", *_split(arg)])
        else:
            _run(["ufw", *arg])
    return result


def _split(text):
    import shlex

    return shlex.split(text)
