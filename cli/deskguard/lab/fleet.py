"""Fleet hosts: hundreds of light lab hosts, each a network namespace with its own sshd.

A fleet host `lab-fNNN` is:
  * a network namespace `lab-fNNN` with a veth pair: `dg-fNNN` on the lab bridge, `eth0` inside with the
    host's address from the plan in network.fleet_address. Namespaces and veths are machine-wide, so a lab
    with its own run folder (index k, identity.py) names them `lab<k>-fNNN` and `dg<k>-fNNN`; the host's
    own name (inventory, hostname) is lab-fNNN in every lab;
  * inside it, private mount and UTS namespaces (`unshare`) with overlayfs over /etc (lower: this machine's
    /etc) and over /root (lower: a plain shared home with the lab key), per-host upper dirs under
    runtime_dir()/fleet/<name>/, and its own hostname;
  * `sshd -D` of this machine, with the lab's sshd_config (key auth only, host key generated once into the
    cache). The overlays live only in that mount namespace: when sshd dies they go with it.

Each host costs a few MB (one idle sshd). They share this machine's kernel, /usr and Python: good for
scale runs of Ansible, not for anything that changes packages, the kernel or services.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..errors import LabError
from . import identity, network
from .image import files_dir, lab_key, ssh_key_pair
from .paths import cache_dir, runtime_dir
from .state import LabHost, LabState, hosts_to_start, is_alive, proc_start_time

NAME_RE = re.compile(r"^lab-f(\d{3,4})$")
BATCH = 50  # hosts set up per `ip -batch` and per launcher shell
START_TIMEOUT = 60.0


def host_name(n: int) -> str:
    """lab-f001 ... lab-f999, lab-f1000 (three digits, four when needed)."""
    return f"lab-f{n:03d}"


def host_number(name: str) -> int:
    match = NAME_RE.match(name)
    if not match:
        raise ValueError(f"not a fleet host name: {name}")
    return int(match.group(1))


def netns_name(name: str) -> str:
    """The host's network namespace (machine-wide): lab-f001 in the default lab, lab7-f001 in lab 7."""
    return identity.fleet_netns(network.index(), host_number(name))


def veth_name(name: str) -> str:
    """Host side of the host's veth pair (at most 15 characters: dg42-f1000 is 10)."""
    return identity.fleet_veth(network.index(), host_number(name))


def _pattern(make) -> re.Pattern:
    """This lab's machine-wide names of one kind (namespace or veth), the host number captured."""
    return re.compile("^" + re.escape(make(network.index(), 0)).replace("000", r"(\d{3,4})") + "$")


def host_mac(name: str) -> str:
    """eth0's MAC, derived from the lab index and host number (locally administered): a re-created host keeps
    its MAC, so the neighbour entries this machine (and open connections) hold for its address stay right."""
    return identity.fleet_mac(network.index(), host_number(name))


def fleet_dir() -> Path:
    return runtime_dir() / "fleet"


def shared_dir() -> Path:
    """sshd_config, host key and the plain /root every fleet host starts from."""
    return fleet_dir() / ".shared"


def host_dir(name: str) -> Path:
    return fleet_dir() / name


def host_key() -> Path:
    """The fleet's sshd host key: generated once into the cache, shared by every fleet host."""
    return ssh_key_pair(cache_dir() / "fleet" / "ssh_host_ed25519_key", "deskguard-lab-fleet")


def _put(path: Path, data: bytes, mode: int) -> None:
    """Write a shared file only when it differs: running hosts use these files (sshd reads its config and
    key on every connection, /root is their overlay's lower layer), so they are never replaced needlessly."""
    if not path.exists() or path.read_bytes() != data:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    os.chmod(path, mode)


def prepare_shared() -> Path:
    """The shared folder: sshd_config, host key, plain /root with the lab key. Updated in place."""
    shared = shared_dir()
    shared.mkdir(parents=True, exist_ok=True, mode=0o755)
    _put(shared / "ssh_host_ed25519_key", host_key().read_bytes(), 0o600)
    _put(shared / "ssh_host_ed25519_key.pub", Path(str(host_key()) + ".pub").read_bytes(), 0o644)
    config = (files_dir() / "fleet-sshd_config").read_text().replace("@SHARED@", str(shared))
    _put(shared / "sshd_config", config.encode(), 0o644)
    _put(shared / "fleet-host.sh", (files_dir() / "fleet-host.sh").read_bytes(), 0o755)
    root = shared / "root"
    root.mkdir(mode=0o700, exist_ok=True)
    for f in (".bashrc", ".profile"):
        if Path("/etc/skel", f).exists():
            _put(root / f, Path("/etc/skel", f).read_bytes(), 0o644)
    (root / ".ssh").mkdir(mode=0o700, exist_ok=True)
    _put(root / ".ssh/authorized_keys", lab_key().with_suffix(".pub").read_bytes(), 0o600)
    # sshd's privilege-separation folder lives in /run, which the fleet hosts share with this machine.
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    check = subprocess.run(["/usr/sbin/sshd", "-t", "-f", str(shared / "sshd_config")], capture_output=True,
                           text=True)
    if check.returncode != 0:
        raise LabError(f"the fleet's sshd_config is invalid: {check.stderr.strip()}")
    return shared


