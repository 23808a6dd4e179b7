"""The demo site's orders server: the real `deskguard serve`, run in the background on the lab bridge.

A real site runs `deskguard serve` all the time (a service): the laptops' agents fetch their orders from it and
post their acknowledgements and check-ins to it. The demo does the same for its own site, so the laptops it
onboards check in (AGT-001) and a laptop that is off when `deskguard wipe` is run still gets the order at its
next check-in. It listens on the lab bridge's address: containers reach it directly, the VMs through qemu's
user network (which connects from this machine). Plain HTTP (`--allow-http`): the lab bridge is this machine's
own, never a real network. `deskguard lab down` and the next demo stop it (by PID and start time, like every
lab process).
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from pathlib import Path

from ..errors import LabError
from ..fsutil import atomic_write_json
from .network import host_address, launch_detached, stop_process
from .paths import runtime_dir
from .state import proc_start_time, same_process

PORT_OFFSET = 80      # beside the VMs' SSH ports (DESKGUARD_LAB_PORT_BASE + n)
READY_TIMEOUT = 60.0  # seconds for /healthz to answer (Ansible's templating is imported first: a few seconds)


def record_file() -> Path:
    return runtime_dir() / "orders-server.json"


def address() -> str:
    """ADDRESS:PORT it listens on, as the agents' URLs name it."""
    from .vm import port_base

    return f"{host_address()}:{port_base() + PORT_OFFSET}"


def url() -> str:
    return f"http://{address()}"


def command(site: Path) -> list[str]:
    """`deskguard serve` as an admin would type it (shown by the demo; the same argv is started)."""
    return ["deskguard", "serve", "--site", str(site), "--bind", address(), "--allow-http"]


def running() -> dict | None:
    """The record of the server the lab started, if that very process still runs."""
    path = record_file()
    if not path.exists():
        return None
    rec = json.loads(path.read_text())
    return rec if same_process(rec.get("pid"), rec.get("pid_start")) else None


def stop() -> bool:
    """Stop the recorded server (SIGTERM, then SIGKILL); True if one was running. Idempotent."""
    import signal

    path = record_file()
    rec = running()
    if rec is not None:
        stop_process(rec["pid"], rec["pid_start"], signal.SIGTERM, 10.0)
    path.unlink(missing_ok=True)
    return rec is not None


def start(site: Path, log: Path) -> dict:
    """Start `deskguard serve` for `site` (the one started earlier is stopped first) and wait until it answers."""
    stop()
    argv = [sys.executable, "-m", "deskguard", *command(site)[1:]]
    pid = launch_detached([("serve", argv, log)])["serve"]
    rec = {"pid": pid, "pid_start": proc_start_time(pid), "site": str(site), "url": url(), "log": str(log)}
    atomic_write_json(record_file(), rec, mode=0o600)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))   # never through an http_proxy
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        try:
            with opener.open(f"{url()}/healthz", timeout=2) as answer:
                if answer.status == 200:
                    return rec
        except OSError:
            pass
        if not same_process(rec["pid"], rec["pid_start"]) or time.monotonic() > deadline:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
            stop()
            raise LabError(f"the demo's orders server did not start on {address()}"
                           f"{': ' + tail[0] if tail else ''} (log: {log})")
        time.sleep(0.3)

