"""deskguard_os_facts: the OS facts onboarding's roles use, named as Ansible's `setup` names them, and the
packages still missing, in one round trip; the module run through Ansible on this (Debian) controller."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

KIT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(KIT / "plugins" / "module_utils"))
import deskguard_os_facts as osf  # noqa: E402

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("dist_id, like, version, family, name, major, pkg_mgr", [
    ("debian", "", "13.2", "Debian", "Debian", "13", "apt"),
    ("ubuntu", "debian", "24.04", "Debian", "Ubuntu", "24", "apt"),
    ("rhel", "fedora", "9.4", "RedHat", "RedHat", "9", "dnf"),
    ("rocky", "rhel centos fedora", "9.4", "RedHat", "Rocky", "9", "dnf"),
    ("fedora", "", "41", "RedHat", "Fedora", "41", "dnf"),
])
def test_the_facts_carry_ansibles_names(dist_id, like, version, family, name, major, pkg_mgr):
    facts = osf.os_facts(dist_id, like, version, "", which=lambda m: "/usr/bin/dnf" if m == "dnf" else None)
    assert facts == {"os_family": family, "distribution": name, "distribution_version": version,
                     "distribution_major_version": major, "pkg_mgr": pkg_mgr}


def test_a_family_the_roles_have_no_tasks_for_is_refused_in_one_line():
    with pytest.raises(osf.UnsupportedOS) as exc:
        osf.os_facts("arch", "", "", "Arch Linux")
    assert str(exc.value) == ("deskguard manages Debian, Ubuntu and Red Hat family Linux; this laptop runs "
                              "Arch Linux")


def test_missing_packages_reads_dpkgs_status_and_counts_unknown_names_as_missing():
    out = "ufw ii \nusbguard rc \nlibc6:amd64 ii \n"
    calls = []

    def run(argv):
        calls.append(argv)
        return 1, out, "dpkg-query: no packages found matching nosuch\n"
    assert osf.missing_packages("Debian", ["ufw", "usbguard", "libc6", "nosuch"], run) == ["usbguard", "nosuch"]
    assert calls[0][:3] == ["dpkg-query", "-W", "-f=${Package} ${db:Status-Abbrev}\\n"]
    assert osf.missing_packages("Debian", [], run) == [] and len(calls) == 1   # nothing asked: no command


def test_missing_packages_reads_rpms_answer():
    out = "firewalld\npackage usbguard is not installed\n"
    assert osf.missing_packages("RedHat", ["firewalld", "usbguard"], lambda argv: (1, out, "")) == ["usbguard"]


def test_the_module_through_ansible_on_this_controller():
    """The real module, its real dpkg-query, through Ansible's local connection (the controller is Debian)."""
    env = {**os.environ, "ANSIBLE_CONFIG": str(KIT / "ansible.cfg")}
    args = json.dumps({"packages": {"Debian": ["dpkg", "deskguard-no-such-package"], "RedHat": ["rpm"]}})
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible"), "localhost", "-c", "local", "-o",
                           "-m", "deskguard_os_facts", "-a", args, "-e", f"ansible_python_interpreter={sys.executable}"],
                          capture_output=True, text=True, cwd=KIT, env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout.split("=>", 1)[1])
    release = dict(line.split("=", 1) for line in Path("/etc/os-release").read_text().split("\n") if "=" in line)
    assert result["ansible_facts"]["os_family"] == "Debian" and result["ansible_facts"]["pkg_mgr"] == "apt"
    assert result["ansible_facts"]["distribution_major_version"] == release["VERSION_ID"].strip('"')
    assert result["missing_packages"] == ["deskguard-no-such-package"] and result["changed"] is False
