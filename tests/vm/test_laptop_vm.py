"""Laptop VM tier: real kernel, LUKS2 root on dm-crypt, USB hot-plug, crash recovery.

One VM for the whole session (the `lab_laptop` fixture); every SSH command costs 1-3 s under TCG, so each
test does its checks in one or two round trips. The crash-recovery test kills that VM: it stays last.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from deskguard.errors import LabError
from deskguard.lab import usb, vm
from deskguard.lab.image import LaptopImage
from deskguard.lab.state import LabState, is_alive
from keyvalues import key_values

pytestmark = pytest.mark.vm

NAME = "lab-vm1"


@pytest.fixture
def laptop(lab_laptop):
    host = LabState.load().hosts[NAME]
    assert is_alive(host)
    return host


def _run(host, script: str, stdin: str | None = None, timeout: float = 180):
    res = vm.ssh(host, script, timeout=timeout, stdin=stdin)
    assert res.returncode == 0, (f"exit {res.returncode} (qemu running: {is_alive(host)}, lab state: "
                                 f"{sorted(LabState.load().hosts)})\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}")
    return key_values(res.stdout)


def test_root_is_luks2_on_dm_crypt_and_the_installer_passphrase_opens_it(laptop):
    image = LaptopImage(Path(laptop.extra["image"]))
    passphrase = image.passphrase_file.read_text()
    assert oct(image.passphrase_file.stat().st_mode & 0o777) == "0o600"
    # The passphrase travels on stdin (read by the shell's `read` builtin, piped by `printf`, a builtin too):
    # it never appears in any process's argv.
    script = r"""
read -r pass
dev=$(sudo -n cryptsetup status root | awk '$1 == "device:" {print $2}')
echo "SOURCE=$(findmnt -no SOURCE /)"
echo "TARGET=$(sudo -n dmsetup table root | cut -d' ' -f3)"
echo "LSBLK=$(lsblk -no TYPE /dev/mapper/root)"
echo "TYPE=$(sudo -n cryptsetup status root | awk '$1 == "type:" {print $2}')"
echo "DEV=$dev"
printf '%s\n' "$pass" | sudo -n cryptsetup open --test-passphrase --key-slot 0 "$dev"; echo "PASS_OK=$?"
printf '%s\n' "not-$pass" | sudo -n cryptsetup open --test-passphrase --key-slot 0 "$dev" 2>/dev/null
echo "WRONG=$?"
sudo -n cryptsetup open --test-passphrase --key-slot 1 --key-file /etc/keys/root.key "$dev"; echo "KEYFILE_OK=$?"
echo "KEYMODE=$(sudo -n stat -c '%a %s' /etc/keys/root.key)"
echo "CRYPTTAB=$(sudo -n cat /etc/crypttab)"
echo "JSON=$(sudo -n cryptsetup luksDump --dump-json-metadata "$dev" | tr -d '\n')"
. /etc/os-release; echo "CODENAME=$VERSION_CODENAME"
"""
    r = _run(laptop, script, stdin=passphrase + "\n")
    # The lab records the release it started (the demo refuses a lab of another one): the one the laptop runs.
    assert r["CODENAME"] == laptop.extra["suite"] == image.facts()["suite"], (r["CODENAME"], laptop.extra)
    assert r["SOURCE"] == "/dev/mapper/root"
    assert r["TARGET"] == "crypt"
    assert r["LSBLK"] == "crypt"
    assert r["TYPE"] == "LUKS2"
    assert r["DEV"].startswith("/dev/vd")
    assert r["PASS_OK"] == "0", "the installer passphrase does not open slot 0"
    assert r["WRONG"] != "0", "a wrong passphrase opened the disk"
    assert r["KEYFILE_OK"] == "0", "the initramfs keyfile does not open slot 1"
    assert r["KEYMODE"] == "400 64"
    uuid = image.facts()["luks_uuid"]
    assert r["CRYPTTAB"] == f"root UUID={uuid} /etc/keys/root.key luks,discard"
    meta = json.loads(r["JSON"])
    assert sorted(meta["keyslots"]) == ["0", "1"]
    assert {s["kdf"]["type"] for s in meta["keyslots"].values()} == {"pbkdf2"}


def test_base_image_header_checked_on_the_host(laptop, tmp_path):
    """The cached base image's LUKS2 header, copied out of the qcow2: slot 0 opens with the installer
    passphrase (given as a key file, never in argv), a wrong one does not."""
    import subprocess

    image = LaptopImage(Path(laptop.extra["image"]))
    header = tmp_path / "header.img"
    subprocess.run(["qemu-img", "dd", "-f", "qcow2", "-O", "raw", "bs=1M", "count=16", f"if={image.disk}",
                    f"of={header}"], check=True, capture_output=True)
    dump = json.loads(subprocess.run(["cryptsetup", "luksDump", "--dump-json-metadata", str(header)],
                                     check=True, capture_output=True, text=True).stdout)
    assert dump["config"] and sorted(dump["keyslots"]) == ["0", "1"]
    good = subprocess.run(["cryptsetup", "open", "--test-passphrase", "--key-slot", "0", "--key-file",
                           str(image.passphrase_file), str(header)], capture_output=True, text=True)
    assert good.returncode == 0, good.stderr
    wrong = tmp_path / "wrong"
    wrong.write_text(image.passphrase_file.read_text() + "x")
    bad = subprocess.run(["cryptsetup", "open", "--test-passphrase", "--key-file", str(wrong), str(header)],
                         capture_output=True, text=True)
    assert bad.returncode != 0


def _poll_usb(serials: list[str], present: bool) -> str:
    """Guest-side bounded poll (up to 20 s) for USB devices by serial; prints what it finds."""
    want = " ".join(serials)
    return rf"""
