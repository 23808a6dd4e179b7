# -*- coding: utf-8 -*-
"""Controller-side filters for the usb_control role: the policy's approved devices checked before anything
changes on a laptop, and the Windows registry values of a mode. The logic lives in module_utils (one
definition of a device id for the laptop, the controller and the CLI); this file only exposes it."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError


def _utils(name):
    # The controller's one loader of module_utils (their fallback imports use bare names, which it provides).
    from deskguard.site import module_utils

    return module_utils(name)


def usb_approved(entries):
    """The approved-device list, checked and normalised; a bad entry stops the play with its position."""
    try:
        return _utils("deskguard_usb_policy").check_approved(entries)
    except ValueError as exc:  # the module_utils' PolicyError
        raise AnsibleFilterError(str(exc)) from None


def usb_windows_values(mode, approved, extra_allow_ids=()):
    try:
        return _utils("deskguard_usb_windows").windows_usb_values(mode, approved, extra_allow_ids)
    except ValueError as exc:  # the module_utils' PolicyError
        raise AnsibleFilterError(str(exc)) from None


class FilterModule:
    def filters(self):
        return {"deskguard_usb_approved": usb_approved, "deskguard_usb_windows_values": usb_windows_values}
