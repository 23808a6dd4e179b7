"""Laptop containers: systemd-nspawn booting the lab's Debian 12 laptop tree.

A container `lab-ctN` is:
  * an overlayfs whose lower layer is the shared rootfs tree (read-only, never modified) and whose upper and
    work dirs live in runtime_dir()/ct/<name>/; the container's own files (hostname, hosts, a networkd file
    with its static address on host0) are written into the upper dir before the mount; /etc/machine-id
    stays empty so systemd makes one per boot;
  * `systemd-nspawn --boot` in a private mount namespace (the overlay is mounted only there, so it can
    never outlive the container), with `--network-bridge=` the lab's bridge: its own network namespace with
    network admin capability (ufw/nft work inside, the host's ruleset is untouched), systemd as PID 1, sshd.
  * machine-wide, it is `machine_name(name)` (lab-ct1 in the default lab, lab7-ct1 in lab 7: identity.py):
    nspawn's machine name, the host side of its veth (vb-<machine>) and its cgroup. Its hostname and
    inventory name stay lab-ctN in every lab.

The process the lab records is systemd-nspawn (every launcher step execs the next).
"""

from __future__ import annotations

import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..errors import LabError
from . import identity, network
from .image import files_dir
from .paths import runtime_dir
from .state import (LabHost, LabState, hosts_to_start, is_alive, proc_start_time, same_process, signal_process,
                    wait_gone)

NAME_RE = re.compile(r"^lab-ct(\d+)$")
BOOT_TIMEOUT = 90.0
STOP_GRACE = 20.0  # lab-notes: one container of ten hung in "stopping" under load: SIGKILL after this


def container_name(n: int) -> str:
    return f"lab-ct{n}"


def container_number(name: str) -> int:
    match = NAME_RE.match(name)
    if not match:
        raise ValueError(f"not a container name: {name}")
    return int(match.group(1))


def machine_name(name: str) -> str:
    """The container's machine-wide name (nspawn's --machine, its cgroup): lab-ct1 in the default lab."""
    return identity.machine_name(network.index(), name)


def veth_name(name: str) -> str:
    """The host side of the veth systemd-nspawn makes for --network-bridge: vb-<machine>, which nspawn uses
    as is only while it fits in 15 characters (vb-lab42-ct50 is 13)."""
    return f"vb-{machine_name(name)}"


def ct_dir() -> Path:
    return runtime_dir() / "ct"


def container_dir(name: str) -> Path:
    return ct_dir() / name


def network_file(address: str) -> str:
    return ("# Written by deskguard lab: the container's static address on the lab bridge.\n"
            "[Match]\nName=host0\n\n"
            f"[Network]\nAddress={address}/{network.PREFIX}\nGateway={network.host_address()}\n"
            "LinkLocalAddressing=no\nIPv6AcceptRA=no\nLLMNR=no\nMulticastDNS=no\n")


def _prepare_dir(name: str, rootfs_tree: Path, address: str) -> Path:
    d = container_dir(name)
    network.remove_folder(d)
    for sub in ("upper", "work", "root"):
        (d / sub).mkdir(parents=True, mode=0o755)
    etc = d / "upper/etc"
    (etc / "systemd/network").mkdir(parents=True, mode=0o755)
    (etc / "hostname").write_text(name + "\n")
    hosts = (rootfs_tree / "etc/hosts").read_text() if (rootfs_tree / "etc/hosts").exists() else "127.0.0.1 localhost\n"
    (etc / "hosts").write_text(hosts.rstrip("\n") + f"\n127.0.1.1 {name}\n")
    (etc / "systemd/network/10-lab-host0.network").write_text(network_file(address))
    return d


def start_containers(state: LabState, count: int, rootfs, log=print) -> None:
    """Make sure lab-ct1 .. lab-ct<count> run and answer SSH (more may already run)."""
    if count <= 0:
        return
    start = time.monotonic()
    names = [container_name(n) for n in range(1, count + 1)]
    wanted = hosts_to_start(state, names, sweep_strays)
    if not wanted:
        return
    tree = Path(rootfs.tree)
    if not (tree / "sbin/init").exists() and not (tree / "lib/systemd/systemd").exists():
        raise LabError(f"the laptop tree at {tree} has no systemd; rebuild it (remove it and run `lab up` again)")
    launcher = ct_dir() / "ct-launch.sh"
    ct_dir().mkdir(parents=True, exist_ok=True)
    launcher.write_text((files_dir() / "ct-launch.sh").read_text())
    log(f"starting {len(wanted)} laptop container(s)")

    jobs = []
    for name in wanted:
        d = _prepare_dir(name, tree, network.container_address(container_number(name)))
        jobs.append((name, ["unshare", "--mount", "--propagation", "private", "/bin/sh", str(launcher),
                            machine_name(name), str(tree), str(d), network.bridge()], d / "console.log"))
    pids = network.launch_detached(jobs)
    hosts = []
    for name in wanted:
        pid = pids[name]
        host = LabHost(name=name, kind="container", address=network.container_address(container_number(name)),
                       port=22, user="dgadmin", pid=pid, pid_start=proc_start_time(pid),
                       extra={"hostvars": {"ansible_become": "true"}, "dir": str(container_dir(name)),
                              "veth": veth_name(name), "suite": rootfs.suite})
        state.hosts[name] = host
        hosts.append(host)
    state.save()  # recorded before waiting, so an interrupted `up` is still cleaned up by `down`

    from .access import wait_for_ssh

    def wait(host: LabHost) -> float:
        try:
            return wait_for_ssh(host, timeout=BOOT_TIMEOUT, alive=lambda: is_alive(host))
        except LabError as exc:
            raise LabError(f"{exc} (console: {container_dir(host.name) / 'console.log'})") from None

    with ThreadPoolExecutor(max_workers=min(10, len(hosts))) as pool:
        took = list(pool.map(wait, hosts))
    # Also record the container's init (nspawn's child): if nspawn is ever killed on its own, the orphaned
    # container is still stopped by PID.
    for host in hosts:
        kids = network.children(host.pid)
        if kids:
            host.extra["init_pid"], host.extra["init_start"] = kids[0], proc_start_time(kids[0])
    state.save()
    log(f"{len(hosts)} container(s) answer SSH in {time.monotonic() - start:.1f} s "
        f"(slowest {max(took):.1f} s after launch)")


