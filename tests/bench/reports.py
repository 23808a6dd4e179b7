#!/usr/bin/env python3
"""Benchmark: the compliance reports at 1,000 and 10,000 laptops (issue 24: usable at 10,000, JSON/CSV streamed).

Each size is an in-memory run of managed laptops with 26 controls each, a tenth failing with a long observed
value (tests/fleet_runs.py, the runs the HTML report's tests use). Every format is written the way
`deskguard comply --format F --output FILE` writes it (JSON, CSV and JUnit streamed a host at a time into an
atomic file, HTML, a fiftieth of their size, as one string), and the bench prints for each: seconds, file size, and the peak of the
memory the writing allocated (tracemalloc, the run itself not counted), with the peak as a share of the file's
size: a streamed format stays far below 1.0 (it never holds the whole report), a format built whole is at or
above it.

Run: .venv/bin/python tests/bench/reports.py [--sizes 1000,10000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parents[1] / "cli")]


def writers(run):
    from deskguard.compliance import html, report

    return {"json": lambda out: report.write_json(out, run, []),
            "csv": lambda out: report.write_csv(out, run),
            "junit": lambda out: report.write_junit(out, run),
            "html": lambda out: out.write(html.render(run, [], []))}


def measure(write, path: Path) -> tuple[float, int, int]:
    """Seconds (a run without tracemalloc, which slows every allocation), size, peak memory (a second run)."""
    from deskguard.fsutil import atomic_text_stream

    t0 = time.perf_counter()
    with atomic_text_stream(path) as out:
        write(out)
    took = time.perf_counter() - t0
    tracemalloc.start()
    with atomic_text_stream(path) as out:
        write(out)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return took, path.stat().st_size, peak


def main() -> int:
    from fleet_runs import fleet_run

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000")
    args = parser.parse_args()
    streamed = {"json", "csv", "junit"}
    worst = 0.0
    with tempfile.TemporaryDirectory(prefix="deskguard-bench-") as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            run = fleet_run(n)
            for fmt, write in writers(run).items():
                took, size, peak = measure(write, Path(tmp) / f"report-{n}.{fmt}")
                share = peak / size
                if fmt in streamed:
                    worst = max(worst, share)
                print(f"{n:>6,} laptops  {fmt:<5} {size / 1e6:7.2f} MB in {took:5.2f} s; peak memory while "
                      f"writing {peak / 1e6:7.2f} MB = {share:.3f} of the file "
                      f"({'streamed' if fmt in streamed else 'built whole'})")
    print(f"streamed formats: peak memory at most {worst:.3f} of the file's size (1.0 or more: built whole)")
    return 0 if worst < 0.5 else 1


if __name__ == "__main__":
    sys.exit(main())
