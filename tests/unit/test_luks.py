"""module_utils/deskguard_luks against real cryptsetup on LUKS image files (header operations only).

Images are 20 MiB files in tmp_path, formatted with the light PBKDF (pbkdf2, 1000 iterations) so every
cryptsetup call costs milliseconds. No device-mapper is needed.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins" / "module_utils"))
import deskguard_luks as dl  # noqa: E402

pytestmark = [pytest.mark.unit,
              pytest.mark.skipif(shutil.which("cryptsetup") is None, reason="cryptsetup not installed")]

LIGHT = ("--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000")
OLD = b"old-user-passphrase-Q7"
NEW = b"new-user-passphrase-Z9"
RECOVERY = b"recovery\n\x00key-with-newline-and-nul"


def cs(*args, key=None):
    return subprocess.run(["cryptsetup", *args], input=key or b"", capture_output=True)


@pytest.fixture
def image(tmp_path):
    """Factory: a fresh LUKS image holding `key` in `slot`."""
    count = [0]

    def make(key=OLD, slot=3, luks_type="luks2"):
        count[0] += 1
        path = tmp_path / ("disk%d.img" % count[0])
        with open(path, "wb") as fh:
            fh.truncate(20 * 1024 * 1024)
        args = ["luksFormat", "-q", "--type", luks_type, *LIGHT, "--key-file", "-",
                "--keyfile-size", str(len(key))]
        if luks_type == "luks2":
            args += ["--key-slot", str(slot)]
        proc = cs(*args, str(path), key=key)
        assert proc.returncode == 0, proc.stderr
        return str(path)

    return make


def slots(device):
    return sorted(int(s) for s in dl.luks_dump(device)["keyslots"])


def digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------ reading & findings

def test_dump_and_info_of_a_luks2_image(image):
    dev = image()
    dump = dl.luks_dump(dev)
    assert dump["version"] == 2 and list(dump["keyslots"]) == ["3"]
    assert dump["uuid"] == cs("luksUUID", dev).stdout.decode().strip()
    info = dl.device_info(dump)
    assert info["cipher"] == "aes-xts-plain64" and info["key_size"] == 512
    assert info["keyslots"] == [{"slot": 3, "type": "luks2", "pbkdf": "pbkdf2", "hash": "sha256",
                                 "tokens": [], "iterations": 1000}]
    assert dl.findings(info) == ["%s: keyslot 3 uses weak PBKDF pbkdf2 (cryptsetup luksConvertKey --pbkdf "
                                 "argon2id)" % dev]
    assert dl.findings(info, weak_pbkdfs=()) == []


def test_findings_on_weak_settings():
    info = {"device": "/dev/sda2", "version": 2, "cipher": "aes-cbc-essiv:sha256", "key_size": 256,
            "keyslots": [{"slot": 0, "pbkdf": "argon2id"}, {"slot": 1, "pbkdf": "pbkdf2"}]}
    out = dl.findings(info)
    assert len(out) == 3
    assert "cipher aes-cbc-essiv:sha256 is not approved" in out[0]
    assert "256 bits, policy needs >= 512" in out[1]
    assert "keyslot 1 uses weak PBKDF pbkdf2" in out[2]


def test_luks1_is_reported_as_version_1_and_refused(image):
    dev = image(luks_type="luks1")
    dump = dl.luks_dump(dev)
    assert dump["version"] == 1 and list(dump["keyslots"]) == ["0"]
    info = dl.device_info(dump)
    assert (info["cipher"], info["key_size"], info["luks_uuid"]) == (
        "aes-xts-plain64", 512, cs("luksUUID", dev).stdout.decode().strip())
    assert any("LUKS1 header" in f for f in dl.findings(info))
    assert dl.free_slot(dump) == 1
    before = digest(dev)
    with pytest.raises(dl.LuksError, match=r"disk1\.img: LUKS1 header, adding a key needs LUKS2"):
        dl.add_key(dev, OLD, NEW, pbkdf_args=LIGHT)
    with pytest.raises(dl.LuksError, match="rotating a key needs LUKS2"):
        dl.rotate(dev, OLD, NEW, pbkdf_args=LIGHT)
    assert digest(dev) == before


def test_not_luks_and_missing_device(tmp_path):
    plain = tmp_path / "plain.img"
    plain.write_bytes(b"\0" * 1024 * 1024)
    with pytest.raises(dl.LuksError, match=r"plain\.img: not a LUKS device"):
        dl.luks_dump(str(plain))
    with pytest.raises(dl.LuksError, match="no such device"):
        dl.luks_dump(str(tmp_path / "nope"))


def test_erased_header_is_still_luks_but_has_no_keyslots(image):
    dev = image()
    assert cs("luksErase", "-q", dev).returncode == 0
    assert cs("isLuks", dev).returncode == 0            # lab-notes: isLuks cannot prove a wipe
    info = dl.device_info(dl.luks_dump(dev))
    assert info["keyslots"] == [] and any("no keyslots" in f for f in dl.findings(info))
    assert dl.test_key(dev, OLD) is False


def test_free_slot_on_dump_fixtures():
    assert dl.free_slot({"version": 2, "keyslots": {}}) == 0
    assert dl.free_slot({"version": 2, "keyslots": {"0": {}, "1": {}, "3": {}}}) == 2
    assert dl.free_slot({"version": 2, "keyslots": {str(n): {} for n in range(32)}}) is None
    assert dl.free_slot({"version": 1, "keyslots": {str(n): {} for n in range(8)}}) is None
    assert dl.free_slot({"version": 2, "keyslots": {str(n): {} for n in range(8)}}) == 8


# ------------------------------------------------------------------------------------------ keys

def test_add_verify_remove_rotate_never_assuming_slot_0(image):
    dev = image(OLD, slot=3)                         # the only key lives in slot 3
    assert dl.test_key(dev, OLD) and dl.test_key(dev, OLD, slot=3)
    assert not dl.test_key(dev, OLD, slot=0) and not dl.test_key(dev, NEW)
    rec = dl.add_key(dev, OLD, RECOVERY, pbkdf_args=LIGHT)
    assert rec == 0 and slots(dev) == [0, 3]
    assert dl.test_key(dev, RECOVERY, slot=0) and not dl.test_key(dev, RECOVERY, slot=3)
    assert dl.add_key(dev, OLD, RECOVERY, pbkdf_args=LIGHT) == 0 and slots(dev) == [0, 3]   # idempotent
    new = dl.rotate(dev, OLD, NEW, pbkdf_args=LIGHT)
    assert new == 1 and slots(dev) == [0, 1]
    assert dl.test_key(dev, NEW, slot=1) and not dl.test_key(dev, OLD) and dl.test_key(dev, RECOVERY)
    assert dl.rotate(dev, OLD, NEW, pbkdf_args=LIGHT) == 1 and slots(dev) == [0, 1]        # already done
    assert dl.remove_slot(dev, 0, NEW) is True and slots(dev) == [1]
    assert dl.remove_slot(dev, 0, NEW) is False                                           # already gone
    assert dl.test_key(dev, NEW) and not dl.test_key(dev, RECOVERY)


def test_explicit_slot_and_taken_slot(image):
    dev = image(OLD, slot=3)
    assert dl.add_key(dev, OLD, NEW, slot=17, pbkdf_args=LIGHT) == 17
    with pytest.raises(dl.LuksError, match="keyslot 3 is not free"):
        dl.add_key(dev, OLD, RECOVERY, slot=3, pbkdf_args=LIGHT)
    with pytest.raises(dl.LuksError, match="keyslot 32 is not free"):
        dl.add_key(dev, OLD, RECOVERY, slot=32, pbkdf_args=LIGHT)
    assert slots(dev) == [3, 17]


def test_wrong_unlock_key_changes_nothing(image):
    dev = image(OLD, slot=3)
    before_dump, before = dl.luks_dump(dev), digest(dev)
    with pytest.raises(dl.LuksError, match=r"disk1\.img: the unlock key opens no keyslot; nothing changed"):
        dl.add_key(dev, b"wrong", NEW, pbkdf_args=LIGHT)
    with pytest.raises(dl.LuksError, match="the unlock key opens no keyslot"):
        dl.rotate(dev, b"wrong", NEW, pbkdf_args=LIGHT)
    with pytest.raises(dl.LuksError, match="the unlock key opens no keyslot"):
        dl.rotate(dev, b"wrong", NEW, old_slot=3, pbkdf_args=LIGHT)   # luksAddKey itself refuses (rc 2)
    assert dl.luks_dump(dev) == before_dump and digest(dev) == before
    with pytest.raises(dl.LuksError, match="must be non-empty bytes"):
        dl.add_key(dev, b"", NEW)
    with pytest.raises(dl.LuksError, match="equals the unlock key"):
        dl.rotate(dev, OLD, OLD)


def test_no_free_slot_on_a_full_real_header(image):
    dev = image(b"k0", slot=0)
    for n in range(1, 32):
        proc = cs("luksAddKey", "-q", *LIGHT, "--key-slot", str(n), "--key-file", "-", "--keyfile-size", "2",
                  dev, "-", key=b"k0" + b"x%02d" % n)
        assert proc.returncode == 0, proc.stderr
    assert dl.free_slot(dl.luks_dump(dev)) is None
    before = digest(dev)
    with pytest.raises(dl.LuksError, match=r"no free keyslot \(all 32 used\); remove an obsolete slot first"):
        dl.add_key(dev, b"k0", NEW, pbkdf_args=LIGHT)
    assert digest(dev) == before


def test_remove_slot_never_removes_the_last_working_key(image):
    dev = image(OLD, slot=3)
    for key in (OLD, b"wrong"):
        with pytest.raises(dl.LuksError, match="refusing to remove keyslot 3: the remaining key opens no other"):
            dl.remove_slot(dev, 3, key)
    assert slots(dev) == [3]
    dl.add_key(dev, OLD, RECOVERY, pbkdf_args=LIGHT)
    with pytest.raises(dl.LuksError, match="refusing to remove keyslot 3"):
        dl.remove_slot(dev, 3, OLD)                  # OLD opens only the slot being removed
    assert slots(dev) == [0, 3]
    assert dl.remove_slot(dev, 3, RECOVERY) and slots(dev) == [0]
    assert dl.test_key(dev, RECOVERY)


def test_luks1_remove_slot_is_guarded_too(image):
    dev = image(luks_type="luks1")
    with pytest.raises(dl.LuksError, match="refusing to remove keyslot 0"):
        dl.remove_slot(dev, 0, OLD)
    assert slots(dev) == [0]


# ---------------------------------------------------------------------------- tokens must not fake keys

def _keyring_add(description, payload):
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    key_id = libc.syscall(248, b"user", description, payload, len(payload), ctypes.c_int(-3))  # session
    return libc, key_id


def test_a_keyring_token_cannot_make_a_wrong_key_look_valid(image):
    """LUKS2 tokens (here the built-in luks2-keyring one; TPM2 works the same way) unlock the header before
    the key file is read: plain `open --test-passphrase` then accepts ANY key. test_key() must not."""
    if os.uname().machine != "x86_64":
        pytest.skip("add_key syscall number is x86_64's")
    dev = image(OLD, slot=3)
    desc = b"deskguard-test:%d" % os.getpid()
    assert cs("token", "add", "--key-description", desc.decode(), "--key-slot", "3", dev).returncode == 0
    libc, key_id = _keyring_add(desc, OLD)
    if key_id < 0:
        pytest.skip("kernel keyring not available")
    try:
        naive = cs("open", "--test-passphrase", "--key-file", "-", dev, key=b"wrong")
        assert naive.returncode == 0                  # the hazard is real
        assert dl.test_key(dev, b"wrong") is False
        assert dl.test_key(dev, OLD) is True
        with pytest.raises(dl.LuksError, match="the unlock key opens no keyslot"):
            dl.add_key(dev, b"wrong", NEW, pbkdf_args=LIGHT)
        assert dl.device_info(dl.luks_dump(dev))["keyslots"][0]["tokens"] == ["luks2-keyring"]
    finally:
        libc.syscall(250, 3, ctypes.c_long(key_id))   # keyctl(KEYCTL_REVOKE)


# ------------------------------------------------------------------------------------- secrets hygiene

def test_secrets_never_in_argv_and_nothing_written_to_disk(image, tmp_path, monkeypatch):
    dev = image(OLD, slot=3)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    calls = []
    real_run = subprocess.run

    def spy(argv, *a, **kw):
        calls.append((list(argv), kw.get("input")))
        return real_run(argv, *a, **kw)

    monkeypatch.setattr(dl.subprocess, "run", spy)
    dl.add_key(dev, OLD, RECOVERY, pbkdf_args=LIGHT)
    dl.rotate(dev, OLD, NEW, pbkdf_args=LIGHT)
    dl.remove_slot(dev, 0, NEW)
    dl.test_key(dev, b"wrong")
    secrets = (OLD, NEW, RECOVERY, b"wrong")
    assert len(calls) > 10
    for argv, stdin in calls:
        joined = "\0".join(argv).encode()
        assert not any(s in joined for s in secrets), argv
        for i, arg in enumerate(argv):
            if arg in ("--key-file", "-d"):
                assert argv[i + 1] == "-", argv                  # keys only ever come from stdin
        assert argv[-1] in (dev, "-") or argv[-2] == dev, argv  # no other file named
    fed = b"".join(stdin or b"" for _, stdin in calls)
    assert all(s in fed for s in secrets)                       # the spy did see them, on stdin
    assert list(scratch.iterdir()) == []


# ------------------------------------------------------------------------------------ interruption proof

def _rotate_and_die_at(dev, step):
    def hook(name):
        if name == step:
            os.kill(os.getpid(), signal.SIGKILL)
    dl._hook = hook
    dl.rotate(dev, OLD, NEW, pbkdf_args=LIGHT)
    os._exit(0)


@pytest.mark.parametrize("step,expect_slots,old_opens", [
    ("added", [0, 3], True), ("verified", [0, 3], True), ("removed", [0], False)])
def test_rotate_killed_at_each_step_leaves_a_working_key_and_resumes(image, step, expect_slots, old_opens):
    dev = image(OLD, slot=3)
    child = multiprocessing.get_context("fork").Process(target=_rotate_and_die_at, args=(dev, step))
    child.start()
    child.join(60)
    assert child.exitcode == -signal.SIGKILL
    assert slots(dev) == expect_slots
    assert dl.test_key(dev, OLD) is old_opens and dl.test_key(dev, NEW, slot=0)
    assert dl.test_key(dev, OLD) or dl.test_key(dev, NEW)
    assert dl.rotate(dev, OLD, NEW, pbkdf_args=LIGHT) == 0          # re-run finishes the job
    assert slots(dev) == [0] and dl.test_key(dev, NEW) and not dl.test_key(dev, OLD)


def test_rotate_killed_before_add_changes_nothing(image):
    dev = image(OLD, slot=3)
    before = digest(dev)

    def target():
        real = subprocess.run

        def run(argv, *a, **kw):
            if "luksAddKey" in argv:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(argv, *a, **kw)
        dl.subprocess.run = run
        dl.rotate(dev, OLD, NEW, pbkdf_args=LIGHT)
        os._exit(0)

    child = multiprocessing.get_context("fork").Process(target=target)
    child.start()
    child.join(60)
    assert child.exitcode == -signal.SIGKILL and digest(dev) == before and slots(dev) == [3]


# ------------------------------------------------------------------------------------------- discovery

def _node(name, type_, fstype=None, mounts=(None,), uuid=None, pkname=None, children=None, path=None):
    node = {"name": name, "path": path or "/dev/" + name, "type": type_, "fstype": fstype,
            "mountpoints": list(mounts), "uuid": uuid, "pkname": pkname}
    if children:
        node["children"] = children
    return node


def _mapper(name, type_, fstype, mounts, uuid, pkname, children=None):
    return _node(name, type_, fstype, mounts, uuid, pkname, children, path="/dev/mapper/" + name)


U_ROOT, U_DATA = "0b6c1b57-4d4e-4a57-9a0e-5e7c8d1f2a11", "6f2e0c1d-8a3b-4f7e-b1c2-9d8e7f6a5b4c"

# Ubuntu-style: EFI + /boot + LUKS root partition, swap on zram.
ROOT_ON_LUKS = {"blockdevices": [
    _node("zram0", "disk", "swap", ["[SWAP]"]),
    _node("nvme0n1", "disk", children=[
        _node("nvme0n1p1", "part", "vfat", ["/boot/efi"], "4A1B-2C3D", "nvme0n1"),
        _node("nvme0n1p2", "part", "ext4", ["/boot"], "a3d5e6f7-1111-4222-8333-944455556666", "nvme0n1"),
        _node("nvme0n1p3", "part", "crypto_LUKS", [None], U_ROOT, "nvme0n1", children=[
            _mapper("nvme0n1p3_crypt", "crypt", "ext4", ["/"], "c0ffee00-1234-4567-89ab-cdef01234567",
                    "nvme0n1p3")])])]}

# Debian installer "guided, encrypted LVM" + a second encrypted disk for /home + a plain /data disk + a snap.
LVM_TWO_DISKS = {"blockdevices": [
    _node("loop0", "loop", "squashfs", ["/snap/core22/1380"]),
    _node("vda", "disk", children=[
        _node("vda1", "part", "ext4", ["/boot"], "1f2e3d4c-0000-4000-8000-000000000001", "vda"),
        _node("vda2", "part", None, [None], None, "vda"),
        _node("vda5", "part", "crypto_LUKS", [None], U_ROOT, "vda", children=[
            _mapper("vda5_crypt", "crypt", "LVM2_member", [None], "Xq3vRb-aaaa-bbbb-cccc-dddd-eeee-ffffff",
                    "vda5", children=[
                        _mapper("debian--vg-root", "lvm", "ext4", ["/"], "2a2a2a2a-0000-4000-8000-0000000000a1",
                                "vda5_crypt"),
                        _mapper("debian--vg-swap_1", "lvm", "swap", ["[SWAP]"],
                                "3b3b3b3b-0000-4000-8000-0000000000b2", "vda5_crypt")])])]),
    _node("vdb", "disk", children=[
        _node("vdb1", "part", "crypto_LUKS", [None], U_DATA, "vdb", children=[
            _mapper("home_crypt", "crypt", "btrfs", ["/home", "/home/.snapshots"],
                    "4c4c4c4c-0000-4000-8000-0000000000c3", "vdb1")])]),
    _node("vdc", "disk", children=[
        _node("vdc1", "part", "ext4", ["/data"], "5d5d5d5d-0000-4000-8000-0000000000d4", "vdc")])]}


def _fake_dump(real_dev):
    def dump(path):
        out = dict(dl.luks_dump(real_dev))
        out["device"] = path
        return out
    return dump


def test_discover_root_on_luks(image):
    dev = image(OLD, slot=3)
    found = dl.discover(json.dumps(ROOT_ON_LUKS), dump=_fake_dump(dev))
    assert [(d["device"], d["luks_uuid"], d["backs"]) for d in found["luks"]] == [
        ("/dev/nvme0n1p3", U_ROOT, ["/"])]
    entry = found["luks"][0]
    assert (entry["version"], entry["cipher"], entry["key_size"]) == (2, "aes-xts-plain64", 512)
    assert [k["slot"] for k in entry["keyslots"]] == [3] and entry["keyslots"][0]["pbkdf"] == "pbkdf2"
    assert found["unencrypted"] == []                      # zram swap is RAM: ignored
    assert [e["mountpoint"] for e in found["unencrypted_boot"]] == ["/boot", "/boot/efi"]


def test_discover_lvm_on_luks_two_disks_and_a_plain_data_disk(image):
    found = dl.discover(LVM_TWO_DISKS, dump=_fake_dump(image()))
    assert [(d["device"], d["backs"]) for d in found["luks"]] == [
        ("/dev/vda5", ["/", "[SWAP]"]), ("/dev/vdb1", ["/home", "/home/.snapshots"])]
    assert found["luks"][1]["luks_uuid"] == U_DATA
    assert found["unencrypted"] == [{"mountpoint": "/data", "device": "/dev/vdc1", "fstype": "ext4"}]
    assert [e["device"] for e in found["unencrypted_boot"]] == ["/dev/vda1"]


def test_discover_volume_group_extended_onto_a_plain_disk_is_unencrypted(image):
    lv = _mapper("vg-root", "lvm", "ext4", ["/"], "6e6e6e6e-0000-4000-8000-0000000000e5", None)
    tree = {"blockdevices": [
        _node("sda", "disk", children=[
            _node("sda1", "part", "crypto_LUKS", [None], U_ROOT, "sda", children=[
                _mapper("sda1_crypt", "crypt", "LVM2_member", [None], "pv-1", "sda1",
                        children=[dict(lv, pkname="sda1_crypt")])])]),
        _node("sdb", "disk", children=[
            _node("sdb1", "part", "LVM2_member", [None], "pv-2", "sdb", children=[dict(lv, pkname="sdb1")])])]}
    found = dl.discover(tree, dump=_fake_dump(image()))
    assert found["luks"] == []
    assert found["unencrypted"] == [{"mountpoint": "/", "device": "/dev/mapper/vg-root", "fstype": "ext4",
                                     "partly_on": ["/dev/sda1"]}]


def test_discover_accepts_list_output_and_old_mountpoint_key(image):
    flat = []

    def flatten(node):
        flat.append({k: v for k, v in node.items() if k != "children"})
        for child in node.get("children", ()):
            flatten(child)
    for node in LVM_TWO_DISKS["blockdevices"]:
        flatten(node)
    for node in flat:                                     # util-linux < 2.37 had a single "mountpoint"
        node["mountpoint"] = node.pop("mountpoints")[0]
    found = dl.discover({"blockdevices": flat}, dump=_fake_dump(image()))
    assert [(d["device"], d["backs"]) for d in found["luks"]] == [
        ("/dev/vda5", ["/", "[SWAP]"]), ("/dev/vdb1", ["/home"])]
    assert [e["mountpoint"] for e in found["unencrypted"]] == ["/data"]


def test_discover_runs_lsblk_on_this_host():
    found = dl.discover()
    assert set(found) == {"luks", "unencrypted", "unencrypted_boot"}
