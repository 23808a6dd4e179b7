#!/usr/bin/env python3
"""Benchmark: the nightly compliance run against the lab fleet, kit vs a one-task-per-check baseline.

In one run: brings up N fleet hosts, runs the kit's playbooks/comply.yml (one deskguard_posture call per host,
judged on the controller, recorded in a throw-away store) and tests/bench/comply_baseline.yml (the same
checks written as one task each), and prints hosts/minute for both, their ratio, and how the kit's wall time
grows from the smallest to the largest size. Goals (docs/compliance.md): >= 10x the baseline, >= 300 hosts
per minute on a 2-core controller.

Wall figures swing with whatever else runs on the machine, so every run also prints its CPU per host
(tests/bench/fleetcpu.py): the controller's share and the simulated laptops' share (which on a real fleet
would be spent on the laptops), and the projection 2 cores / total CPU per host — the rate this machine would
reach if the run had the cores to itself, labelled as a projection. `--ping` adds a bare `ping` play over the
same hosts with the same become and SSH settings: Ansible's floor for one module call per host, so the kit's
own cost is the difference. `--base DIR` adds, in the same run, the kit's play from another checkout of the kit
(e.g. `git worktree add /tmp/base main`): its playbooks and plugins through its own ansible.cfg and its own
library (cli/ first on PYTHONPATH), over the same hosts, so a change is measured before/after under the same
load ("base"). `--agent` makes the hosts laptops onboarded with the check-in agent (tests/bench/fleetagent.py).

Every measured run is cold, as the nightly run is (no SSH connection left open from an earlier run): each
gets its own ControlPath folder, and the masters it leaves are closed before the next run. `--warm` measures
over the connections of a warm-up run instead.

Run as root from the checkout:
    .venv/bin/python tests/bench/comply.py [--hosts 50,200] [--baseline-hosts 50] [--forks 20] [--ping]
        [--repeat N] [--env ANSIBLE_X=value ...] [--var name=value ...] [--warm] [--base DIR] [--agent]
It leaves the fleet up (`deskguard lab down` to stop it).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "cli"))

import fleetcpu  # noqa: E402  (next to this script)

from deskguard.lab import manager  # noqa: E402

BENCH = Path(__file__).resolve().parent
PLAYS = {"kit": REPO / "playbooks" / "comply.yml", "ping": BENCH / "comply_ping.yml",
         "baseline": BENCH / "comply_baseline.yml"}


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def host_names(n: int) -> list[str]:
    return [f"lab-f{i:03d}" for i in range(1, n + 1)]


def close_masters() -> None:
    """Stop the ssh ControlPersist masters earlier runs left (our children, see fleetcpu) and reap them, so the
    next run starts cold and its reading starts clean."""
    me = str(os.getpid())
    for pid in [int(p) for p in os.listdir("/proc") if p.isdigit()]:
        try:
            raw = Path(f"/proc/{pid}/stat").read_bytes()
        except OSError:
            continue
        comm, fields = raw[raw.index(b"(") + 1:raw.rindex(b")")], raw.rsplit(b")", 1)[1].split()
        if fields[1].decode() == me and comm == b"ssh":
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.05)


class Run:
    """One measured ansible-playbook run: wall, hosts ok, CPU per host (controller, laptops, machine)."""

    def __init__(self, kind: str, hosts: int, took: float, ok: int, meter: fleetcpu.Meter, main: float):
        self.kind, self.hosts, self.took, self.ok = kind, hosts, took, ok
        self.controller = meter.controller / hosts
        self.main = main / hosts   # ansible-playbook's own process: part of the controller's share
        self.laptops = meter.laptops / hosts
        self.total = self.controller + self.laptops
        self.others = max(0.0, meter.machine - meter.controller - meter.laptops)   # other sessions' work meanwhile
        self.rate = 60 * hosts / took

    def projection(self, cores: int) -> float:
        return 60 * cores / self.total

    def line(self, cores: int) -> str:
        return (f"{self.kind:8s} {self.hosts:4d} hosts: {self.took:6.1f} s wall, {self.ok} ok, {self.rate:4.0f} hosts/min"
                f" | CPU/host: controller {1000 * self.controller:4.0f} ms (main process {1000 * self.main:3.0f})"
                f" + laptops {1000 * self.laptops:4.0f} ms"
                f" = {1000 * self.total:4.0f} ms -> projection {self.projection(cores):4.0f} hosts/min on {cores} cores"
                f" | other work meanwhile {self.others:5.1f} CPU-s, load {load()}")


class Bench:
    def __init__(self, site: Path, forks: int, env: dict[str, str], warm: bool, extra_vars: list[str],
                 base: Path | None = None, inventories: tuple[Path, ...] = ()):
        self.site, self.forks, self.env, self.warm, self.base = site, forks, env, warm, base
        self.extra_vars = [a for v in extra_vars for a in ("-e", v)]
        self.inventories = [a for i in inventories for a in ("-i", str(i))]
        self.cp_dir = None

    def playbook(self, kind: str, hosts: int, fresh: bool) -> tuple[float, int, float]:
        """(wall seconds, hosts that finished ok, CPU seconds of ansible-playbook's main process) of one
        ansible-playbook run over lab-f001..N."""
        if fresh or self.cp_dir is None:
            self.cp_dir = tempfile.mkdtemp(prefix="deskguard-bench-cp-")
        limit = ",".join(host_names(hosts))
        main_cpu = Path(self.cp_dir) / "main-cpu"
        main_cpu.unlink(missing_ok=True)
        root = self.base if kind == "base" else REPO
        env = {**os.environ, "ANSIBLE_CONFIG": str(root / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
               "ANSIBLE_SSH_CONTROL_PATH_DIR": self.cp_dir,
               "ANSIBLE_CALLBACK_PLUGINS": f"{REPO / 'plugins' / 'callback'}:{BENCH / 'callback'}",
               "ANSIBLE_CALLBACKS_ENABLED": "deskguard_record,bench_cpu", "DESKGUARD_BENCH_CPU_FILE": str(main_cpu),
               "DESKGUARD_SITE": str(self.site), "DESKGUARD_RUN_SOURCE": "bench", **self.env}
        if kind == "base":   # the other checkout's library too (the venv's deskguard is this checkout's)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root / "cli"), env.get("PYTHONPATH")]))
        start = time.monotonic()
        proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i",
                               str(REPO / "inventory" / "lab" / "hosts.yml"), *self.inventories,
                               str(root / "playbooks" / "comply.yml" if kind == "base" else PLAYS[kind]), "-f", str(self.forks),
                               "-e", f"deskguard_hosts={limit}", "-e", "ansible_become=true", *self.extra_vars],
                              capture_output=True, text=True, env=env, cwd=REPO)
        took = time.monotonic() - start
        ok = len(re.findall(r"^lab-f\d+\s+: ok=\d+\s+changed=\d+\s+unreachable=0\s+failed=0", proc.stdout, re.M))
        if ok < hosts:
            print(proc.stdout[-3000:], proc.stderr[-2000:], file=sys.stderr)
        return took, ok, float(main_cpu.read_text()) if main_cpu.exists() else float("nan")

    def measure(self, kind: str, hosts: int) -> Run:
        if not self.warm:
            close_masters()
        with fleetcpu.Meter(host_names(hosts)) as meter:
            took, ok, main = self.playbook(kind, hosts, fresh=not self.warm)
        return Run(kind, hosts, took, ok, meter, main)


def median_run(runs: list[Run]) -> Run:
    """The run with the median CPU per host (the figure least disturbed by other work)."""
    return sorted(runs, key=lambda r: r.total)[len(runs) // 2]


def fleet_and_site(hosts: int) -> Path:
    """The lab's fleet up with HOSTS hosts, and a throw-away site to record into. Makes this process the
    subreaper of what it runs next (fleetcpu), after the lab is up: its hosts are detached on purpose."""
    manager.up(inventory_dir=REPO / "inventory" / "lab", log=lambda m: None, fleet_hosts=hosts)
    site = Path(tempfile.mkdtemp(prefix="deskguard-bench-comply-"))
    pw = site / "pw"
    pw.write_text("correct horse battery staple")
    subprocess.run([sys.executable, "-m", "deskguard", "init", "--officer-passphrase-file", str(pw), "--site",
                    str(site)], capture_output=True, check=True)
    fleetcpu.become_subreaper()
    return site


def live_run(hosts: int, forks: int = 20) -> Run:
    """One cold run of the kit's nightly play over lab-f001..HOSTS after a warm-up run (for benches that
    compare another path with the live SSH one in the same run)."""
    bench = Bench(fleet_and_site(hosts), forks, {}, False, [])
    bench.playbook("kit", hosts, fresh=True)
    run = bench.measure("kit", hosts)
    close_masters()
    return run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", default="50,200", help="fleet sizes for the kit's run, comma-separated")
    ap.add_argument("--baseline-hosts", type=int, default=50, help="fleet size for the (slow) baseline; 0: skip it")
    ap.add_argument("--forks", type=int, default=20)
    ap.add_argument("--ping", action="store_true", help="also measure a bare ping play over the same hosts")
    ap.add_argument("--repeat", type=int, default=1, help="measured runs per size (the median is reported)")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="environment for every ansible-playbook run (e.g. ANSIBLE_STRATEGY=free); repeatable")
    ap.add_argument("--var", action="append", default=[], metavar="NAME=VALUE",
                    help="extra variable for every run (e.g. ansible_become=false to measure what sudo costs); "
                         "repeatable")
    ap.add_argument("--warm", action="store_true", help="measure over open SSH connections of a warm-up run")
    ap.add_argument("--base", type=Path, help="another checkout of the kit: its comply play measured in the same run")
    ap.add_argument("--agent", action="store_true",
                    help="the hosts as laptops onboarded with the check-in agent (tests/bench/fleetagent.py): the "
                         "nightly run reads them through the agent's installed collector")
    args = ap.parse_args()
    sizes = sorted(int(s) for s in args.hosts.split(","))
    extra_env = dict(e.split("=", 1) for e in args.env)
    cores = os.cpu_count() or 1
    site = fleet_and_site(max(sizes))
    inventories, extra_vars = (), list(args.var)
    if args.agent:
        import fleetagent

        inventory, agent_vars = fleetagent.install(site, host_names(max(sizes)), Path(tempfile.mkdtemp(
            prefix="deskguard-bench-agent-", dir="/var/tmp")))
        inventories, extra_vars = (inventory,), extra_vars + agent_vars
    bench = Bench(site, args.forks, extra_env, args.warm, extra_vars, args.base.resolve() if args.base else None,
                  inventories)
    # Warm-up, not measured: page cache, Python bytecode caches, ARP entries (and, with --warm, the connections).
    bench.playbook("kit", max(sizes) if args.warm else min(sizes), fresh=True)
    print(f"settings: forks {args.forks}, {'warm' if args.warm else 'cold'} connections"
          + (", hosts onboarded with the agent (its installed collector)" if args.agent else "")
          + (f", env {' '.join(args.env)}" if args.env else "") + (f", vars {' '.join(args.var)}" if args.var else ""))
    print(f"load average before the measured runs: {load()}")
    kinds = (["ping"] if args.ping else []) + (["base"] if args.base else []) + ["kit"]
    best: dict[tuple[str, int], Run] = {}
    for n in sizes:
        # Rounds of one run of each kind, so a change in the machine's load falls on every kind alike.
        measured: dict[str, list[Run]] = {kind: [] for kind in kinds}
        for _ in range(args.repeat):
            for kind in kinds:
                run = bench.measure(kind, n)
                print(run.line(cores), flush=True)
                if run.ok < n:
                    print(f"bench: the {kind} run finished on {run.ok} of {n} hosts", file=sys.stderr)
                    return 1
                measured[kind].append(run)
        for kind, runs in measured.items():
            best[kind, n] = median_run(runs)
            if args.repeat > 1:
                walls = [r.took for r in runs]
                print(f"{kind:8s} {n:4d} hosts: median of {len(runs)}: CPU/host {1000 * best[kind, n].total:.0f} ms, "
                      f"wall {statistics.median(walls):.1f} s (min {min(walls):.1f}, max {max(walls):.1f})")
    top = max(sizes)
    kit = best["kit", top]
    if args.ping:
        for n in sizes:
            k, p = best["kit", n], best["ping", n]
            print(f"kit - ping at {n:4d} hosts: controller {1000 * (k.controller - p.controller):+.0f} ms "
                  f"(main process {1000 * (k.main - p.main):+.0f}), "
                  f"laptops {1000 * (k.laptops - p.laptops):+.0f} ms per host (the kit's own cost over Ansible's floor); "
                  f"kit/ping CPU x{k.total / p.total:.2f} (the figure load distorts least: compare runs by it); "
                  f"ping alone projects {p.projection(cores):.0f} hosts/min")
            print(f"SSH path against ping at {n:4d} hosts: throughput kit/ping {k.rate / p.rate:.2f} wall "
                  f"({k.rate:.0f} / {p.rate:.0f} hosts/min; goal >= 0.9), {p.total / k.total:.2f} by total CPU; "
                  f"controller CPU per host kit/ping {k.controller / p.controller:.2f} (goal <= 1.2)")
            if args.base:
                b = best["base", n]
                print(f"base (the other checkout) at {n:4d} hosts: throughput base/ping {b.rate / p.rate:.2f} wall, "
                      f"{p.total / b.total:.2f} by total CPU; laptops {1000 * (k.laptops - b.laptops):+.0f} ms, "
                      f"controller {1000 * (k.controller - b.controller):+.0f} ms per host kit - base")
    if args.baseline_hosts:
        if not args.warm:
            close_masters()
        with fleetcpu.Meter(host_names(args.baseline_hosts)) as meter:
            took, ok, main = bench.playbook("baseline", args.baseline_hosts, fresh=not args.warm)
        base = Run("baseline", args.baseline_hosts, took, ok, meter, main)
        print(base.line(cores))
        if ok < args.baseline_hosts:
            print(f"bench: the baseline finished on {ok} of {args.baseline_hosts} hosts", file=sys.stderr)
            return 1
        print(f"ratio kit/baseline (hosts/min): {kit.rate / base.rate:.1f}x wall, "
              f"{base.total / kit.total:.1f}x CPU per host (goal >= 10x)")
    print(f"kit at {top} hosts: {kit.rate:.0f} hosts/min measured (goal >= 300), ratio to goal {kit.rate / 300:.2f}; "
          f"projection from CPU {kit.projection(cores):.0f} hosts/min ({cores} cores / {1000 * kit.total:.0f} ms per host, "
          f"laptops included: they share these cores in the lab)")
    print(f"projection, controller alone: {cores} cores / {1000 * kit.controller:.0f} ms = "
          f"{60 * cores / kit.controller:.0f} hosts/min (not measured: a real fleet's laptops are elsewhere)")
    print(f"load average at the end: {load()}")
    if len(sizes) > 1:
        lo, hi = min(sizes), max(sizes)
        a, b = best["kit", lo], best["kit", hi]
        print(f"growth {lo} -> {hi} hosts: wall x{b.took / a.took:.2f}, CPU x{b.total * hi / (a.total * lo):.2f} "
              f"for hosts x{hi / lo:.1f} (linear would be x{hi / lo:.1f} or less)")
    close_masters()
    return 0


if __name__ == "__main__":
    sys.exit(main())
