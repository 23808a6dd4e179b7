#!/usr/bin/env python3
"""Benchmark: the nightly compliance run against the lab fleet, kit vs a one-task-per-check baseline.

In one run: brings up N fleet hosts, runs the kit's playbooks/comply.yml (one deskguard_posture call per host,
judged on the controller, recorded in a throw-away store) and tests/bench/comply_baseline.yml (the same
checks written as one task each), and prints hosts/minute for both, their ratio, and how the kit's wall time
grows from the smallest to the largest size. Goals (docs/compliance.md): >= 10x the baseline, >= 300 hosts
per minute on a 2-core controller. Run as root from the checkout:
    .venv/bin/python tests/bench/comply.py [--hosts 50,200] [--baseline-hosts 50] [--forks 20]
It leaves the fleet up (`deskguard lab down` to stop it).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "cli"))

from deskguard.lab import manager  # noqa: E402


def controller_cpu() -> float:
    """CPU seconds used so far by this process's finished children: ansible-playbook, its workers and their ssh
    clients, i.e. the controller's share (the lab's laptops run in other process trees)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def playbook(path: Path, hosts: int, forks: int, site: Path) -> tuple[float, int]:
    """(wall seconds, hosts that finished ok) of one ansible-playbook run over lab-f001..N."""
    limit = ",".join(f"lab-f{i:03d}" for i in range(1, hosts + 1))
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "DESKGUARD_SITE": str(site), "DESKGUARD_RUN_SOURCE": "bench"}
    start = time.monotonic()
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i",
                           str(REPO / "inventory" / "lab" / "hosts.yml"), str(path), "-f", str(forks),
                           "-e", f"deskguard_hosts={limit}", "-e", "ansible_become=true"],
                          capture_output=True, text=True, env=env, cwd=REPO)
    took = time.monotonic() - start
    ok = len(re.findall(r"^lab-f\d+\s+: ok=\d+\s+changed=\d+\s+unreachable=0\s+failed=0", proc.stdout, re.M))
    if ok < hosts:
        print(proc.stdout[-3000:], proc.stderr[-2000:], file=sys.stderr)
    return took, ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", default="50,200", help="fleet sizes for the kit's run, comma-separated")
    ap.add_argument("--baseline-hosts", type=int, default=50, help="fleet size for the (slow) baseline")
    ap.add_argument("--forks", type=int, default=20)
    args = ap.parse_args()
    sizes = sorted(int(s) for s in args.hosts.split(","))
    manager.up(inventory_dir=REPO / "inventory" / "lab", log=lambda m: None, fleet_hosts=max(sizes))
    site = Path(tempfile.mkdtemp(prefix="deskguard-bench-comply-"))
    pw = site / "pw"
    pw.write_text("correct horse battery staple")
    subprocess.run([sys.executable, "-m", "deskguard", "init", "--officer-passphrase-file", str(pw), "--site",
                    str(site)], capture_output=True, check=True)
    kit = REPO / "playbooks" / "comply.yml"
    baseline = REPO / "tests" / "bench" / "comply_baseline.yml"
    rows, rows_cpu = {}, {}
    playbook(kit, min(sizes), args.forks, site)   # warm-up: SSH control masters and caches, not measured
    print(f"load average before the measured runs: {load()}")
    for n in sizes:
        cpu = controller_cpu()
        took, ok = playbook(kit, n, args.forks, site)
        cpu = controller_cpu() - cpu
        if ok < n:
            print(f"bench: the kit's run finished on {ok} of {n} hosts", file=sys.stderr)
            return 1
        rows[n] = took
        print(f"kit comply       {n:4d} hosts: {took:6.1f} s, {ok} ok, {60 * n / took:6.0f} hosts/min, "
              f"controller CPU {1000 * cpu / n:.0f} ms/host")
        rows_cpu[n] = cpu / n
    base, ok = playbook(baseline, args.baseline_hosts, args.forks, site)
    if ok < args.baseline_hosts:
        print(f"bench: the baseline finished on {ok} of {args.baseline_hosts} hosts", file=sys.stderr)
        return 1
    base_rate = 60 * args.baseline_hosts / base
    print(f"baseline (1 task/check) {args.baseline_hosts:4d} hosts: {base:6.1f} s, {ok} ok, {base_rate:6.0f} hosts/min")
    kit_rate = 60 * max(sizes) / rows[max(sizes)]
    print(f"ratio kit/baseline (hosts/min): {kit_rate / base_rate:.1f}x (goal >= 10x)")
    print(f"kit at {max(sizes)} hosts: {kit_rate:.0f} hosts/min (goal >= 300), ratio to goal {kit_rate / 300:.2f}")
    # In the lab the simulated laptops run on the controller's own cores; on a real fleet they do not, so the
    # controller's CPU per host bounds what the same machine does alone. A projection, labelled as such.
    cores = os.cpu_count() or 1
    print(f"projection, controller alone: {cores} cores / {1000 * rows_cpu[max(sizes)]:.0f} ms CPU per host = "
          f"{60 * cores / rows_cpu[max(sizes)]:.0f} hosts/min (not measured: the lab's laptops share these cores)")
    print(f"load average at the end: {load()}")
    if len(sizes) > 1:
        lo, hi = min(sizes), max(sizes)
        print(f"growth {lo} -> {hi} hosts: wall x{rows[hi] / rows[lo]:.2f} for hosts x{hi / lo:.1f} "
              f"(linear would be x{hi / lo:.1f} or less)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
