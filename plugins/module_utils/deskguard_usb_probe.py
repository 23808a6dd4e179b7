# -*- coding: utf-8 -*-
"""Read-only look at a laptop's USB state: attached devices (from sysfs, so it works with the daemon down),
the rules USBGuard is running, recent blocks from its audit log. Never writes anything.
"""

from __future__ import annotations

import datetime
import os
import re
import subprocess

SYSFS_USB = "/sys/bus/usb/devices"
AUDIT_LOG = "/var/log/usbguard/usbguard-audit.log"
_DEVICE_DIR = re.compile(r"^\d+-[\d.]+$")  # "3-1", "3-1.2": devices; "usb3" root hubs; "3-1:1.0" interfaces


def _read(path, default=None):
    try:
        with open(path, "rb") as fh:
            return fh.read().decode("utf-8", "replace").strip()
    except OSError:
        return default


def interfaces_from_descriptors(raw):
    """Interface classes 'cc:ss:pp' from a device's raw descriptors (sysfs `descriptors`). Read from the
    descriptors because an unauthorised device has no interface folders in sysfs."""
    out = []
    i = 0
    while i + 2 <= len(raw):
        length, kind = raw[i], raw[i + 1]
        if length < 2:
            break
        if kind == 4 and length >= 9 and i + 8 < len(raw):  # INTERFACE descriptor
            value = "%02x:%02x:%02x" % (raw[i + 5], raw[i + 6], raw[i + 7])
            if value not in out:
                out.append(value)
        i += length
    return out


def _block_devices(device_path):
    """Disks and partitions under a USB device, with the kernel's read-only flag and their mounts."""
    mounts = {}
    for line in (_read("/proc/self/mounts", "") or "").splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[0].startswith("/dev/"):
            mounts.setdefault(os.path.basename(parts[0]), []).append({"target": parts[1], "options": parts[3]})
    out = []
    real = os.path.realpath(device_path) + "/"
    try:
        disks = os.listdir("/sys/block")
    except OSError:
        return out
    for disk in sorted(disks):
        base = os.path.realpath(os.path.join("/sys/block", disk))
        if not base.startswith(real):
            continue
        names = [disk] + sorted(p for p in os.listdir(base) if p.startswith(disk))
        for name in names:
            sysdir = base if name == disk else os.path.join(base, name)
            out.append({"name": name, "read_only": _read(os.path.join(sysdir, "ro")) == "1",
                        "mounts": mounts.get(name, [])})
    return out


def attached_devices(root=SYSFS_USB):
    """Every USB device (not root hubs) with id, serial, name, interfaces, authorised, storage, disks."""
    devices = []
    try:
        entries = sorted(os.listdir(root))
    except OSError:
        return devices
    for entry in entries:
        if not _DEVICE_DIR.match(entry):
            continue
        path = os.path.join(root, entry)
        vendor = _read(os.path.join(path, "idVendor"))
        if not vendor:
            continue
        try:
            with open(os.path.join(path, "descriptors"), "rb") as fh:
                interfaces = interfaces_from_descriptors(fh.read())
        except OSError:
            interfaces = []
        dev = {
            "port": entry,
            "id": "%s:%s" % (vendor, _read(os.path.join(path, "idProduct"), "")),
            "serial": _read(os.path.join(path, "serial")),
            "name": _read(os.path.join(path, "product"), ""),
            "interfaces": interfaces,
            "authorized": _read(os.path.join(path, "authorized")) == "1",
            "storage": any(i.startswith("08:") for i in interfaces),
        }
        dev["block_devices"] = _block_devices(path) if dev["storage"] else []
        devices.append(dev)
    return devices


def no_usb_reason(root=SYSFS_USB, detect_virt="systemd-detect-virt"):
    """Why USB control cannot apply on this host (a container shares the host's USB, or there is no USB
    bus at all), or None when it can."""
    if run([detect_virt, "--container", "--quiet"])[0] == 0:
        return "this host is a container: USB devices belong to the machine it runs on"
    if not os.path.isdir(root):
        return "this host has no USB bus"
    return None


def run(argv, timeout=60):
    """(rc, stdout, stderr) of a command; rc 127 when it is not installed."""
    try:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    except FileNotFoundError:
        return 127, "", "%s: not installed" % argv[0]
    except subprocess.TimeoutExpired:
        return 124, "", "%s: timed out after %d s" % (" ".join(argv), timeout)
    return proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")


def unit_state(unit, systemctl="systemctl"):
    """{'enabled': is-enabled word, 'active': is-active word} of a systemd unit."""
    return {"enabled": run([systemctl, "is-enabled", unit])[1].strip() or "unknown",
            "active": run([systemctl, "is-active", unit])[1].strip() or "unknown"}


def running_rules(usbguard="usbguard"):
    """The daemon's rules as it runs them, or None when it does not answer (stopped, or IPC refused)."""
    rc, out, _err = run([usbguard, "list-rules"])
    return out if rc == 0 else None


_AUDIT_FIELD = re.compile(r"(\w[\w.]*)='((?:[^'\\]|\\.)*)'")


def recent_blocks(path=AUDIT_LOG, limit=20, max_bytes=1 << 20):
    """The newest `limit` audit entries where the daemon blocked or rejected a device (oldest first).

    FileAudit lines carry key='value' pairs (target.new='block', device.rule='block id ... serial ...');
    only the tail of the file is read, so a huge log costs no more than max_bytes."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            tail = fh.read().decode("utf-8", "replace")
    except OSError:
        return []
    out = []
    for line in tail.splitlines():
        fields = dict(_AUDIT_FIELD.findall(line))
        if fields.get("target.new") not in ("block", "reject"):
            continue
        rule = fields.get("device.rule", "")
        when = line[1:line.index("]")] if line.startswith("[") and "]" in line else ""
        try:  # FileAudit stamps entries with epoch seconds
            when = datetime.datetime.fromtimestamp(float(when), datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        except ValueError:
            pass
        dev_id = re.search(r"\bid ([0-9a-f]{4}:[0-9a-f]{4})", rule)
        serial = re.search(r'\bserial "((?:[^"\\]|\\.)*)"', rule)
        name = re.search(r'\bname "((?:[^"\\]|\\.)*)"', rule)
        out.append({"time": when, "target": fields["target.new"], "id": dev_id.group(1) if dev_id else None,
                    "serial": serial.group(1) if serial else None, "name": name.group(1) if name else None})
    return out[-limit:]
