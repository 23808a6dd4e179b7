"""The lab's record of what it started, so `lab down` stops exactly that (by PID) and nothing else."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..fsutil import atomic_write_json, file_lock
from .paths import runtime_dir, state_file

LAPTOP_KINDS = ("container", "vm")   # containers first: they take seconds, the VM minutes


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


def off_release(hosts, suite: str) -> dict[str | None, list[str]]:
    """The laptops among `hosts` not recorded as running Debian `suite`, by their recorded release (None: started
    before the lab recorded releases), names in order."""
    found: dict[str | None, list[str]] = {}
    for host in sorted(hosts, key=lambda h: h.name):
        release = host.extra.get("suite") or None
        if host.kind in LAPTOP_KINDS and release != suite:
            found.setdefault(release, []).append(host.name)
    return found


def locked():
    """Serialise lab commands: two `lab up` at once would fight over names, ports and bridges."""
    return file_lock(runtime_dir() / "lock")


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (which may contain spaces), or None when gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def proc_start_time(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[19]) if fields else None  # field 22, starttime


def proc_state(pid: int) -> str | None:
    """The one-letter state of a process (R, S, Z, ...), or None when it is gone."""
    fields = _stat(pid)
    return fields[0] if fields else None


def same_process(pid: int | None, start: int | None) -> bool:
    """True while `pid` is still the very process that was recorded (same start time) and not a zombie."""
    if pid is None or start is None or proc_start_time(pid) != start:
        return False
    return proc_state(pid) not in (None, "Z", "X")


def is_alive(host: LabHost) -> bool:
    return same_process(host.pid, host.pid_start)


def wait_gone(pid: int, start: int | None, timeout: float) -> bool:
    """Wait until the recorded process is gone; False on timeout."""
    deadline = time.monotonic() + timeout
    pause = 0.001  # most lab processes exit within milliseconds of a signal: poll fast first
    while same_process(pid, start):
        if time.monotonic() > deadline:
            return False
        time.sleep(pause)
        pause = min(pause * 2, 0.1)
    return True


def signal_process(pid: int, start: int | None, sig: int) -> None:
    """Signal `pid` only if it is still the recorded process (a recycled PID is never hit)."""
    if same_process(pid, start):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def hosts_to_start(state: LabState, names: list[str], sweep_strays) -> list[str]:
    """Of `names`, those that must be started. Dead recorded hosts were already cleaned up and forgotten by
    `manager.forget_dead`; whatever of the tier the state does not record is a leftover of an interrupted
    run, removed by `sweep_strays(keep)` before its name is reused."""
    sweep_strays(set(state.hosts))
    return [n for n in names if n not in state.hosts]
