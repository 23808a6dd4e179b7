"""SSH helpers shared by the fleet and container tests (one command on one lab host)."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor

from deskguard.lab.access import run_ssh


def ssh(host, command: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return run_ssh(host, command, timeout=timeout)


def ssh_all(hosts, command: str, workers: int = 10) -> list[subprocess.CompletedProcess]:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda h: ssh(h, command), hosts))
