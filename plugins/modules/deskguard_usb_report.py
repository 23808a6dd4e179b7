#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Ansible module: USB-001..003 facts and results from a laptop, read-only (module_utils/deskguard_usb_report.py)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: deskguard_usb_report
short_description: Report attached USB devices, recent blocks and whether the USB policy is in force
description:
  - Never changes anything. Attached devices come from sysfs (so the report works with the daemon down);
    recent blocks from the USBGuard audit log; "in force" compares the daemon's running rules with the
    rules deskguard renders for this laptop and the files on disk with the rendered ones.
  - Returns C(usb) (the facts) and C(controls), one result per control USB-001..003.
options:
  mode: {description: The policy's mode., type: str, required: true, choices: [block, read_only, allow_listed]}
  approved_devices: {description: The policy's approved devices., type: list, elements: dict, default: []}
  allowed_classes: {description: The policy's extra allowed classes., type: list, elements: str, default: []}
author: deskguard
"""

EXAMPLES = r"""
- name: USB-003 | AUDIT | USB policy in force
  deskguard_usb_report:
    mode: block
"""

RETURN = r"""
usb: {description: "Devices, blocked ones, recent blocks, daemon state, drift.", type: dict, returned: always}
controls: {description: "[{id, title, status, observed, expected, evidence}] for USB-001..003.", type: list, returned: always}
finding: {description: One-line note when a control fails., type: str, returned: when failing}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible.module_utils.deskguard_usb_apply import PolicyError, UsbError
from ansible.module_utils.deskguard_usb_policy import MODULE_ARGS
from ansible.module_utils.deskguard_usb_report import collect, evaluate


def main():
    module = AnsibleModule(
        argument_spec=MODULE_ARGS,
        supports_check_mode=True,
    )
    params = dict(module.params, rebaseline=False)
    try:
        facts = collect(params)
        controls = evaluate(facts, params["mode"], params["approved_devices"])
    except (UsbError, PolicyError, OSError) as exc:
        module.fail_json(msg=str(exc))
    result = dict(changed=False, usb=facts, controls=controls)
    failing = [c for c in controls if c["status"] == "fail"]
    if failing:
        result["finding"] = "; ".join("%s %s" % (c["id"], c["observed"]) for c in failing)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
