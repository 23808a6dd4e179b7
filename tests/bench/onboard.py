#!/usr/bin/env python3
"""Benchmark: onboarding the lab laptop VM, first run and converged re-run.

Prints wall time and module calls (round trips to the laptop) for each, and their ratio. Goal for the
converged run: 0 changed, at most 20 module calls. Run as root from the checkout:
    .venv/bin/python tests/bench/onboard.py [--target vm|container]
It brings the lab up as needed and leaves it up (`deskguard lab down` to stop it).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "cli"))

from deskguard.lab import manager  # noqa: E402
from deskguard.lab.image import lab_key  # noqa: E402
from deskguard.lab.sites import set_management_networks  # noqa: E402

TARGETS = {"vm": ("lab-vm1", {"laptops": 1}, "10.0.2.0/24"),
           "container": ("lab-ct1", {"containers": 1}, None)}  # None: the lab bridge's range (its index's)


def deskguard(site: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deskguard", *args, "--site", str(site)],
                          capture_output=True, text=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", choices=sorted(TARGETS), default="vm")
    args = ap.parse_args()
    name, counts, management = TARGETS[args.target]
    management = management or manager.management_networks()[0]
    state = manager.up(inventory_dir=REPO / "inventory" / "lab", log=lambda m: None, **counts)
    host = state.hosts[name]
    site = Path(tempfile.mkdtemp(prefix="deskguard-bench-site-"))
    pw = site / "pw"
    pw.write_text("correct horse battery staple")
    if deskguard(site, "init", "--officer-passphrase-file", str(pw)).returncode:
        print("bench: init failed", file=sys.stderr)
        return 1
    set_management_networks(site, [management])
    rows = []
    for label in ("first", "converged"):
        start = time.monotonic()
        proc = deskguard(site, "onboard", f"bench-{args.target}", "--os", "debian", "--address", host.address,
                         "--port", str(host.port), "--user", "tanaka", "--ssh-key", str(lab_key()), "--json")
        wall = time.monotonic() - start
        if proc.returncode != 0:
            print(f"bench: {label} onboarding failed: {proc.stderr.strip() or proc.stdout[-500:]}", file=sys.stderr)
            return 1
        out = json.loads(proc.stdout)
        rows.append((label, wall, out["module_calls"], out["changed_tasks"]))
        print(f"{args.target} {label:9} onboarding: {wall:7.1f} s wall, {out['module_calls']:3d} module calls, "
              f"{out['changed_tasks']} changed")
    (_, w1, c1, _), (_, w2, c2, ch2) = rows
    print(f"ratio first/converged: wall {w1 / w2:.2f}x, module calls {c1 / max(c2, 1):.2f}x")
    print(f"converged goal (0 changed, <= 20 module calls): {'met' if ch2 == 0 and c2 <= 20 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
