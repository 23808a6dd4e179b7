"""Before anything is recorded: the laptop answers, the admin key gets in, sudo works, the OS is the one named.

One TCP probe and one SSH session: on a laptop at the end of a home connection (or a TCG lab VM) every round
trip counts. Nothing is written anywhere before preflight has passed.
"""

from __future__ import annotations

import shlex
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import DeskguardError, EXIT_UNREACHABLE, UsageError

SUPPORTED_OS = ("ubuntu", "debian", "fedora", "rhel", "windows")
# /etc/os-release ID (and ID_LIKE) -> the --os name it satisfies
OS_IDS = {"ubuntu": "ubuntu", "debian": "debian", "fedora": "fedora", "rhel": "rhel", "rocky": "rhel",
          "almalinux": "rhel", "centos": "rhel"}
# Printed by the remote script; the markers keep the parsing independent of login banners.
# The interpreter is recorded with the laptop so that Ansible never runs its interpreter discovery again: on
# every nightly run that would cost one more round trip per laptop (docs/compliance.md, "Performance").
PROBE = ("echo DG-SUDO=$(sudo -n true 2>/dev/null && echo ok || echo no); "
         "echo DG-PY=$(test -x /usr/bin/python3 && echo /usr/bin/python3 || command -v python3); "
         "echo DG-OS-BEGIN; cat /etc/os-release; echo DG-OS-END")


class Unreachable(DeskguardError):
    exit_code = EXIT_UNREACHABLE


@dataclass
class PreflightResult:
    os: str
    os_version: str
    pretty_name: str
    seconds: float
    python: str | None = None   # the laptop's Python 3 (None: not found, Ansible discovers it each run)


def probed_python(out: str) -> str | None:
    """The interpreter the probe found: an absolute path without spaces, else None."""
    for line in out.splitlines():
        if line.startswith("DG-PY="):
            path = line[len("DG-PY="):].strip()
            return path if path.startswith("/") and not any(c.isspace() for c in path) else None
    return None


def tcp_reach(address: str, port: int, timeout: float) -> None:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return
    except socket.timeout:
        raise Unreachable(f"{address}:{port} did not answer within {timeout:.0f} s (is the laptop on and online?)")
    except OSError as exc:
        raise Unreachable(f"{address}:{port} is not reachable: {exc.strerror or exc}")
    except UnicodeError:  # a name the resolver cannot even encode (a label over 63 characters)
        raise Unreachable(f"{address}:{port} is not reachable: not a valid DNS name") from None


def ssh_base(address: str, port: int, user: str, key: Path | None, known_hosts: Path, timeout: float) -> list[str]:
    argv = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={int(timeout)}", "-o", "LogLevel=ERROR",
            # First contact records the laptop's host key for the site; a changed key later is refused.
            "-o", "StrictHostKeyChecking=accept-new", "-o", f"UserKnownHostsFile={known_hosts}", "-p", str(port)]
    if key:
        argv += ["-i", str(key), "-o", "IdentitiesOnly=yes"]
    return argv + [f"{user}@{address}"]


def parse_os_release(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            try:
                values[k.strip()] = " ".join(shlex.split(v))
            except ValueError:
                values[k.strip()] = v.strip().strip('"')
    return values


def os_name(release: dict[str, str]) -> str | None:
    for candidate in [release.get("ID", ""), *release.get("ID_LIKE", "").split()]:
        if candidate in OS_IDS:
            return OS_IDS[candidate]
    return None


def check_linux(address: str, port: int, user: str, expected_os: str, key: Path | None, known_hosts: Path,
                timeout: float = 15.0) -> PreflightResult:
    start = time.monotonic()
    tcp_reach(address, port, timeout)
    known_hosts.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    proc = subprocess.run([*ssh_base(address, port, user, key, known_hosts, timeout), PROBE],
                          capture_output=True, text=True, timeout=timeout * 4)
    if proc.returncode == 255:
        err = (proc.stderr.strip().splitlines() or ["ssh failed"])[-1]
        if "Permission denied" in err:
            raise DeskguardError(f"SSH as {user}@{address}:{port} refused the admin key ({err}); "
                                 "install the key in that account first")
        if "REMOTE HOST IDENTIFICATION HAS CHANGED" in proc.stderr or "Host key verification failed" in err:
            raise DeskguardError(f"{address}'s host key differs from the one recorded in {known_hosts}; "
                                 "if the laptop was reinstalled, remove its old key there")
        raise Unreachable(f"SSH to {user}@{address}:{port} failed: {err}")
    out = proc.stdout
    if "DG-SUDO=ok" not in out:
        raise DeskguardError(f"{user}@{address} cannot run sudo without a password; "
                             "the management account needs passwordless sudo")
    if "DG-OS-BEGIN" not in out:
        raise DeskguardError(f"{address} did not report /etc/os-release")
    release = parse_os_release(out.split("DG-OS-BEGIN", 1)[1].split("DG-OS-END", 1)[0])
    found = os_name(release)
    if found != expected_os:
        raise UsageError(f"{address} runs {release.get('PRETTY_NAME', release.get('ID', 'an unknown OS'))}, "
                         f"not {expected_os}; pass --os {found}" if found else
                         f"{address} runs an unsupported OS ({release.get('PRETTY_NAME', '?')})")
    return PreflightResult(found, release.get("VERSION_ID", ""), release.get("PRETTY_NAME", ""),
                           time.monotonic() - start, probed_python(out.split("DG-OS-BEGIN", 1)[0]))
