"""The lab's isolated network: one bridge per lab, attached to no uplink.

The default lab's bridge is `dglab0` with 10.213.0.1/16 on it; a lab with its own run folder (index k,
identity.py) has `dglab<k>` and 10.(213 + k).0.0/16, so two labs never share a link or an address. Laptop
containers and fleet hosts hang off the bridge through veth pairs. IP forwarding is left exactly as it was
(off on a normal machine), so lab hosts reach each other and the host, never anything beyond it.

Address plan of lab k, with 10.B = 10.(213 + k) (one function each, the only place it is written down):
  host (bridge)       10.B.0.1
  container N (1..)   10.B.1.N
  fleet host i (0..)  10.B.(2 + i // 250).(i % 250 + 1)   (lab-f001 is i = 0)
  10.B.0.2..254       lab services tests start themselves (service_address; 10.B.0.2: the containers'
                      WireGuard gateway, tests/vm/labgateway.py start_on_bridge); the lab never assigns them
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from ..errors import LabError
from . import identity
from .state import proc_start_time, signal_process, wait_gone

PREFIX = 16


def index() -> int:
    """This lab's index (identity.py): 0 for the default lab."""
    return identity.lab_index()


def bridge() -> str:
    return identity.bridge_name(index())


def bridge_mac() -> str:
    # A bridge without an address of its own takes the lowest MAC of its ports, and changes it whenever ports
    # come and go: every lab host's neighbour entry for the host address then points nowhere, connections
    # stall and the FIN of a closing one is lost. A fixed, locally administered MAC (outside the fleet's).
    return identity.bridge_mac(index())


def lab_address(third: int, fourth: int) -> str:
    """An address inside this lab's range (10.B.third.fourth)."""
    return f"10.{identity.second_octet(index())}.{third}.{fourth}"


def lab_network() -> str:
    """This lab's range, e.g. 10.213.0.0/16: where the controller's SSH comes from, as lab hosts see it."""
    return f"{lab_address(0, 0)}/{PREFIX}"


def host_address() -> str:
    """This machine's address on the lab bridge, and the lab hosts' gateway."""
    return lab_address(0, 1)


def service_address(n: int) -> str:
    """Address n (2..254) of the block kept for services a test starts on the bridge; the lab never assigns it."""
    if not 2 <= n <= 254:
        raise ValueError(f"service address out of the address plan: {n}")
    return lab_address(0, n)


def container_address(n: int) -> str:
    """Address of laptop container number n (lab-ctN, n >= 1)."""
    if not 1 <= n <= 250:
        raise ValueError(f"container number out of the address plan: {n}")
    return lab_address(1, n)


