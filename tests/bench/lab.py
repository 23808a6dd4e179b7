#!/usr/bin/env python3
"""Lab benchmark (a script, not a test): how fast the lab comes up, how fast Ansible reaches the fleet,
what a host costs, how fast the lab goes down. Prints figures and ratios; --json writes them too.

    sudo .venv/bin/python tests/bench/lab.py [--skip-vm] [--vm-cold] [--fleet 200] [--containers 10]

It needs an empty lab (it ends with `lab down`, which stops every lab host): it refuses to run while the lab
has hosts unless --force. One function per figure; the VM figures (image build cold/cached, VM boot to SSH)
call the VM tier's functions only when they exist, so the script runs whatever state that tier is in.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "cli"))

from deskguard.lab import manager, network  # noqa: E402
from deskguard.lab.state import LabState  # noqa: E402

INVENTORY = REPO / "inventory" / "lab"
QUIET = lambda msg: None  # noqa: E731


def timed(fn, *args, **kw):
    start = time.monotonic()
    result = fn(*args, **kw)
    return time.monotonic() - start, result


# --- memory -------------------------------------------------------------------------------------------------

def _rss_pss_kib(pid: int) -> tuple[int, int]:
    rss = pss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def _pids_where(test) -> list[int]:
    out = []
    for pid in network.all_pids():
        try:
            if test(pid):
                out.append(pid)
        except OSError:
            pass
    return out


def memory_of(pids: list[int]) -> tuple[float, float]:
    """(RSS, PSS) in MiB summed over pids. RSS counts shared pages once per process; PSS shares them out."""
    rss = pss = 0
    for pid in pids:
        r, p = _rss_pss_kib(pid)
        rss, pss = rss + r, pss + p
    return rss / 1024, pss / 1024


def fleet_memory(state: LabState) -> dict:
    hosts = state.of_kind("fleet")
    inodes = {network.netns_inode(h.name) for h in hosts} - {None}
    pids = _pids_where(lambda pid: os.stat(f"/proc/{pid}/ns/net").st_ino in inodes)
    rss, pss = memory_of(pids)
    return {"fleet_hosts": len(hosts), "fleet_processes": len(pids), "fleet_rss_mib_per_host": rss / len(hosts),
            "fleet_pss_mib_per_host": pss / len(hosts)}


def container_memory(state: LabState) -> dict:
    hosts = [h for h in state.of_kind("container") if h.extra.get("init_pid")]
    if not hosts:
        return {}
    inodes = set()
    for h in hosts:
        try:
            inodes.add(os.stat(f"/proc/{h.extra['init_pid']}/ns/pid").st_ino)
        except OSError:
            pass
    pids = _pids_where(lambda pid: os.stat(f"/proc/{pid}/ns/pid").st_ino in inodes)
    pids += [h.pid for h in hosts]  # nspawn itself
    rss, pss = memory_of(pids)
    return {"container_rss_mib_per_host": rss / len(hosts), "container_pss_mib_per_host": pss / len(hosts)}


# --- figures ------------------------------------------------------------------------------------------------

def bench_container_boot(n: int) -> dict:
    """One container from nothing to SSH, then up to n in parallel."""
    one, _ = timed(manager.up, containers=1, inventory_dir=INVENTORY, log=QUIET)
    out = {"container_boot_s": one}
    if n > 1:
        more, _ = timed(manager.up, containers=n, inventory_dir=INVENTORY, log=QUIET)
        out[f"containers_{n}_up_s"] = one + more
        out["containers_parallel"] = n
    return out


def bench_fleet_up(n: int) -> dict:
    took, state = timed(manager.up, fleet_hosts=n, inventory_dir=INVENTORY, log=QUIET)
    return {"fleet_up_s": took, "fleet_size": n, **fleet_memory(state)}


def _close_masters(control_dir: Path) -> None:
    for sock in control_dir.glob("*"):
        subprocess.run(["ssh", "-O", "exit", "-o", f"ControlPath={sock}", "lab"], capture_output=True)


def ansible_ping(forks: int, fresh: bool = True, control_dir: Path | None = None) -> tuple[float, int]:
    """Wall time of `ansible lab_fleet -m ping -f forks` with the kit's ansible.cfg; returns (s, hosts ok).
    fresh: new SSH connections (a control-socket folder of its own, masters closed afterwards)."""
    ansible = Path(sys.executable).parent / "ansible"
    own = control_dir or Path(tempfile.mkdtemp(prefix="dg-bench-cp-"))
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_SSH_CONTROL_PATH_DIR": str(own),
           "ANSIBLE_NOCOLOR": "1", "ANSIBLE_DEPRECATION_WARNINGS": "0"}
    start = time.monotonic()
    proc = subprocess.run([str(ansible), "-i", str(INVENTORY / "hosts.yml"), "lab_fleet", "-m", "ping",
                           "-f", str(forks)], capture_output=True, text=True, env=env, cwd=REPO)
    took = time.monotonic() - start
    ok = len(re.findall(r"^\S+ \| SUCCESS", proc.stdout, re.M))
    if fresh:
        _close_masters(own)
        shutil.rmtree(own, ignore_errors=True)
    return took, ok


def bench_ansible_ping(forks_list=(5, 20, 50)) -> dict:
    out = {}
    for forks in forks_list:
        took, ok = ansible_ping(forks)
        out[f"ping_forks{forks}_s"] = took
        out[f"ping_forks{forks}_ok"] = ok
    # The same run again over open ControlPersist connections (what a second play in a session costs).
    cp = Path(tempfile.mkdtemp(prefix="dg-bench-cp-"))
    ansible_ping(20, fresh=False, control_dir=cp)
    took, ok = ansible_ping(20, fresh=False, control_dir=cp)
    _close_masters(cp)
    shutil.rmtree(cp, ignore_errors=True)
    out["ping_forks20_warm_s"], out["ping_forks20_warm_ok"] = took, ok
    return out


def bench_lab_down() -> dict:
    state = LabState.load()
    took, n = timed(manager.down, INVENTORY, log=QUIET)
    return {"lab_down_s": took, "lab_down_hosts": n,
            "lab_down_kinds": sorted({h.kind for h in state.hosts.values()})}


# --- VM tier ------------------------------------------------------------------------------------------------

def bench_image_build(cold: bool) -> dict:
    """Laptop image (rootfs + encrypted VM disk) build time. cold=True removes the cached images first."""
    from deskguard.lab import image
    from deskguard.lab.paths import cache_dir

    if cold:
        for p in cache_dir().glob("rootfs-*"):
            image.remove_tree(p) if p.is_dir() else p.unlink()
        for p in cache_dir().glob("laptop-*"):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink()
    took, _ = timed(lambda: image.ensure_laptop_image(image.ensure_rootfs(), log=QUIET))
    return {"image_build_cold_s" if cold else "image_build_cached_s": took}


def bench_vm_boot() -> dict:
    """`lab up --laptops 1` twice: without the booted snapshot (cold boot, which also makes the snapshot),
    then from the snapshot."""
    from deskguard.lab import image, vm

    vm.discard_snapshot(image.ensure_laptop_image(image.ensure_rootfs(), log=QUIET))
    cold, _ = timed(manager.up, laptops=1, inventory_dir=INVENTORY, log=QUIET)
    manager.down(INVENTORY, log=QUIET, names=["lab-vm1"])
    warm, _ = timed(manager.up, laptops=1, inventory_dir=INVENTORY, log=QUIET)
    return {"vm_cold_boot_and_snapshot_s": cold, "vm_boot_to_ssh_s": warm}


# --- report -------------------------------------------------------------------------------------------------

def ratios(f: dict) -> dict:
    r = {}
    n = f.get("fleet_size")
    if n and f.get("fleet_up_s"):
        r["fleet_hosts_up_per_s"] = n / f["fleet_up_s"]
    for forks in (5, 20, 50):
        if n and f.get(f"ping_forks{forks}_s"):
            r[f"ping_forks{forks}_hosts_per_min"] = 60 * n / f[f"ping_forks{forks}_s"]
    if f.get("ping_forks5_s") and f.get("ping_forks20_s"):
        r["ping_speedup_forks20_vs_5"] = f["ping_forks5_s"] / f["ping_forks20_s"]
    if f.get("ping_forks20_s") and f.get("ping_forks50_s"):
        r["ping_speedup_forks50_vs_20"] = f["ping_forks20_s"] / f["ping_forks50_s"]
    if f.get("ping_forks20_s") and f.get("ping_forks20_warm_s"):
        r["ping_cold_vs_warm_connections"] = f["ping_forks20_s"] / f["ping_forks20_warm_s"]
    if f.get("container_pss_mib_per_host") and f.get("fleet_pss_mib_per_host"):
        r["container_vs_fleet_memory"] = f["container_pss_mib_per_host"] / f["fleet_pss_mib_per_host"]
    if f.get("lab_down_s") and f.get("lab_down_hosts"):
        r["lab_down_ms_per_host"] = 1000 * f["lab_down_s"] / f["lab_down_hosts"]
    if f.get("vm_boot_to_ssh_s") and f.get("container_boot_s"):
        r["vm_vs_container_boot"] = f["vm_boot_to_ssh_s"] / f["container_boot_s"]
    if f.get("vm_boot_to_ssh_s") and f.get("vm_cold_boot_and_snapshot_s"):
        r["vm_snapshot_speedup"] = f["vm_cold_boot_and_snapshot_s"] / f["vm_boot_to_ssh_s"]
    return r


def main() -> int:
    global INVENTORY
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-vm", action="store_true", help="skip the VM tier's figures")
    ap.add_argument("--vm-cold", action="store_true", help="also time a cold image build (removes cached images)")
    ap.add_argument("--fleet", type=int, default=200)
    ap.add_argument("--containers", type=int, default=10)
    ap.add_argument("--force", action="store_true", help="run even though the lab has hosts (they are stopped)")
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    ap.add_argument("--inventory", type=Path, default=INVENTORY,
                    help="lab inventory folder to write and use (default: inventory/lab)")
    args = ap.parse_args()
    INVENTORY = args.inventory
    if os.geteuid() != 0:
        print("bench: the lab needs root", file=sys.stderr)
        return 2
    if LabState.load().hosts and not args.force:
        print("bench: the lab has hosts; it ends with `lab down`: run `deskguard lab down` first or use --force",
              file=sys.stderr)
        return 2
    manager.down(INVENTORY, log=QUIET)

    figures: dict = {"cpus": os.cpu_count()}
    steps = []
    if not args.skip_vm:
        if args.vm_cold:
            steps.append(("image build (cold)", lambda: bench_image_build(cold=True)))
        steps.append(("image build (cached)", lambda: bench_image_build(cold=False)))
    steps += [("container boot", lambda: bench_container_boot(args.containers)),
              ("container memory", lambda: container_memory(LabState.load())),
              (f"fleet of {args.fleet} up", lambda: bench_fleet_up(args.fleet)),
              ("ansible ping over the fleet", bench_ansible_ping)]
    if not args.skip_vm:
        steps.append(("VM boot to SSH", bench_vm_boot))
    steps.append(("lab down", bench_lab_down))
    try:
        for what, fn in steps:
            print(f"bench: {what} ...", file=sys.stderr, flush=True)
            figures.update(fn())
    finally:
        if LabState.load().hosts:
            manager.down(INVENTORY, log=QUIET)
    figures["ratios"] = ratios(figures)

    width = max(len(k) for k in [*figures, *figures["ratios"]])
    for k, v in figures.items():
        if k != "ratios":
            print(f"{k:<{width}}  {v:.2f}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    print("-- ratios")
    for k, v in figures["ratios"].items():
        print(f"{k:<{width}}  {v:.2f}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
