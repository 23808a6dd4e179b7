# -*- coding: utf-8 -*-
"""The Windows registry values for the three USB modes (pure; used by the `deskguard_usb_windows` filter).

Not verified on a real Windows host. Sources: Policy CSP Storage / ADMX RemovableStorage (removable-disk
class GUID and the Deny_* value names), Policy CSP DeviceInstallation (Restrictions key, layered order).
"""

from __future__ import annotations

try:  # inside Ansible
    from ansible.module_utils.deskguard_usb_policy import MODES, PolicyError, check_approved
except ImportError:
    from deskguard_usb_policy import MODES, PolicyError, check_approved

STORAGE = "HKLM:\\SOFTWARE\\Policies\\Microsoft\\Windows\\RemovableStorageDevices"
REMOVABLE_DISKS = STORAGE + "\\{53f5630d-b6bf-11d0-94f2-00a0c91efb8b}"
# Phones and cameras (WPD/MTP) are their own classes: without these, read_only would leave a copy path open.
WPD = (STORAGE + "\\{6AC27878-A6FA-4155-BA85-F98F491D4F33}", STORAGE + "\\{F33FDC04-D1AC-4E8E-9A30-19BBD4B108AE}")
RESTRICTIONS = "HKLM:\\SOFTWARE\\Policies\\Microsoft\\Windows\\DeviceInstall\\Restrictions"
# Only disk drives and portable devices are denied by class: never "removable devices" or the USB class,
# which would also stop a new keyboard, mouse or hub from installing.
DENIED_CLASSES = ("{4d36e967-e325-11ce-bfc1-08002be10318}",  # DiskDrive
                  "{eec5ad98-8080-425f-922a-dabf3de3f69a}")  # WPD


def _dword(path, name, data):
    return {"path": path, "name": name, "type": "dword", "data": data}


def _all_values():
    """Every single value any mode sets, so a mode switch can remove the others' values."""
    return ([_dword(STORAGE, "Deny_All", 1), _dword(REMOVABLE_DISKS, "Deny_Write", 1)]
            + [_dword(p, "Deny_Write", 1) for p in WPD]
            + [_dword(RESTRICTIONS, n, 1) for n in ("AllowDenyLayered", "DenyDeviceClasses", "AllowDeviceIDs",
                                                    "AllowInstanceIDs")]
            + [_dword(RESTRICTIONS, "DenyDeviceClassesRetroactive", 0)])


def windows_usb_values(mode, approved_devices, extra_allow_ids=()):
    """{'present': [values], 'absent': [values], 'lists': {key: {"1": str, ...}}, 'list_values': [values]}.

    `lists` are the numbered list keys of device-installation restrictions, as they must read (an empty
    mapping: the key must not exist); `list_values` the same entries as values to write.
    """
    if mode not in MODES:
        raise PolicyError("usb_control_mode must be one of %s, got %r" % (", ".join(MODES), mode))
    approved = check_approved(approved_devices)
    present = []
    lists = {RESTRICTIONS + "\\DenyDeviceClasses": [], RESTRICTIONS + "\\AllowDeviceIDs": [],
             RESTRICTIONS + "\\AllowInstanceIDs": []}
    if mode == "block":
        present.append(_dword(STORAGE, "Deny_All", 1))
    elif mode == "read_only":
        present += [_dword(REMOVABLE_DISKS, "Deny_Write", 1)] + [_dword(p, "Deny_Write", 1) for p in WPD]
    else:
        ids, instances = [], []
        for dev in approved:
            vid, pid = dev["id"].upper().split(":")
            hw = "USB\\VID_%s&PID_%s" % (vid, pid)
            if dev["serial"] is None:
                ids.append(hw)
            else:
                instances.append("%s\\%s" % (hw, dev["serial"]))
        ids += [str(i) for i in extra_allow_ids]
        lists[RESTRICTIONS + "\\DenyDeviceClasses"] = list(DENIED_CLASSES)
        lists[RESTRICTIONS + "\\AllowDeviceIDs"] = sorted(set(ids))
        lists[RESTRICTIONS + "\\AllowInstanceIDs"] = sorted(set(instances))
        present += [_dword(RESTRICTIONS, "AllowDenyLayered", 1), _dword(RESTRICTIONS, "DenyDeviceClasses", 1),
                    _dword(RESTRICTIONS, "DenyDeviceClassesRetroactive", 0)]
        if ids:
            present.append(_dword(RESTRICTIONS, "AllowDeviceIDs", 1))
        if instances:
            present.append(_dword(RESTRICTIONS, "AllowInstanceIDs", 1))
    keys = {(v["path"], v["name"]) for v in present}
    absent = [v for v in _all_values() if (v["path"], v["name"]) not in keys]
    numbered = {key: {str(n): v for n, v in enumerate(items, 1)} for key, items in lists.items()}
    list_values = [{"path": key, "name": name, "type": "string", "data": data}
                   for key, items in numbered.items() for name, data in items.items()]
    return {"present": present, "absent": absent, "lists": numbered, "list_values": list_values}
