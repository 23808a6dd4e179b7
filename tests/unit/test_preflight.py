"""Preflight: OS detection from /etc/os-release, and refusals before anything is written."""

from __future__ import annotations

import socket

import pytest

from deskguard.onboarding import preflight
from deskguard.errors import EXIT_UNREACHABLE, UsageError
from deskguard.onboarding.onboard import OnboardRequest, validate

pytestmark = pytest.mark.unit

DEBIAN = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\nID=debian\n'
ROCKY = 'NAME="Rocky Linux"\nID="rocky"\nID_LIKE="rhel centos fedora"\nVERSION_ID="9.4"\n'
ARCH = 'NAME="Arch Linux"\nID=arch\n'


@pytest.mark.parametrize("text,expected", [(DEBIAN, "debian"), (ROCKY, "rhel"), (ARCH, None),
                                           ('ID=linuxmint\nID_LIKE="ubuntu debian"\n', "ubuntu")])
def test_os_detection(text, expected):
    assert preflight.os_name(preflight.parse_os_release(text)) == expected


def test_version_and_pretty_name():
    release = preflight.parse_os_release(DEBIAN)
    assert release["VERSION_ID"] == "12" and release["PRETTY_NAME"] == "Debian GNU/Linux 12 (bookworm)"


def test_closed_port_is_unreachable_quickly():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(preflight.Unreachable) as err:
        preflight.tcp_reach("127.0.0.1", port, timeout=5)
    assert err.value.exit_code == EXIT_UNREACHABLE


@pytest.mark.parametrize("field,value", [("hostname", "bad host"), ("hostname", "x;rm -rf /"),
                                         ("operator", "Tanaka San"), ("port", 0), ("address", "1.2.3.4;id"),
                                         ("ssh_user", "root$(id)")])
def test_bad_requests_refused(field, value):
    req = OnboardRequest("lap-01", "debian", "10.0.0.5", "tanaka")
    setattr(req, field, value)
    with pytest.raises(UsageError):
        validate(req)


def test_host_name_is_normalised_to_lower_case():
    req = OnboardRequest("LAP-01", "debian", "10.0.0.5", "tanaka")
    validate(req)
    assert req.hostname == "lap-01"


def test_the_probe_finds_the_interpreter_that_is_recorded_with_the_laptop():
    """The probe script itself, run by a real shell: what it prints before /etc/os-release gives the Python that
    onboarding records as ansible_python_interpreter (no discovery round trip on later runs)."""
    import os
    import subprocess

    out = subprocess.run(["sh", "-c", preflight.PROBE], capture_output=True, text=True, check=True).stdout
    expected = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else None
    assert expected and preflight.probed_python(out) == expected, out


@pytest.mark.parametrize("out,expected", [("DG-SUDO=ok\nDG-PY=/usr/bin/python3\n", "/usr/bin/python3"),
                                          ("DG-PY=\n", None), ("DG-PY=python3\n", None),
                                          ("DG-PY=/opt/my python/bin/python3\n", None), ("nothing\n", None)])
def test_only_an_absolute_interpreter_path_is_recorded(out, expected):
    assert preflight.probed_python(out) == expected
