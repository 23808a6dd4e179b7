"""module_utils/deskguard_usb_probe + deskguard_usb_report: devices read from (a fake) sysfs, recent blocks
from real USBGuard audit lines, and USB-001..003 evaluated per mode."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins" / "module_utils"))
import deskguard_usb_probe as probe  # noqa: E402
import deskguard_usb_report as report  # noqa: E402

pytestmark = pytest.mark.unit

# Device descriptor (18 bytes), configuration (9), interface 08:06:50 (9), two endpoints (7 each).
STICK_DESCRIPTORS = (bytes([18, 1, 0, 2, 0, 0, 0, 64, 0xF4, 0x46, 1, 0, 0, 0, 1, 2, 3, 1])
                     + bytes([9, 2, 32, 0, 1, 1, 0, 0x80, 50])
                     + bytes([9, 4, 0, 0, 2, 8, 6, 0x50, 0])
                     + bytes([7, 5, 0x81, 2, 0, 2, 0]) + bytes([7, 5, 0x02, 2, 0, 2, 0]))
KEYBOARD_DESCRIPTORS = (bytes([18, 1, 0, 2, 0, 0, 0, 8, 0x27, 6, 1, 0, 0, 0, 1, 2, 3, 1])
                        + bytes([9, 2, 34, 0, 1, 1, 0, 0xA0, 50]) + bytes([9, 4, 0, 0, 1, 3, 1, 1, 0]))

# Two lines as USBGuard 1.1.2 wrote them in the lab laptop VM.
AUDIT = """\
[1795901464.646] (A) uid=0 pid=625 result='SUCCESS' device.system_name='/devices/pci0000:00/0000:00:04.0/usb2/2-1' target.new='block' device.rule='block id 46f4:0001 serial "DGBAD1" name "QEMU USB HARDDRIVE" hash "EHtL" via-port "2-1" with-interface 08:06:50 with-connect-type "unknown"' target.old='block' type='Policy.Device.Update'
[1795901464.862] (A) uid=0 pid=625 result='SUCCESS' device.system_name='/devices/pci0000:00/0000:00:04.0/usb1/1-2' target.new='allow' device.rule='block id 0627:0001 serial "68284" name "QEMU USB Keyboard" via-port "1-2" with-interface 03:01:01 with-connect-type "unknown"' target.old='block' type='Policy.Device.Update'
"""


def test_interfaces_come_from_raw_descriptors():
    assert probe.interfaces_from_descriptors(STICK_DESCRIPTORS) == ["08:06:50"]
    assert probe.interfaces_from_descriptors(KEYBOARD_DESCRIPTORS) == ["03:01:01"]
    assert probe.interfaces_from_descriptors(b"\x00\x01") == []  # a corrupt length stops the walk


def _device(root, port, vid, pid, serial, product, authorized, descriptors):
    d = root / port
    d.mkdir()
    for name, value in (("idVendor", vid), ("idProduct", pid), ("serial", serial), ("product", product),
                        ("authorized", authorized)):
        (d / name).write_text(value + "\n")
    (d / "descriptors").write_bytes(descriptors)


def test_attached_devices_from_sysfs_blocked_ones_included(tmp_path):
    _device(tmp_path, "2-1", "46f4", "0001", "DGBAD1", "QEMU USB HARDDRIVE", "0", STICK_DESCRIPTORS)
    _device(tmp_path, "1-2", "0627", "0001", "68284", "QEMU USB Keyboard", "1", KEYBOARD_DESCRIPTORS)
    (tmp_path / "usb1").mkdir()  # root hub: not a device of interest
    (tmp_path / "1-2:1.0").mkdir()  # an interface folder
    devices = {d["port"]: d for d in probe.attached_devices(str(tmp_path))}
    assert sorted(devices) == ["1-2", "2-1"]
    assert devices["2-1"] == {"port": "2-1", "id": "46f4:0001", "serial": "DGBAD1", "name": "QEMU USB HARDDRIVE",
                              "interfaces": ["08:06:50"], "authorized": False, "storage": True, "block_devices": []}
    assert devices["1-2"]["authorized"] and not devices["1-2"]["storage"]


def test_recent_blocks_from_the_audit_log(tmp_path):
    log = tmp_path / "audit.log"
    log.write_text(AUDIT)
    assert probe.recent_blocks(str(log)) == [
        {"time": "2026-11-28T21:31:04Z", "target": "block", "id": "46f4:0001", "serial": "DGBAD1",
         "name": "QEMU USB HARDDRIVE"}]
    assert probe.recent_blocks(str(tmp_path / "missing")) == []


def test_only_the_tail_of_a_huge_audit_log_is_read(tmp_path):
    log = tmp_path / "audit.log"
    log.write_text("x" * 5000 + "\n" + AUDIT)
    assert len(probe.recent_blocks(str(log), max_bytes=len(AUDIT) + 10)) == 1


def facts(devices, drift=(), running_matches=True, active="active"):
    return {"installed": True, "devices": devices, "blocked": [d for d in devices if not d["authorized"]],
            "recent_blocks": [], "unit": {"enabled": "enabled", "active": active}, "drift": list(drift),
            "rendered_error": None, "running_rules": 3, "rendered_rules": 3, "running_matches": running_matches}


def stick(serial, authorized, disks=()):
    return {"port": "2-1", "id": "46f4:0001", "serial": serial, "name": "QEMU USB HARDDRIVE",
            "interfaces": ["08:06:50"], "authorized": authorized, "storage": True, "block_devices": list(disks)}


def status(results):
    return {r["id"]: r["status"] for r in results}


def test_block_mode_passes_with_a_blocked_stick_and_fails_with_an_allowed_one():
    assert status(report.evaluate(facts([stick("X", False)]), "block", [])) == {
        "USB-001": "pass", "USB-002": "not-applicable", "USB-003": "pass"}
    failed = report.evaluate(facts([stick("X", True)]), "block", [{"id": "46f4:0001", "serial": "X"}])
    assert failed[0]["status"] == "fail" and "46f4:0001 X" in failed[0]["observed"]


def test_allow_listed_approved_allowed_others_blocked():
    approved = [{"id": "46f4:0001", "serial": "OK"}]
    good = facts([stick("OK", True), stick("BAD", False)])
    assert status(report.evaluate(good, "allow_listed", approved)) == {
        "USB-001": "pass", "USB-002": "pass", "USB-003": "pass"}
    refused = report.evaluate(facts([stick("OK", False)]), "allow_listed", approved)
    assert status(refused)["USB-002"] == "fail" and "OK" in refused[1]["observed"]
    leak = report.evaluate(facts([stick("BAD", True)]), "allow_listed", approved)
    assert status(leak)["USB-001"] == "fail"


def test_read_only_fails_on_a_writable_disk_or_a_rw_mount():
    ro = {"name": "sda", "read_only": True, "mounts": [{"target": "/media/x", "options": "ro,nosuid"}]}
    assert status(report.evaluate(facts([stick("X", True, [ro])]), "read_only", []))["USB-001"] == "pass"
    mounted_before = dict(ro, mounts=[{"target": "/media/x", "options": "rw,relatime"}])
    assert status(report.evaluate(facts([stick("X", True, [mounted_before])]), "read_only", []))["USB-001"] == "fail"
    writable = dict(ro, read_only=False, mounts=[])
    assert status(report.evaluate(facts([stick("X", True, [writable])]), "read_only", []))["USB-001"] == "fail"


def test_policy_in_force_means_running_equals_rendered_and_no_drift():
    assert status(report.evaluate(facts([], running_matches=False), "block", []))["USB-003"] == "fail"
    drifted = report.evaluate(facts([], drift=[{"path": "/etc/usbguard/rules.conf", "reason": "content"}]),
                              "block", [])
    assert drifted[2]["status"] == "fail" and "rules.conf (content)" in drifted[2]["observed"]
    stopped = status(report.evaluate(facts([], active="inactive", running_matches=False), "block", []))
    assert stopped == {"USB-001": "fail", "USB-002": "not-applicable", "USB-003": "fail"}


def test_no_usbguard_fails_every_control_plainly():
    results = report.evaluate({"installed": False, "devices": []}, "block", [])
    assert {r["status"] for r in results} == {"fail"} and results[0]["observed"] == "usbguard not installed"


def test_a_container_has_every_usb_control_not_applicable():
    results = report.evaluate({"not_applicable": "this host is a container", "devices": []}, "block", [])
    assert {r["status"] for r in results} == {"not-applicable"}
