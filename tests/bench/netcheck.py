#!/usr/bin/env python3
"""Benchmark: how long the network collector (plugins/module_utils/deskguard_network.py gather) takes on this
machine — the local signals alone (what the nightly posture adds when no call system is set), with a call system
that answers (10 TCP-handshake samples), and with every probe hanging (the time limit must hold: the ratio to the
limit stays at or under 1 plus one probe). Prints medians and ratios. Run: .venv/bin/python tests/bench/netcheck.py"""

from __future__ import annotations

import socket
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins" / "module_utils"))
import deskguard_network as dn  # noqa: E402


def median_seconds(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    port = srv.getsockname()[1]
    hang = socket.socket()                      # a full accept queue: SYNs are dropped, connects hang
    hang.bind(("127.0.0.1", 0))
    hang.listen(0)
    fillers = []
    for _ in range(3):
        c = socket.socket()
        c.settimeout(0.3)
        try:
            c.connect(hang.getsockname())
        except OSError:
            pass
        fillers.append(c)
    local = median_seconds(lambda: dn.gather(vpn_interface="wg0"), 10)
    answering = median_seconds(lambda: dn.gather([{"host": "127.0.0.1", "ports": [port]}], vpn_interface=""), 5)
    limit, probe = 3.0, 1.0
    hanging = median_seconds(lambda: dn.gather([{"host": "127.0.0.1", "ports": [hang.getsockname()[1]] * 10}],
                                               vpn_interface="", time_limit=limit, probe_timeout=probe), 3)
    print(f"local signals only (route, sysfs, NetworkManager/iw if present, VPN): {local * 1000:.0f} ms")
    print(f"with an answering call system (1 port + 10 samples): {answering * 1000:.0f} ms")
    print(f"ten hanging ports, limit {limit:g} s, probe timeout {probe:g} s: {hanging:.2f} s "
          f"= {hanging / limit:.2f} x the limit (bound: {(limit + probe) / limit:.2f})")
    return 0 if hanging <= limit + probe else 1


if __name__ == "__main__":
    sys.exit(main())
