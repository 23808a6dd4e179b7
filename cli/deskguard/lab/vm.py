"""Laptop VMs: qemu-system-x86_64 under TCG, root on LUKS2. (To be implemented.)"""

from __future__ import annotations


def start_vms(state, count, rootfs, log=print):
    raise NotImplementedError


def stop_vm(host):
    raise NotImplementedError


def usb_plug(name, kind="storage", serial=None, device_id=None):
    raise NotImplementedError


def usb_unplug(name, device_id):
    raise NotImplementedError
