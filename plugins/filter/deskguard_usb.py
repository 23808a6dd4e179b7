# -*- coding: utf-8 -*-
"""Controller-side filters for the usb_control role: the policy's approved devices checked before anything
changes on a laptop, and the Windows registry values of a mode. The logic lives in module_utils (one
definition of a device id for the laptop, the controller and the CLI); this file only exposes it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from ansible.errors import AnsibleFilterError

_UTILS = Path(__file__).resolve().parents[1] / "module_utils"


def _utils(name):
    """Load plugins/module_utils/<name>.py under its bare name (its fallback imports use bare names)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, _UTILS / (name + ".py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def usb_approved(entries):
    """The approved-device list, checked and normalised; a bad entry stops the play with its position."""
    try:
        return _utils("deskguard_usb_policy").check_approved(entries)
    except ValueError as exc:  # PolicyError; it may come from either import path of module_utils
        raise AnsibleFilterError(str(exc)) from None


def usb_windows_values(mode, approved, extra_allow_ids=()):
    _utils("deskguard_usb_policy")  # first: the Windows helper imports it by its bare name
    try:
        return _utils("deskguard_usb_windows").windows_usb_values(mode, approved, extra_allow_ids)
    except ValueError as exc:  # PolicyError; it may come from either import path of module_utils
        raise AnsibleFilterError(str(exc)) from None


class FilterModule:
    def filters(self):
        return {"deskguard_usb_approved": usb_approved, "deskguard_usb_windows_values": usb_windows_values}
