#!/usr/bin/env python3
"""Benchmark: start-up of `deskguard --help` (target under 0.3 s: commands import Ansible, SQLAlchemy and
rich only when they run). Prints the median of 10 runs, the ratio to the target, and the ratio to
`ansible-playbook --help` for scale. Run: .venv/bin/python tests/bench/cli.py"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET_S = 0.3
BIN = Path(sys.executable).parent


def median_seconds(argv: list[str], runs: int = 10) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    ours = median_seconds([str(BIN / "deskguard"), "--help"])
    onboard = median_seconds([str(BIN / "deskguard"), "onboard", "--help"])
    ansible = median_seconds([str(BIN / "ansible-playbook"), "--help"], runs=3)
    print(f"deskguard --help          {ours:.3f} s  ({ours / TARGET_S:.2f} of the {TARGET_S} s target)")
    print(f"deskguard onboard --help  {onboard:.3f} s  ({onboard / TARGET_S:.2f} of the target)")
    print(f"ansible-playbook --help   {ansible:.3f} s  (deskguard --help is {ansible / ours:.1f}x faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
