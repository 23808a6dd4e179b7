"""USB hot-plug into laptop VMs through their QMP socket: sticks (a fresh filesystem image), keyboards, mice."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

from ..errors import LabError
from .state import is_alive
from .vm import KIND, _last_line, vm_dir

USB_KINDS = {"storage": "usb-storage", "keyboard": "usb-kbd", "mouse": "usb-mouse", "tether": "usb-net"}
# A phone sharing its mobile data over USB: QEMU's usb-net presents RNDIS + CDC Ethernet (the Linux USB
# gadget's ids, as Android phones do), so the guest binds a real rndis_host/cdc_ether. Its own user network.
TETHER_NET = "10.0.3.0/24"
USB_STICK_BYTES = 64 << 20
_ID_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,31}$")
_SERIAL_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

def _vm_host(name: str):
    from .state import LabState

    host = LabState.load().hosts.get(name)
    if host is None:
        raise LabError(f"no lab host named {name!r}; see `deskguard lab status`")
    if host.kind != KIND:
        raise LabError(f"{name} is a lab {host.kind}, not a laptop VM: USB devices plug into VMs only "
                       f"(start one with `deskguard lab up --laptops 1`)")
    return host


def _qmp_sock(host) -> Path:
    return Path(host.extra.get("qmp") or vm_dir(host.name) / "qmp.sock")


def _live_qmp_sock(host) -> Path:
    sock = _qmp_sock(host)
    if not sock.exists():
        raise LabError(f"{host.name}'s QMP socket {sock} is missing: the VM is not running; "
                       f"run `deskguard lab up --laptops 1`")
    if not is_alive(host):
        raise LabError(f"{host.name} is not running (its qemu exited; QMP socket {sock} is stale); "
                       f"run `deskguard lab up --laptops 1`")
    return sock


def plug(name: str, kind: str = "storage", serial: str | None = None, device_id: str | None = None) -> str:
    """Hot-plug a USB stick (a fresh 64 MiB vfat/ext4 image), keyboard or mouse into laptop VM `name`."""
    from .qmp import monitor

    if kind not in USB_KINDS:
        raise LabError(f"unknown USB device kind {kind!r}; use one of: {', '.join(USB_KINDS)}")
    if serial is not None and not _SERIAL_RE.match(serial):
        raise LabError(f"USB serial {serial!r} must be 1-64 letters, digits, '.', '_' or '-'")
    if device_id is not None and not _ID_RE.match(device_id):
        raise LabError(f"device id {device_id!r} must start with a letter and have at most 32 letters, digits, "
                       f"'.', '_' or '-'")
    host = _vm_host(name)
    sock = _live_qmp_sock(host)
    rundir = Path(host.extra.get("dir") or vm_dir(name))
    with monitor(sock, name) as mon:
        present = mon.peripherals()
        if device_id is None:
            n = 1
            while f"usb{n}" in present:
                n += 1
            device_id = f"usb{n}"
        elif device_id in present:
            raise LabError(f"{name} already has a device {device_id!r}; unplug it first or choose another --id")
        dev = {"driver": USB_KINDS[kind], "id": device_id, "bus": "xhci.0"}
        if serial:
            dev["serial"] = serial
        if kind == "storage":
            img = rundir / f"{device_id}.img"
            _make_stick(img, serial or device_id)
            node = f"{device_id}-drive"
            if node in mon.block_nodes():
                mon.cmd("blockdev-del", **{"node-name": node})
            mon.cmd("blockdev-add", **{"driver": "raw", "node-name": node,
                                       "file": {"driver": "file", "filename": str(img)}})
            dev["drive"] = node
            dev["removable"] = True
            try:
                mon.cmd("device_add", **dev)
            except LabError:
                mon.cmd("blockdev-del", **{"node-name": node})
                img.unlink(missing_ok=True)
                raise
        elif kind == "tether":
            netdev = f"{device_id}-net"
            mon.cmd("netdev_add", type="user", id=netdev, net=TETHER_NET)
            dev["netdev"] = netdev
            try:
                mon.cmd("device_add", **dev)
            except LabError:
                mon.cmd("netdev_del", id=netdev)
                raise
        else:
            mon.cmd("device_add", **dev)
    return device_id


def _make_stick(img: Path, label: str) -> None:
    """A small USB stick image with a file system the guest can mount (vfat if mkfs.vfat exists)."""
    with open(img, "wb") as fh:
        fh.truncate(USB_STICK_BYTES)
    label = re.sub(r"[^A-Za-z0-9]", "", label)[:11].upper() or "DGUSB"
    if shutil.which("mkfs.vfat"):
        cmd = ["mkfs.vfat", "-n", label, str(img)]
    else:
        cmd = ["mkfs.ext4", "-q", "-F", "-L", label[:16], str(img)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        img.unlink(missing_ok=True)
        raise LabError(f"making the USB stick image failed: {_last_line(proc.stderr)}")


def unplug(name: str, device_id: str) -> None:
    """Unplug USB device `device_id` from laptop VM `name` (and free its backing image)."""
    from .qmp import monitor

    host = _vm_host(name)
    sock = _live_qmp_sock(host)
    rundir = Path(host.extra.get("dir") or vm_dir(name))
    with monitor(sock, name) as mon:
        present = mon.peripherals()
        if present.get(device_id) not in USB_KINDS.values():
            usb = sorted(k for k, v in present.items() if v in USB_KINDS.values())
            raise LabError(f"{name} has no USB device {device_id!r} (plugged: {', '.join(usb) or 'none'})")
        mon.cmd("device_del", id=device_id)
        deadline = time.monotonic() + 30
        while device_id in mon.peripherals():
            if time.monotonic() > deadline:
                raise LabError(f"{name}: USB device {device_id} was not released within 30 s")
            time.sleep(0.1)
        if present.get(device_id) == USB_KINDS["tether"]:
            mon.cmd("netdev_del", id=f"{device_id}-net")
        # The stick's internal SCSI disk lets go of its drive a moment after the device left the bus.
        node = f"{device_id}-drive"
        while node in mon.block_nodes():
            try:
                mon.cmd("blockdev-del", **{"node-name": node})
            except LabError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    (rundir / f"{device_id}.img").unlink(missing_ok=True)
