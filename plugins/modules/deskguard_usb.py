#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Ansible module: put the USB policy in force in one round trip (see module_utils/deskguard_usb_apply.py)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: deskguard_usb
short_description: Render, validate and enforce the USBGuard policy and read-only storage, all or nothing
description:
  - Renders C(usbguard-daemon.conf), C(rules.conf) (input devices and hubs first, the laptop's own devices
    recorded at enrolment, then storage according to I(mode)), and in C(read_only) mode a udev rule that makes
    USB disks read-only; removes files in C(rules.d) and C(IPCAccessControl.d) so that only root can use
    the daemon.
  - The rules are validated with C(usbguard-rule-parser) before anything is written; after the restart the
    module checks that the daemon runs exactly the rendered rules. On any failure the previous files are put
    back and the daemon restarted on them.
  - In check mode it reports what would change and changes nothing.
options:
  mode: {description: "C(block), C(read_only) or C(allow_listed).", type: str, required: true,
         choices: [block, read_only, allow_listed]}
  approved_devices:
    description: "Approved devices, each C({id: VVVV:PPPP, serial: ...}) (serial optional)."
    type: list
    elements: dict
    default: []
  allowed_classes:
    description: Extra interface classes (two hex digits) always allowed besides HID (03) and hubs (09).
    type: list
    elements: str
    default: []
  rebaseline:
    description: Record the laptop's own devices again (C(usbguard generate-policy), storage left out).
    type: bool
    default: false
author: deskguard
"""

EXAMPLES = r"""
- name: USB-001 | PATCH | USB policy in force
  deskguard_usb:
    mode: allow_listed
    approved_devices: [{id: "0951:1666", serial: E0D55EA573FC}]
"""

RETURN = r"""
files: {description: Files that differed and why., type: list, returned: always}
restarted: {description: Whether usbguard was restarted., type: bool, returned: always}
rules: {description: Number of rules in force., type: int, returned: always}
enrolment_recorded: {description: The laptop's own devices were recorded in this run., type: bool, returned: always}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible.module_utils.deskguard_usb_apply import PolicyError, UsbError, apply
from ansible.module_utils.deskguard_usb_policy import MODULE_ARGS


def main():
    module = AnsibleModule(
        argument_spec=dict(MODULE_ARGS, rebaseline=dict(type="bool", default=False)),
        supports_check_mode=True,
    )
    try:
        result = apply(module.params, module.check_mode)
    except (UsbError, PolicyError, OSError) as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