def stop_container(host: LabHost) -> None:
    """Power the container off (SIGTERM to nspawn = orderly shutdown of its systemd), SIGKILL its init and
    nspawn after STOP_GRACE seconds, then remove its folder. Idempotent: a gone process or folder is fine."""
    inits = [(host.extra["init_pid"], host.extra.get("init_start"))] if host.extra.get("init_pid") else []
    if is_alive(host):
        inits += [(p, proc_start_time(p)) for p in network.children(host.pid)]
        signal_process(host.pid, host.pid_start, signal.SIGTERM)
        if not wait_gone(host.pid, host.pid_start, STOP_GRACE):
            # Killing the container's init kills its whole PID namespace; nspawn then exits by itself.
            for pid, start in inits:
                signal_process(pid, start, signal.SIGKILL)
            network.stop_process(host.pid, host.pid_start, signal.SIGKILL, grace=10)
    # nspawn gone but its container still running (nspawn alone was killed): power it off by its init's PID.
    for pid, start in inits:
        if same_process(pid, start):
            network.stop_process(pid, start, signal.SIGRTMIN + 4, grace=STOP_GRACE)
    _remove(host.name)


def _paths_in(pid: int) -> list[str]:
    """Path-like arguments of a process (`--directory=/x` counts as /x)."""
    return [tok.split("=", 1)[-1] for tok in network.cmdline(pid)]


def _refers_to(pid: int, folder: Path) -> bool:
    f = str(folder)
    return any(p == f or p.startswith(f + "/") for p in _paths_in(pid))


# Set in each container's init environment (ct-launch.sh --setenv) to the container's folder: it names the
# container *and* the lab it belongs to (DESKGUARD_LAB_RUN may point a second lab elsewhere).
MARKER = "DESKGUARD_LAB_CT="


def _marked(pid: int) -> str | None:
    """The folder of the lab container a process is the init of (from its environment), or None."""
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    for item in env:
        if item.startswith(MARKER.encode()):
            return item[len(MARKER):].decode(errors="replace")
    return None


def _remove(name: str) -> None:
    d = container_dir(name)
    # Anything still running from this container's folder (a launcher that never reached nspawn, an nspawn
    # the state lost) and any container init of this name left orphaned: SIGKILL on an init ends its whole
    # PID namespace.
    leftovers = [pid for pid in network.all_pids() if _refers_to(pid, d) or _marked(pid) == str(d)]
    if leftovers:
        network.kill_pids(leftovers, grace=STOP_GRACE)
    # The veth goes with the container's network namespace, unless orphaned TCP sockets keep that alive for
    # a while (closing connections): then delete it, which removes both ends at once.
    network.wait_connections_closed(network.container_address(container_number(name)))
    veth = veth_name(name)
    try:
        network.wait_link_gone(veth, timeout=2)
    except LabError:
        network.ip("link", "del", veth, check=False)
        network.wait_link_gone(veth, timeout=5)
    network.remove_folder(d)
    remove_cgroups(machine_name(name))


CGROUP_ROOTS = ("/sys/fs/cgroup", "/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified")


def remove_cgroups(machine: str) -> None:
    """Remove the container's cgroups (ct-launch.sh made them under its machine name), deepest first; emptied
    ones only."""
    import os

    for root in CGROUP_ROOTS:
        top = Path(root) / "deskguard-lab" / machine
        if not top.is_dir():
            continue
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: -len(w[0])):
            try:
                os.rmdir(dirpath)
            except OSError:
                pass
        try:
            os.rmdir(top.parent)  # the lab's own level, once no container is left
        except OSError:
            pass


def sweep_strays(keep: set[str]) -> None:
    """Remove container leftovers the state does not record: nspawn processes and launchers running from the
    lab's container folder, stale mounts, veths and folders of containers not in `keep`."""
    prefix = str(ct_dir()) + "/"
    names: set[str] = set()
    for pid in network.all_pids():
        for path in _paths_in(pid):
            if path.startswith(prefix):
                names.add(path[len(prefix):].split("/", 1)[0])
        marked = _marked(pid)
        if marked and marked.startswith(prefix):
            names.add(marked[len(prefix):].split("/", 1)[0])
    if ct_dir().exists():
        names |= {p.name for p in ct_dir().iterdir() if p.is_dir()}
    # (Cgroups under deskguard-lab/ are machine-wide, no evidence of *this* lab: removed with their container.)
    # (A vb-lab-ct* veth alone is no evidence: it vanishes with its container's processes, found above.)
    for name in sorted(n for n in names - keep if NAME_RE.match(n)):
        _remove(name)
    if not any(NAME_RE.match(n) for n in keep):
        network.remove_folder(ct_dir())  # the launcher copy too: nothing of the tier is left