def _prepare_host_dir(name: str) -> Path:
    d = host_dir(name)
    network.remove_folder(d)
    for sub in ("etc.upper", "etc.work", "root.upper", "root.work"):
        (d / sub).mkdir(parents=True, mode=0o755)
    os.chmod(d / "root.upper", 0o700)
    (d / "etc.upper/hostname").write_text(name + "\n")
    hosts = Path("/etc/hosts").read_text() if Path("/etc/hosts").exists() else "127.0.0.1 localhost\n"
    (d / "etc.upper/hosts").write_text(hosts.rstrip("\n") + f"\n127.0.1.1 {name}\n")
    return d


def start_fleet(state: LabState, count: int, log=print) -> None:
    """Make sure lab-f001 .. lab-f<count> run (more may already run); record each by its sshd's PID."""
    if count <= 0:
        return
    start = time.monotonic()
    names = [host_name(n) for n in range(1, count + 1)]
    wanted = hosts_to_start(state, names, sweep_strays)
    if not wanted:
        return
    shared = prepare_shared()
    log(f"starting {len(wanted)} fleet host(s)")

    hosts: dict[str, LabHost] = {}
    for i in range(0, len(wanted), BATCH):
        batch = wanted[i:i + BATCH]
        cmds = []
        for name in batch:
            _prepare_host_dir(name)
            ns, veth = netns_name(name), veth_name(name)
            cmds += [f"netns add {ns}",
                     f"link add {veth} type veth peer name eth0 address {host_mac(name)} netns {ns}",
                     f"link set {veth} addrgenmode none",
                     f"link set {veth} master {network.bridge()} up"]
        proc = subprocess.run(["ip", "-batch", "-"], input="\n".join(cmds) + "\n", capture_output=True, text=True)
        if proc.returncode != 0:
            raise LabError(f"could not create fleet namespaces: {proc.stderr.strip()}")
        jobs = []
        for name in batch:
            addr = network.fleet_address(host_number(name) - 1)
            argv = ["ip", "netns", "exec", netns_name(name), "unshare", "--mount", "--uts", "--propagation", "private",
                    "/bin/sh", str(shared / "fleet-host.sh"), name, f"{addr}/{network.PREFIX}", str(host_dir(name)),
                    str(shared)]
            jobs.append((name, argv, host_dir(name) / "sshd.log"))
        pids = network.launch_detached(jobs)
        for name in batch:
            pid = pids[name]
            host = LabHost(name=name, kind="fleet", address=network.fleet_address(host_number(name) - 1), port=22,
                           user="root", pid=pid, pid_start=proc_start_time(pid),
                           extra={"hostvars": {"ansible_python_interpreter": "/usr/bin/python3"},
                                  "netns": netns_name(name), "veth": veth_name(name), "dir": str(host_dir(name))})
            hosts[name] = host
            state.hosts[name] = host
        state.save()  # recorded before waiting, so an interrupted `up` is still cleaned up by `down`

    wait_for_ports(list(hosts.values()), START_TIMEOUT)
    # One real login per run proves keys, sshd_config and the overlays, without a login per host.
    from .access import wait_for_ssh

    sample = hosts[wanted[-1]]
    wait_for_ssh(sample, timeout=30, alive=lambda: is_alive(sample))
    log(f"{len(wanted)} fleet host(s) up in {time.monotonic() - start:.1f} s")


def _banner(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1.0) as s:
            s.settimeout(2.0)
            return s.recv(8).startswith(b"SSH-")
    except OSError:
        return False


def wait_for_ports(hosts: list[LabHost], timeout: float) -> None:
    """Wait until every host's sshd answers with its SSH banner (a TCP connect from this machine)."""
    deadline = time.monotonic() + timeout

    def one(host: LabHost) -> None:
        flush_at = time.monotonic() + 3
        while not _banner(host.address, host.port):
            if time.monotonic() > flush_at:  # belt and braces: a wrong neighbour entry would stall for ~30 s
                network.ip("neigh", "del", host.address, "dev", network.bridge(), check=False)
                flush_at = float("inf")
            if not is_alive(host):
                log_tail = _log_tail(host)
                raise LabError(f"fleet host {host.name} stopped while starting: {log_tail}")
            if time.monotonic() > deadline:
                raise LabError(f"fleet host {host.name} did not answer on {host.address}:22 within {timeout:.0f} s")
            time.sleep(0.1)

    with ThreadPoolExecutor(max_workers=min(32, max(1, len(hosts)))) as pool:
        for fut in [pool.submit(one, h) for h in hosts]:
            fut.result()


