#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Ansible module: the laptop's security posture in one read-only call (the nightly compliance run)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: deskguard_posture
short_description: Collect the laptop's security posture in one call, changing nothing
description:
  - Reads, in one round trip, what every control needs (disk encryption and keyslots, screen lock settings,
    firewall, automatic updates and pending reboot, USB policy in force, VPN, the check-in agent, the network,
    OS) and returns the observed values; the controller
    judges them against the policy (action plugin C(deskguard_comply)).
  - Never changes anything, in check mode or not. A section that cannot be read is listed in C(errors).
  - "On Windows (a PowerShell connection) Ansible runs plugins/modules_windows/deskguard_posture.ps1 instead,
    with the same options, sections and result shape, each section read by an
    Ansible.ModuleUtils.DeskguardPosture<Section>.psm1 module_util; C(posture.os.family) is C(Windows) there.
    Not yet verified on a real Windows host."
options:
  sections:
    description: Sections to collect (default all).
    type: list
    elements: str
  params:
    description:
      - "Policy values per section that the section needs to judge 'in force', e.g.
        C({usb: {mode, approved_devices, allowed_classes}, vpn: {interface}})."
    type: dict
    default: {}
author: deskguard
"""

EXAMPLES = r"""
- name: COMPLY | AUDIT | Posture
  deskguard_posture:
"""

RETURN = r"""
posture: {description: Observed values per section., type: dict, returned: always}
errors: {description: "Sections that could not be read, with the reason.", type: dict, returned: always}
timings: {description: Seconds spent per section on the laptop., type: dict, returned: always}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible.module_utils.deskguard_posture import COLLECTORS, collect


def main():
    module = AnsibleModule(argument_spec=dict(sections=dict(type="list", elements="str"),
                                              params=dict(type="dict", default={})),
                           supports_check_mode=True)
    unknown = sorted(set(module.params["sections"] or ()) - set(COLLECTORS))
    if unknown:
        module.fail_json(msg="unknown posture sections: %s (known: %s)" % (", ".join(unknown), ", ".join(COLLECTORS)))
    posture, errors, timings = collect(module.params["sections"], params=module.params["params"])
    module.exit_json(changed=False, posture=posture, errors=errors, timings=timings)


if __name__ == "__main__":
    main()
