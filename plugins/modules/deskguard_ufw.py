#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Ansible module: converge ufw in one round trip, with a lockout rollback timer."""

from __future__ import annotations

DOCUMENTATION = r"""
module: deskguard_ufw
short_description: Converge ufw (defaults, exact allow rules, enabled) in one call, never locking IT out
description:
  - Adds the management rules first, then the other rules, removes rules not asked for, sets the default
    policies and enables ufw. Refuses to enable ufw without a management rule.
  - Before a change on an enabled firewall it arms a systemd timer that disables ufw after
    I(rollback_seconds) unless the play confirms the management channel and stops the timer.
options:
  incoming: {description: Default incoming policy., type: str, choices: [deny, reject, allow], default: deny}
  outgoing: {description: Default outgoing policy., type: str, choices: [deny, reject, allow], default: allow}
  management_rules:
    description: Rules that keep the management channel open (SSH from the admin network or the VPN).
    type: list
    elements: dict
    default: []
  rules: {description: "Other allow rules (port, proto, src, direction, comment).", type: list, elements: dict, default: []}
  enabled: {description: Whether ufw is on., type: bool, default: true}
  rollback_seconds: {description: Rollback delay; 0 disables the rollback timer., type: int, default: 300}
author: deskguard
"""

EXAMPLES = r"""
- name: FW-001 | PATCH | Default-deny inbound, management allowed
  deskguard_ufw:
    management_rules:
      - {port: 22, proto: tcp, src: 10.8.0.0/16, comment: deskguard management}
"""

RETURN = r"""
steps: {description: The ufw commands run (or that would run in check mode)., type: list, returned: always}
rollback_armed: {description: Whether the rollback timer was armed., type: bool, returned: always}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible.module_utils.deskguard_ufw import UfwError, apply

RULE = dict(port=dict(type="str"), proto=dict(type="str", choices=["tcp", "udp"]), src=dict(type="str"),
            direction=dict(type="str", choices=["in", "out"], default="in"), comment=dict(type="str"))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            incoming=dict(type="str", choices=["deny", "reject", "allow"], default="deny"),
            outgoing=dict(type="str", choices=["deny", "reject", "allow"], default="allow"),
            management_rules=dict(type="list", elements="dict", options=RULE, default=[]),
            rules=dict(type="list", elements="dict", options=RULE, default=[]),
            enabled=dict(type="bool", default=True),
            rollback_seconds=dict(type="int", default=300),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        result = apply(p["incoming"], p["outgoing"], p["management_rules"], p["rules"], p["enabled"],
                       p["rollback_seconds"], module.check_mode)
    except (UfwError, OSError) as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
