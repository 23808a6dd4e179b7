# -*- coding: utf-8 -*-
"""ufw, converged in one call: default policies, the exact set of allow rules, enabled.

The management rules are added before ufw is enabled, and a rollback timer (deskguard_rollback) is armed
before any change that could cut the management channel; the play disarms it only after a *new* SSH connection
has succeeded. A laptop that loses its management channel disables its own firewall within minutes.
Reading ufw (what the nightly run collects) is deskguard_ufw_inspect, imported here.
"""

from __future__ import annotations

try:
    from ansible.module_utils import deskguard_rollback
    from ansible.module_utils.deskguard_ufw_inspect import (  # noqa: F401  (callers use them as this module's)
        UfwError, _canonical, _run, added_rules, is_enabled, read_defaults, rule_args)
except ImportError:  # unit tests and the agent import the kit's module_utils as plain modules
    import deskguard_rollback
    from deskguard_ufw_inspect import (  # noqa: F401
        UfwError, _canonical, _run, added_rules, is_enabled, read_defaults, rule_args)

ROLLBACK_UNIT = deskguard_rollback.FIREWALL_UNIT

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
