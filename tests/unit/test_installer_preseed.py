"""`deskguard installer preseed`: the preseed passes debconf's own syntax check (`debconf-set-selections -c`,
no warning either), encrypts the whole disk (crypto method, LVM, the recipe), checks LUKS2/Argon2id and installs
the enrolment package at the end; the installer passphrase only ever reaches the 0600 file. A real installer run
from it is not part of this tier (not done: docs/enrolment.md)."""

from __future__ import annotations

import shutil
import stat
import subprocess

import pytest
from test_enrolment_cli import deskguard

pytestmark = pytest.mark.unit
PASS = "correct horse battery staple"


def selections_check(path):
    return subprocess.run(["debconf-set-selections", "-c", str(path)], capture_output=True, text=True)


@pytest.mark.skipif(shutil.which("debconf-set-selections") is None, reason="debconf is not installed")
def test_the_preseed_passes_debconfs_check_and_says_what_it_must(tmp_path):
    (tmp_path / "install.pass").write_text(PASS + "\n")
    out = tmp_path / "home-001.cfg"
    proc = deskguard("installer", "preseed", "--package-url", "https://it.example.com/home.deb", "--hostname",
                     "home-001", "--disk", "/dev/nvme0n1", "--luks-passphrase-file", str(tmp_path / "install.pass"),
                     "--output", str(out), site=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert PASS not in proc.stdout + proc.stderr and "holds the installer passphrase" in proc.stdout
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    checked = selections_check(out)
    assert checked.returncode == 0 and checked.stderr == "", checked.stderr
    text = out.read_text()
    lines = dict(line.split(" ", 1)[1].split(" ", 1) for line in text.splitlines()
                 if line.startswith(("d-i ", "tasksel ", "popularity-contest ")))
    assert lines["partman-auto/method"] == "string crypto" and lines["partman-auto/disk"] == "string /dev/nvme0n1"
    assert lines["partman-crypto/passphrase"] == f"password {PASS}"
    assert "mountpoint{ / }" in lines["partman-auto/expert_recipe"] and "lv_name{ swap }" in lines[
        "partman-auto/expert_recipe"]
    assert "python3-cryptography" in lines["pkgsel/include"] and "wireguard-tools" in lines["pkgsel/include"]
    late = lines["preseed/late_command"]
    assert "PBKDF: *argon2id" in late and "Version: *2" in late
    assert late.index("argon2id") < late.index("in-target dpkg -i /root/deskguard-enrol.deb")   # checked first
    assert "https://it.example.com/home.deb" in late


def test_without_a_passphrase_the_installer_asks_and_a_broken_line_is_caught(tmp_path):
    out = tmp_path / "p.cfg"
    proc = deskguard("installer", "preseed", "--package-url", "https://it.example.com/home.deb", "--hostname",
                     "home-002", "--output", str(out), site=tmp_path)
    assert proc.returncode == 0 and "will ask for the disk passphrase" in proc.stdout
    assert "partman-crypto/passphrase" not in out.read_text() and "partman-auto/disk" not in out.read_text()
    if shutil.which("debconf-set-selections"):
        assert selections_check(out).stderr == ""
        # The check can fail: a line without its type is a parse error, an unknown type a warning.
        (tmp_path / "bad.cfg").write_text(out.read_text() + "d-i netcfg/get_domain strin x\n")
        assert "Unknown type" in selections_check(tmp_path / "bad.cfg").stderr


@pytest.mark.parametrize("args, message", [
    (["--package-url", "ftp://x/y.deb"], "an http(s):// URL of the enrolment .deb"),
    (["--hostname", "Home 1"], "lower-case letters"),
    (["--disk", "/dev/sda; rm -rf /"], "a device path"),
    (["--luks-passphrase-file", "{SHORT}"], "at least 12 printable characters"),
])
def test_bad_input_is_refused_and_nothing_written(tmp_path, args, message):
    (tmp_path / "short").write_text("short\n")
    args = [str(tmp_path / "short") if a == "{SHORT}" else a for a in args]
    base = {"--package-url": "https://it.example.com/home.deb", "--hostname": "home-003"}
    for i in range(0, len(args), 2):
        base[args[i]] = args[i + 1]
    out = tmp_path / "p.cfg"
    proc = deskguard("installer", "preseed", *[x for kv in base.items() for x in kv], "--output", str(out),
                     site=tmp_path)
    assert proc.returncode == 2 and message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert not out.exists()