def fleet_address(i: int) -> str:
    """Address of fleet host index i (0-based: lab-f001 is i = 0)."""
    if not 0 <= i < 250 * 250:
        raise ValueError(f"fleet index out of the address plan: {i}")
    return lab_address(2 + i // 250, i % 250 + 1)


def ip(*args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, input=input)
    if check and proc.returncode != 0:
        raise LabError(f"`ip {' '.join(args)}` failed: {proc.stderr.strip() or proc.returncode}")
    return proc


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def wait_link_gone(name: str, timeout: float = 10.0) -> None:
    """veths vanish asynchronously after their namespace goes: wait before a name is reused."""
    deadline = time.monotonic() + timeout
    while link_exists(name):
        if time.monotonic() > deadline:
            raise LabError(f"network interface {name} did not go away within {timeout:.0f} s")
        time.sleep(0.02)


def ensure_bridge(state) -> None:
    """Create (or repair) this lab's isolated bridge and record it in `state.network`."""
    name, mac, address = bridge(), bridge_mac(), f"{host_address()}/{PREFIX}"
    if not link_exists(name):
        ip("link", "add", name, "address", mac, "type", "bridge", "stp_state", "0", "forward_delay", "0")
    elif Path(f"/sys/class/net/{name}/address").read_text().strip() != mac:
        ip("link", "set", name, "address", mac)
    # No IPv6 chatter (router solicitations, DAD) on the lab bridge.
    v6 = Path(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6")
    if v6.exists():
        v6.write_text("1\n")
    have = ip("-o", "-4", "addr", "show", "dev", name).stdout
    if address not in have:
        ip("addr", "add", address, "dev", name)
    ip("link", "set", name, "up")
    # A re-created host comes back with a new MAC: a stale neighbour entry for its address would make the
    # first connections to it hang for ~9 s (until the kernel re-probes). Forget them; running hosts are
    # simply resolved again.
    ip("neigh", "flush", "dev", name, check=False)
    state.network = {"index": index(), "bridge": name, "address": address, "gateway": host_address()}
    state.save()


def remove_bridge(state) -> None:
    """Delete this lab's bridge (idempotent). `lab down` sweeps the hosts of interrupted runs away first."""
    # Only this lab's hosts hang off it; a port still attached (a test's own service left running) keeps it.
    name = bridge()
    if link_exists(name) and not bridge_ports():
        ip("link", "del", name, check=False)
        wait_link_gone(name)
    state.network = {}
    state.save()


def bridge_ports() -> list[str]:
    try:
        return sorted(os.listdir(f"/sys/class/net/{bridge()}/brif"))
    except FileNotFoundError:
        return []


def netns_list() -> list[str]:
    try:
        return sorted(os.listdir("/run/netns"))
    except FileNotFoundError:
        return []


# --- Processes and namespaces (shared by the container and fleet tiers) ------------------------------------
# Lab processes are started detached (own session, re-parented to PID 1), so whichever process runs
# `lab down` later can stop them, and the one that ran `lab up` never collects zombies.

def stop_process(pid: int, start: int | None, sig: int, grace: float) -> None:
    """Send `sig`, wait up to `grace` seconds, then SIGKILL; returns once the process is gone."""
    import signal

    signal_process(pid, start, sig)
    if not wait_gone(pid, start, grace):
        signal_process(pid, start, signal.SIGKILL)
        if not wait_gone(pid, start, 10):
            raise LabError(f"process {pid} did not exit even after SIGKILL")


def children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                out += [int(p) for p in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
            except (FileNotFoundError, ProcessLookupError):
                pass
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


def all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []
    return raw.decode(errors="replace").split("\0")[:-1]


def netns_inode(name: str) -> int | None:
    try:
        return os.stat(f"/run/netns/{name}").st_ino
    except FileNotFoundError:
        return None


def netns_delete(name: str) -> None:
    """`ip netns del` without a process: detach and remove the namespace's bind mount in /run/netns.

    The kernel then frees the namespace (and the veth pair in it) asynchronously: callers that reuse a
    name or remove the bridge wait for the veth to vanish (lab-notes gotcha 2)."""
    import ctypes

    path = f"/run/netns/{name}"
    if not os.path.exists(path):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    MNT_DETACH = 2
    if libc.umount2(path.encode(), MNT_DETACH) != 0 and ctypes.get_errno() not in (22,):  # EINVAL: not mounted
        ip("netns", "del", name, check=False)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    if os.path.exists(path):
        raise LabError(f"could not delete network namespace {name}")


def pids_in_netns(inode: int) -> list[int]:
    """Processes whose network namespace is `inode` (what `ip netns pids` does, without a process per call)."""
    out = []
    for pid in all_pids():
        try:
            if os.stat(f"/proc/{pid}/ns/net").st_ino == inode:
                out.append(pid)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pass
    return out


def established_to(address: str, port: int = 22) -> int:
    """Connections from this machine to address:port that are still ESTABLISHED (from /proc/net/tcp)."""
    import socket

    target = socket.inet_aton(address)[::-1].hex().upper() + f":{port:04X}"
    count = 0
    with open("/proc/net/tcp") as fh:
        next(fh)
        for line in fh:
            fields = line.split()
            if fields[2] == target and fields[3] == "01":
                count += 1
    return count


def wait_connections_closed(address: str, port: int = 22, timeout: float = 2.0) -> None:
    """After a lab host's sshd sessions are killed, wait until their FIN (or RST) has reached this machine's
    end of each connection, before the host's veth goes. Deleting the veth first can drop that last packet:
    an SSH ControlPersist master (Ansible's) then stays connected to nothing, and the next run against a
    re-created host with the same address fails with "mux_client_request_session: Broken pipe"."""
    deadline = time.monotonic() + timeout
    while established_to(address, port) and time.monotonic() < deadline:
        time.sleep(0.005)


def kill_pids(pids: list[int], grace: float = 2.0) -> None:
    """SIGTERM, then SIGKILL after `grace`, each process by PID and start time."""
    import signal

    recorded = [(pid, proc_start_time(pid)) for pid in pids if pid != os.getpid()]
    for pid, start in recorded:
        signal_process(pid, start, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for pid, start in recorded:
        if not wait_gone(pid, start, max(0.0, deadline - time.monotonic())):
            signal_process(pid, start, signal.SIGKILL)
    for pid, start in recorded:
        wait_gone(pid, start, 10)


def mounts_under(folder: Path) -> list[str]:
    """Mount points in this mount namespace at or below `folder`, deepest first."""
    prefix = str(folder).rstrip("/") + "/"
    points = []
    with open("/proc/mounts") as fh:
        for line in fh:
            point = line.split()[1].replace("\\040", " ")
            if point == prefix[:-1] or point.startswith(prefix):
                points.append(point)
    return sorted(points, key=len, reverse=True)


def unmount_all(folder: Path) -> None:
    for point in mounts_under(folder):
        subprocess.run(["umount", "-l", point], capture_output=True)


def remove_folder(folder: Path) -> None:
    """Unmount whatever is left below `folder`, then delete it (idempotent)."""
    import shutil

    unmount_all(folder)
    if folder.exists():
        shutil.rmtree(folder, ignore_errors=True)
        if folder.exists():
            raise LabError(f"could not remove {folder}")


def launch_detached(jobs: list[tuple[str, list[str], Path]]) -> dict[str, int]:
    """Start each (key, argv, log) detached: own session, stdin from /dev/null, output to log, re-parented
    to PID 1. One shell starts a whole batch (hundreds of hosts cost one fork of ours). Returns key -> PID;
    the PID is the one the final program keeps, because every step of a launcher chain execs the next."""
    import shlex

    lines = []
    for key, argv, log in jobs:
        lines.append(f"setsid {shlex.join(argv)} </dev/null >{shlex.quote(str(log))} 2>&1 & "
                     f"echo {shlex.quote(key)} $!")
    proc = subprocess.run(["/bin/sh", "-c", "\n".join(lines)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise LabError(f"could not start lab processes: {proc.stderr.strip()}")
    pids = {}
    for line in proc.stdout.splitlines():
        key, pid = line.rsplit(" ", 1)
        pids[key] = int(pid)
    return pids