found() {{ grep -lx "$1" /sys/bus/usb/devices/*/serial 2>/dev/null | head -n1; }}
i=0
while :; do
  ok=1
  for s in {want}; do
    if [ -n "$(found "$s")" ]; then [ {int(present)} = 1 ] || ok=0; else [ {int(present)} = 0 ] || ok=0; fi
  done
  if [ $ok = 1 ] && [ {int(present)} = 1 ]; then
    # a stick is not really there until the kernel made its block device
    for s in {want}; do
      d=$(dirname "$(found "$s")")
      if [ "$(cat "$d/product")" = "QEMU USB HARDDRIVE" ] &&
         [ -z "$(ls -d "$d"/*/host*/target*/*/block/* 2>/dev/null)" ]; then ok=0; fi
    done
  fi
  [ $ok = 1 ] && break
  i=$((i+1)); [ $i -ge 200 ] && break
  sleep 0.1
done
for s in {want}; do
  f=$(found "$s")
  if [ -n "$f" ]; then
    d=$(dirname "$f")
    echo "$s=$(cat "$d/idVendor"):$(cat "$d/idProduct") $(cat "$d/product")"
    b=$(ls -d "$d"/*/host*/target*/*/block/* 2>/dev/null | head -n1)
    if [ -n "$b" ]; then echo "$s.block=$(basename "$b") $(($(cat "$b/size") * 512))"; fi
  else
    echo "$s=absent"
  fi
done
"""


def test_usb_stick_hot_plug_is_seen_by_the_guest_kernel_then_unplugged(laptop):
    serial = "DGSTICK42"
    dev = usb.plug(NAME, kind="storage", serial=serial, device_id="stick1")
    assert dev == "stick1"
    try:
        r = _run(laptop, _poll_usb([serial], present=True))
    finally:
        usb.unplug(NAME, dev)
    assert r[serial] == "46f4:0001 QEMU USB HARDDRIVE"
    name, size = r[f"{serial}.block"].split()
    assert name.startswith("sd") and int(size) == usb.USB_STICK_BYTES
    r = _run(laptop, _poll_usb([serial], present=False))
    assert r[serial] == "absent"
    assert not (Path(laptop.extra["dir"]) / "stick1.img").exists()


def test_usb_keyboard_and_mouse_hot_plug(laptop):
    kbd = usb.plug(NAME, kind="keyboard", serial="DGKBD7")
    mouse = usb.plug(NAME, kind="mouse", serial="DGMOUSE7")
    assert kbd != mouse
    try:
        r = _run(laptop, _poll_usb(["DGKBD7", "DGMOUSE7"], present=True))
    finally:
        usb.unplug(NAME, kbd)
        usb.unplug(NAME, mouse)
    assert r["DGKBD7"].endswith("QEMU USB Keyboard")
    assert r["DGMOUSE7"].endswith("QEMU USB Mouse")
    r = _run(laptop, _poll_usb(["DGKBD7", "DGMOUSE7"], present=False))
    assert r["DGKBD7"] == r["DGMOUSE7"] == "absent"


def test_usb_errors_on_a_running_vm(laptop):
    with pytest.raises(LabError, match=f"{NAME} has no USB device 'nope'"):
        usb.unplug(NAME, "nope")
    with pytest.raises(LabError, match="has no USB device 'xhci'"):
        usb.unplug(NAME, "xhci")  # a device, but not a USB one the lab plugged: refused
    dev = usb.plug(NAME, kind="keyboard", device_id="dupe")
    try:
        with pytest.raises(LabError, match="already has a device 'dupe'"):
            usb.plug(NAME, kind="mouse", device_id="dupe")
    finally:
        usb.unplug(NAME, dev)


def test_qemu_crash_is_recovered_by_lab_up(laptop, lab_session, lab_inventory_dir):
    """Last in this module: it kills the session's VM (by PID) and lets `lab up` bring a fresh one back."""
    _run(laptop, "echo crashed | sudo -n tee /var/tmp/dg-crash-marker >/dev/null && sync && echo OK=1")
    os.kill(laptop.pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while is_alive(laptop):
        assert time.monotonic() < deadline, "qemu survived SIGKILL"
        time.sleep(0.1)

    state = lab_session.up(laptops=1, inventory_dir=lab_inventory_dir, log=lambda m: None)
    new = state.hosts[NAME]
    assert new.pid != laptop.pid and is_alive(new)
    assert new.extra["boot"] == "snapshot"
    before = time.time()
    r = _run(new, 'echo "HOST=$(cat /proc/sys/kernel/hostname)"; echo "NOW=$(date +%s.%N)"; '
                  'echo "ROOT=$(findmnt -no SOURCE /)"; '
                  'test -e /var/tmp/dg-crash-marker && echo MARKER=kept || echo MARKER=gone')
    after = time.time()
    assert r["HOST"] == NAME
    assert r["ROOT"] == "/dev/mapper/root"
    assert r["MARKER"] == "gone", "the recovered VM did not start from a clean disk"
    assert before - 2 <= float(r["NOW"]) <= after + 2, "guest clock not set after the snapshot restore"
