"""The lab's record of what it started, so `lab down` stops exactly that (by PID) and nothing else."""

from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..fsutil import atomic_write_json
from .paths import runtime_dir, state_file


@dataclass
class LabHost:
    name: str
    kind: str  # "vm" | "container" | "fleet"
    address: str
    port: int = 22
    user: str = "root"
    pid: int | None = None
    # Process start time from /proc/PID/stat, so a recycled PID is never killed by mistake.
    pid_start: int | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class LabState:
    hosts: dict[str, LabHost] = field(default_factory=dict)
    network: dict = field(default_factory=dict)

    @classmethod
    def load(cls) -> "LabState":
        path = state_file()
        if not path.exists():
            return cls()
        raw = json.loads(path.read_text())
        return cls({k: LabHost(**v) for k, v in raw.get("hosts", {}).items()}, raw.get("network", {}))

    def save(self) -> None:
        atomic_write_json(state_file(), {"hosts": {k: asdict(v) for k, v in self.hosts.items()},
                                         "network": self.network}, mode=0o600)

    def of_kind(self, kind: str) -> list[LabHost]:
        return sorted((h for h in self.hosts.values() if h.kind == kind), key=lambda h: h.name)


@contextmanager
def locked():
    """Serialise lab commands: two `lab up` at once would fight over names, ports and bridges."""
    runtime_dir().mkdir(parents=True, exist_ok=True)
    fd = os.open(runtime_dir() / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def proc_start_time(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # Field 22 (starttime); the command name in field 2 may contain spaces, so split after ')'.
    return int(stat.rsplit(")", 1)[1].split()[19])


def is_alive(host: LabHost) -> bool:
    return host.pid is not None and proc_start_time(host.pid) == host.pid_start
