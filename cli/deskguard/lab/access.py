"""How to reach a lab host over SSH, for `lab ssh` and for tests."""

from __future__ import annotations

from ..errors import UsageError
from .image import lab_key
from .state import LabState

SSH_OPTS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]


def host_argv(host, command: list[str] | None = None) -> list[str]:
    """ssh's argv to reach a lab host (anything with address, port and user) with the lab key."""
    return ["ssh", *SSH_OPTS, "-i", str(lab_key()), "-p", str(host.port), f"{host.user}@{host.address}",
            *(command or [])]


def ssh_argv(name: str, command: list[str] | None = None) -> list[str]:
    host = LabState.load().hosts.get(name)
    if host is None:
        raise UsageError(f"no lab host named {name!r}; see `deskguard lab status`")
    return host_argv(host, command)


def run_ssh(host, command: str, timeout: float = 120.0, stdin: str | None = None):
    """Run one shell command on a lab host (a single round trip); returns the CompletedProcess (text)."""
    import subprocess

    from ..errors import LabError

    try:
        return subprocess.run(host_argv(host, [command]), input=stdin, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise LabError(f"{host.name}: `{command}` did not finish within {timeout:.0f} s over SSH") from None


def wait_for_ssh(host, timeout: float, alive=None) -> float:
    """Wait until `host` runs a command over SSH with the lab key; returns the seconds it took.

    `alive` (optional) is called between tries; when it returns False the host's process died and waiting
    stops at once with a LabError instead of running into the timeout.
    """
    import subprocess
    import time

    from ..errors import LabError

    start = time.monotonic()
    argv = host_argv(host, ["true"])
    while True:
        if subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60).returncode == 0:
            return time.monotonic() - start
        if alive is not None and not alive():
            raise LabError(f"{host.name} stopped while booting; see `deskguard lab status` and its log")
        if time.monotonic() - start > timeout:
            raise LabError(f"{host.name} did not answer SSH on {host.address}:{host.port} within {timeout:.0f} s")
        time.sleep(1)
