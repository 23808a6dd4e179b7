"""The lab's Debian releases and its per-VM TPM (swtpm), without starting a VM."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from deskguard.commands import lab as lab_cmd
from deskguard.errors import LabError
from deskguard.lab import image, tpm, vm
from deskguard.lab.image import LaptopImage

pytestmark = pytest.mark.unit


def test_the_cli_offers_the_lab_s_suites_with_trixie_first():
    assert lab_cmd.SUITES == image.SUITES
    assert lab_cmd.DEFAULT_SUITE == image.DEFAULT_SUITE == "trixie"
    out = CliRunner().invoke(lab_cmd.lab, ["up", "--help"]).output
    assert "--suite [trixie|bookworm]" in out and "default: trixie" in " ".join(out.split())


def test_the_image_cache_key_and_folder_name_carry_the_suite(monkeypatch, tmp_path):
    monkeypatch.setattr(image, "lab_key", lambda: _fake_key(tmp_path))
    trixie, bookworm = image.rootfs_recipe("trixie"), image.rootfs_recipe("bookworm")
    assert trixie["suite"] == "trixie" and bookworm["suite"] == "bookworm"
    assert image.recipe_hash(trixie) != image.recipe_hash(bookworm)
    assert image.Rootfs(tmp_path / "rootfs-trixie-0123456789abcdef").suite == "trixie"
    with pytest.raises(LabError, match="unknown Debian suite 'sid'; the lab builds trixie, bookworm"):
        image.rootfs_recipe("sid")


def _fake_key(tmp_path: Path) -> Path:
    key = tmp_path / "lab_ed25519"
    key.with_suffix(".pub").write_text("ssh-ed25519 AAAA lab\n")
    return key


def test_the_laptop_image_bakes_in_the_tpm_tools():
    for pkg in ("tpm2-tools", "clevis", "clevis-luks", "clevis-tpm2", "clevis-initramfs"):
        assert pkg in image.LAPTOP_PACKAGES


def test_every_laptop_vm_has_a_tpm_device_and_its_own_swtpm_socket(tmp_path):
    assert "tpm-tis,tpmdev=tpm0" in vm.machine_args()  # fixed hardware: in the snapshot key too
    args = tpm.qemu_args(tmp_path)
    assert args == ["-chardev", f"socket,id=chrtpm,path={tmp_path / 'swtpm.sock'}",
                    "-tpmdev", "emulator,id=tpm0,chardev=chrtpm"]


@pytest.mark.skipif(shutil.which("swtpm") is None, reason="swtpm is installed by .ci/setup")
def test_swtpm_starts_on_the_vm_s_state_folder_and_stops_by_its_own_pid(tmp_path):
    rundir = tmp_path / "vm1"
    rundir.mkdir()
    pid = tpm.start(rundir)
    try:
        assert tpm.running_pid(rundir) == pid
        assert (rundir / "tpm").is_dir() and oct((rundir / "tpm").stat().st_mode & 0o777) == "0o700"
        # The control socket answers (qemu's tpm-emulator connects to it).
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(rundir / "swtpm.sock"))
    finally:
        tpm.stop(rundir)
    assert tpm.running_pid(rundir) is None
    assert not Path(f"/proc/{pid}").exists() or b"swtpm" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    tpm.stop(rundir)  # idempotent


def test_a_pid_file_naming_another_process_is_never_taken_for_swtpm(tmp_path):
    (tmp_path / "swtpm.pid").write_text(f"{os.getpid()}\n")
    assert tpm.running_pid(tmp_path) is None
    tpm.stop(tmp_path)  # must not signal this test's own process


def test_a_laptop_boots_its_own_initrd_once_taken_and_the_image_s_before(tmp_path):
    image = LaptopImage(tmp_path / "laptop-trixie-0123")
    rundir = tmp_path / "vm1"
    rundir.mkdir()
    assert vm.boot_initrd(image, rundir) == image.initrd
    (rundir / "initrd.img").write_bytes(b"own")
    assert vm.boot_initrd(image, rundir) == rundir / "initrd.img"
    argv = vm.qemu_argv("lab-vm1", image, rundir / "disk.qcow2", 2221, rundir)
    assert argv[argv.index("-initrd") + 1] == str(rundir / "initrd.img")


def test_console_input_keeps_the_serial_log_and_adds_a_socket(tmp_path):
    image = LaptopImage(tmp_path / "img")
    plain = vm.qemu_argv("lab-vm1", image, tmp_path / "d.qcow2", 2221, tmp_path)
    assert plain[plain.index("-serial") + 1] == f"file:{tmp_path / 'serial.log'}"
    typed = vm.qemu_argv("lab-vm1", image, tmp_path / "d.qcow2", 2221, tmp_path, console_input=True)
    chardev = typed[typed.index("-chardev", typed.index("-tpmdev")) + 1]
    assert f"path={tmp_path / 'serial.sock'}" in chardev and f"logfile={tmp_path / 'serial.log'}" in chardev
    assert typed[typed.index("-serial") + 1] == "chardev:ser0"