def _log_tail(host: LabHost) -> str:
    path = Path(host.extra.get("dir", host_dir(host.name))) / "sshd.log"
    try:
        lines = path.read_text().strip().splitlines()
    except OSError:
        return f"no log at {path}"
    return (lines[-1] if lines else "empty log") + f" (see {path})"


def stop_fleet_host(host: LabHost) -> None:
    """Stop one fleet host: its sshd (by PID, only if it is still that process), anything else left in its
    namespace (open sessions), the namespace (its veth goes with it) and its folder. Idempotent."""
    name = host.name
    if is_alive(host):
        network.stop_process(host.pid, host.pid_start, signal.SIGTERM, grace=5)
    _remove_host(name)


def _remove_host(name: str) -> None:
    ns = netns_name(name)
    inode = network.netns_inode(ns)
    if inode is not None:
        leftovers = network.pids_in_netns(inode)
        if leftovers:
            network.kill_pids(leftovers)
            network.wait_connections_closed(network.fleet_address(host_number(name) - 1))
        network.netns_delete(ns)
    # The veth pair goes with the namespace, asynchronously (lab-notes gotcha 2). Waiting for it host by
    # host would cost a kernel clean-up round per host; it is waited for where it matters instead, for all
    # hosts at once (_reap_veths): before a name is reused (start_fleet) and before the bridge is removed.
    network.remove_folder(host_dir(name))


def _reap_veths(names) -> None:
    """Wait for the veths of removed hosts to vanish with their namespaces. A namespace outlives its last
    process while orphaned TCP sockets in it wind down (an open ControlPersist connection leaves them in
    FIN_WAIT2 for up to a minute), and its veth with it: after a short wait, delete what is left, in one
    `ip -batch`. Deleting one end of a veth pair deletes both."""
    veths = [veth_name(n) for n in names]
    deadline = time.monotonic() + 1.0
    while any(network.link_exists(v) for v in veths) and time.monotonic() < deadline:
        time.sleep(0.02)
    left = [v for v in veths if network.link_exists(v)]
    if left:
        subprocess.run(["ip", "-force", "-batch", "-"], input="".join(f"link del {v}\n" for v in left),
                       capture_output=True, text=True)
    for v in left:
        network.wait_link_gone(v, timeout=5)


def _foreign(netns: str) -> bool:
    inode = network.netns_inode(netns)
    if inode is None:
        return False
    ours = str(shared_dir())
    for pid in network.pids_in_netns(inode):
        line = " ".join(network.cmdline(pid))
        if "/fleet/.shared/" in line and ours not in line:
            return True
    return False


def sweep_strays(keep: set[str]) -> None:
    """Remove fleet leftovers the state does not record (an interrupted `up`, a lost state file): lab sshd
    processes, namespaces, veths and folders whose host is not in `keep`."""
    keep_inodes = {network.netns_inode(netns_name(n)) for n in keep if NAME_RE.match(n)} - {None}
    config = str(shared_dir() / "sshd_config")
    launcher = str(shared_dir() / "fleet-host.sh")
    stray_pids = []
    for pid in network.all_pids():
        line = " ".join(network.cmdline(pid))  # sshd rewrites its argv into one string: match substrings
        if config in line or launcher in line:
            try:
                ino = os.stat(f"/proc/{pid}/ns/net").st_ino
            except OSError:
                continue
            if ino not in keep_inodes:
                stray_pids.append(pid)
    if stray_pids:
        network.kill_pids(stray_pids)
    # Namespaces and veths are machine-wide: only this lab's names are looked at (another lab's carry another
    # index), and even then one whose sshd runs another lab's config is not ours to remove.
    netns_re, veth_re = _pattern(identity.fleet_netns), _pattern(identity.fleet_veth)
    names = {"lab-f" + m.group(1) for m in map(netns_re.match, network.netns_list()) if m and not _foreign(m.group(0))}
    names |= {"lab-f" + m.group(1) for m in map(veth_re.match, os.listdir("/sys/class/net"))
              if m and network.netns_inode(netns_name("lab-f" + m.group(1))) is None}
    if fleet_dir().exists():
        names |= {p.name for p in fleet_dir().iterdir() if NAME_RE.match(p.name)}
    for name in sorted(names - keep):
        _remove_host(name)
    _reap_veths(sorted(names - keep))
    if not any(NAME_RE.match(n) for n in keep):
        network.remove_folder(fleet_dir())  # shared sshd_config, host key copy, plain /root
