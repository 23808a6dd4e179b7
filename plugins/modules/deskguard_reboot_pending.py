#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Ansible module: report whether updates wait for a reboot (read-only)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: deskguard_reboot_pending
short_description: Report whether installed updates wait for a reboot
description:
  - Debian/Ubuntu, C(/var/run/reboot-required) and the packages that asked for it; Fedora/RHEL,
    C(needs-restarting -r). Never changes anything; never reboots.
  - When a reboot is pending the result carries C(finding), a one-line note that deskguard's summaries show.
options:
  window_start:
    description: The maintenance window's start (HH:MM), quoted in the finding.
    type: str
  reboot_in_window:
    description: Whether the policy lets the laptop reboot itself at the window start.
    type: bool
    default: false
author: deskguard
"""

EXAMPLES = r"""
- name: UPD-001 | AUDIT | Pending reboot after updates
  deskguard_reboot_pending:
    window_start: "06:00"
"""

RETURN = r"""
reboot_pending: {description: "True, False, or null when the system cannot tell.", type: bool, returned: always}
packages: {description: Packages that asked for the reboot (Debian/Ubuntu)., type: list, returned: always}
finding: {description: "One-line note for the summary, only when a reboot is pending.", type: str, returned: when pending}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible.module_utils.deskguard_reboot import reboot_pending


def main():
    module = AnsibleModule(argument_spec=dict(window_start=dict(type="str"),
                                              reboot_in_window=dict(type="bool", default=False)),
                           supports_check_mode=True)
    pending, packages = reboot_pending()
    result = dict(changed=False, reboot_pending=pending, packages=packages)
    if pending:
        window = module.params["window_start"] or "the maintenance window"
        result["finding"] = ("reboot pending after updates (%s): %s" % (
            ", ".join(packages[:5]) or "system",
            "the laptop reboots itself at %s" % window if module.params["reboot_in_window"]
            else "ask the operator to reboot, or allow auto_update_reboot in the policy"))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
