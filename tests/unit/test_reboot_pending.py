"""module_utils/deskguard_reboot: a pending reboot is reported, never acted on."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins" / "module_utils"))
import deskguard_reboot as dr  # noqa: E402

pytestmark = pytest.mark.unit


def test_debian_flag_and_its_packages(tmp_path):
    flag = tmp_path / "reboot-required"
    flag.write_text("*** System restart required ***\n")
    (tmp_path / "reboot-required.pkgs").write_text("linux-image-amd64\nlibc6\nlibc6\n")
    assert dr.reboot_pending(str(flag)) == (True, ["libc6", "linux-image-amd64"])


def test_no_flag_on_an_apt_system_means_no_reboot(tmp_path):
    if not Path("/etc/apt").is_dir():
        pytest.fail("this test expects a Debian controller")
    assert dr.reboot_pending(str(tmp_path / "absent")) == (False, [])
