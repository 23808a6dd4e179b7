"""`lab down` leaves nothing behind: no lab process (checked against the PIDs the lab recorded), no bridge,
no namespace, no mount, no overlay folder; and a second `lab down` is a no-op.

Runs after every other lab test of the session (tests/fleet/conftest.py orders it last): it brings up one
container and a few fleet hosts itself (on top of whatever the session has up) and takes everything down
through the real CLI, in another process than the one that started the hosts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.fleet, pytest.mark.container]


def deskguard(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deskguard", *args], capture_output=True, text=True, timeout=600)


def still_running(pid: int | None, start: int | None) -> bool:
    """The recorded process still exists and is not a zombie (this machine's PID 1 reaps zombies late)."""
    from deskguard.lab.state import same_process

    return same_process(pid, start)


def lab_processes(run_dir: Path) -> list[str]:
    """Processes that belong to a lab: refer to its runtime folder or carry a lab container's marker. The test's
    own ancestors are not the lab's, even when their command line names its folder (e.g. a `flock … env
    DESKGUARD_LAB_RUN=…` wrapper that started this test)."""
    found = []
    ancestors = set()
    pid = os.getpid()
    while pid > 1:
        ancestors.add(str(pid))
        pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if pid in ancestors:
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            env = Path(f"/proc/{pid}/environ").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state == "Z":
            continue
        # The folder itself or a path below it: /var/tmp/deskguard-lab.lock (the helpers' lab lock, on the
        # command line of every `flock` waiting for it) is not the lab's.
        inside = any(tok == str(run_dir) or tok.startswith(f"{run_dir}/") for tok in cmd.replace("=", " ").split())
        if inside or f"DESKGUARD_LAB_CT={run_dir}/".encode() in env:
            found.append(f"{pid} {cmd.strip()}")
    return found


def test_lab_up_recovers_a_half_up_lab(lab_session, lab_inventory_dir):
    """Killed processes, a namespace and a mount left behind, an orphaned container: `lab up` cleans them up
    and starts what is missing, without manual clean-up."""
    import signal

    from deskguard.lab import container, fleet
    from deskguard.lab.access import run_ssh

    state = lab_session.up(containers=1, fleet_hosts=3, inventory_dir=lab_inventory_dir, log=lambda m: None)
    f2, ct1 = state.hosts["lab-f002"], state.hosts["lab-ct1"]
    orphan = (ct1.extra["init_pid"], ct1.extra["init_start"])
    os.kill(f2.pid, signal.SIGKILL)  # a fleet host's sshd dies
    os.kill(ct1.pid, signal.SIGKILL)  # nspawn dies, its container keeps running, orphaned
    stray_ns = fleet.netns_name(fleet.host_name(997))
    subprocess.run(["ip", "netns", "add", stray_ns], check=True)  # a namespace the state does not know
    stale = container.container_dir("lab-ct9") / "root"
    stale.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "dg-stale", str(stale)], check=True)  # a stale mount
    try:
        state = lab_session.up(containers=1, fleet_hosts=3, inventory_dir=lab_inventory_dir, log=lambda m: None)
        assert state.hosts["lab-f002"].pid != f2.pid and still_running(state.hosts["lab-f002"].pid,
                                                                        state.hosts["lab-f002"].pid_start)
        assert state.hosts["lab-ct1"].pid != ct1.pid
        assert all(still_running(h.pid, h.pid_start) for h in state.hosts.values())
        assert not still_running(*orphan), "the orphaned container was not stopped"
        assert stray_ns not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert str(stale) not in Path("/proc/mounts").read_text()
        assert not stale.exists()
        for name in ("lab-f001", "lab-f002", "lab-f003", "lab-ct1"):  # untouched hosts keep working too
            host = state.hosts[name]
            r = run_ssh(host, "hostname", timeout=60)
            assert r.stdout.strip() == name, r.stderr
    finally:
        subprocess.run(["ip", "netns", "del", stray_ns], capture_output=True)
        subprocess.run(["umount", "-l", str(stale)], capture_output=True)


def test_lab_down_leaves_nothing_behind(lab_session, lab_inventory_dir):
    from deskguard.lab.paths import runtime_dir
    from deskguard.lab.state import LabState

    state = lab_session.up(containers=1, fleet_hosts=3, inventory_dir=lab_inventory_dir, log=lambda m: None)
    kinds = {h.kind for h in state.hosts.values()}
    assert {"container", "fleet"} <= kinds
    recorded = []
    for h in state.hosts.values():
        recorded.append((h.name, h.pid, h.pid_start))
        if h.extra.get("init_pid"):
            recorded.append((h.name + " init", h.extra["init_pid"], h.extra.get("init_start")))
    assert all(still_running(pid, start) for _, pid, start in recorded)
    assert lab_processes(runtime_dir())

    # This lab's machine-wide names, read before `down` gives its index back (another lab may be up beside it).
    from deskguard.lab import network

    bridge, lab_net = network.bridge(), network.lab_network()
    links = {bridge} | {h.extra["veth"] for h in state.hosts.values() if h.extra.get("veth")}
    namespaces = {h.extra["netns"] for h in state.hosts.values() if h.extra.get("netns")}
    assert all(Path("/sys/class/net", n).exists() for n in links) and namespaces

    proc = deskguard("lab", "down")
    assert proc.returncode == 0, proc.stderr
    assert f"{len(state.hosts)} host(s) stopped" in proc.stdout

    deadline = time.monotonic() + 5
    while any(still_running(pid, start) for _, pid, start in recorded) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [n for n, pid, start in recorded if still_running(pid, start)] == []
    assert lab_processes(runtime_dir()) == []
    assert [n for n in links if Path("/sys/class/net", n).exists()] == []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert [line for line in netns.splitlines() if line.split()[0] in namespaces] == []
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True, check=True).stdout
    assert lab_net not in routes
    mounts = Path("/proc/mounts").read_text()
    assert str(runtime_dir()) not in mounts
    assert not any(f"/run/netns/{n} " in mounts for n in namespaces)
    assert not (runtime_dir() / "ct").exists() and not (runtime_dir() / "fleet").exists()
    assert LabState.load().hosts == {}
    assert not (lab_inventory_dir / "hosts.yml").exists()

    again = deskguard("lab", "down")
    assert again.returncode == 0, again.stderr
    assert "0 host(s) stopped" in again.stdout
