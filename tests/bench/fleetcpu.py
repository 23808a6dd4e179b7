"""CPU accounting for benchmarks against the lab fleet, robust to other work on the machine.

Wall time on a shared 2-core machine says little when other sessions run VMs; CPU seconds spent by the
processes of the run do not depend on that load (much). Two shares, read before and after a run:

* controller: this process's finished children (ansible-playbook, its workers, their ssh clients) from
  RUSAGE_CHILDREN, plus the ssh ControlPersist masters. A master forks away from its ssh client and would be
  re-parented to PID 1, out of any rusage; `become_subreaper()` makes this process their parent instead, so
  they are read live from /proc while they run (never reaped here, so never counted twice).
* laptops: every process in the fleet hosts' network namespaces. Each host's sshd accumulates the CPU of its
  finished sessions (cutime/cstime: session sshd, sudo, the module's Python); sessions still open (a
  ControlPersist connection outlives the run) are read live. A process's own time plus its waited-for
  children's, summed over the namespace, counts everything once, as long as nothing there is orphaned.

Only Linux /proc; figures in CPU seconds.
"""

from __future__ import annotations

import ctypes
import os
import resource

TICK = os.sysconf("SC_CLK_TCK")
PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> None:
    """Orphaned descendants (ssh ControlPersist masters) become this process's children, so their CPU is seen."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def _stat_times(pid: int) -> tuple[int, float] | None:
    """(parent pid, utime + stime + cutime + cstime in seconds) of a process (a zombie still has them)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    fields = raw[raw.rindex(b")") + 2:].split()   # the command name may hold spaces and parentheses
    # After "pid (comm)": state=0 ppid=1 ... utime=11 stime=12 cutime=13 cstime=14 (proc(5) numbering - 3)
    return int(fields[1]), sum(int(x) for x in fields[11:15]) / TICK


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def controller_cpu() -> float:
    """CPU seconds of this process's finished children plus its live (or zombie) children: the masters."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = usage.ru_utime + usage.ru_stime
    me = os.getpid()
    for pid in _pids():
        st = _stat_times(pid)
        if st and st[0] == me:
            total += st[1]
    return total


def namespace_inodes(names) -> set[int]:
    """The network namespaces of the given fleet hosts, as they are named in this lab (DESKGUARD_LAB_RUN: a
    second lab's are lab<N>-f001...). A host without one is an error, never a laptop that cost 0 ms."""
    from deskguard.lab.fleet import netns_name

    out, missing = set(), []
    for name in names:
        try:
            out.add(os.stat(f"/run/netns/{netns_name(name)}").st_ino)
        except FileNotFoundError:
            missing.append(netns_name(name))
    if missing:
        raise SystemExit(f"no network namespace for {len(missing)} fleet host(s) ({', '.join(missing[:3])}...): "
                         "is this lab's fleet up?")
    return out


def laptops_cpu(inodes: set[int]) -> float:
    """CPU seconds of every process in the given network namespaces (their sshd and all it ran)."""
    total = 0.0
    for pid in _pids():
        try:
            if os.stat(f"/proc/{pid}/ns/net").st_ino not in inodes:
                continue
        except OSError:
            continue
        st = _stat_times(pid)
        if st:
            total += st[1]
    return total


def machine_busy() -> float:
    """Busy CPU seconds of the whole machine so far (all cores, everyone's work), from /proc/stat."""
    with open("/proc/stat") as f:
        cpu = [int(x) for x in f.readline().split()[1:]]
    idle = cpu[3] + cpu[4]                                  # idle + iowait
    return (sum(cpu[:8]) - idle) / TICK                     # guest time is already inside user


class Meter:
    """Before/after CPU of one run: controller, laptops (the given fleet hosts), and the whole machine."""

    def __init__(self, hosts):
        self.inodes = namespace_inodes(hosts)

    def read(self) -> tuple[float, float, float]:
        return controller_cpu(), laptops_cpu(self.inodes), machine_busy()

    def __enter__(self):
        self.start = self.read()
        return self

    def __exit__(self, *exc):
        end = self.read()
        self.controller, self.laptops, self.machine = (b - a for a, b in zip(self.start, end))
        return False
