#!/usr/bin/env python3
"""Benchmark: check-in ingest of `deskguard serve` on loopback (goal: >= 1,000 accepted reports/s on SQLite on
this 2-core machine; one report per laptop every 15 minutes is then ~900,000 laptops).

Many simulated laptops, each with its own ECDSA key registered in the store, post signed check-ins (a posture
of realistic size) over keep-alive HTTP/1.1 connections from an asyncio client. Everything is signed before the
clock starts, so the client spends its CPU on HTTP only. Prints accepted reports/s, p50/p99 latency, the ratio
to the goal, and checks that every report is in the store afterwards.

Run: .venv/bin/python tests/bench/checkin.py [--devices 2000] [--rounds 3] [--concurrency 32] [--workers 2]
(DESKGUARD_DB_URL=postgresql+psycopg://... to measure PostgreSQL instead of the site's SQLite file.)
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL = 1000.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU seconds of a process and its children (the uvicorn workers), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry.name), int(fields[1])
        if pid == root or ppid == root:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def posture() -> dict:
    """About the size of deskguard_posture.collect() on a laptop (a few KiB of JSON)."""
    return {"disk": {"volumes": [{"device": "/dev/nvme0n1p3", "luks_uuid": "3b2e8d4a-1c5f-4e7a-9b0d-6f8e2a4c1d3b",
                                  "cipher": "aes-xts-plain64", "key_bits": 512, "keyslots": [0, 1]}]},
            "usb": {"mode": "block", "rules": ["blacklist usb-storage", "install usb-storage /bin/false"]},
            "updates": {"pending_security": 0, "unattended": True, "last_run": "2026-11-29T03:00:00Z"},
            "screen_lock": {"idle_minutes": 5, "lock_enabled": True}, "firewall": {"active": True, "rules": 14},
            "accounts": {"admins": ["dgadmin"], "operator_is_admin": False},
            "software": {"packages": [f"package-{i}" for i in range(120)]}}


def build_site(site: Path, devices: int, rounds: int):
    """Store with `devices` laptops and their agent keys; the signed bodies, round by round."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "cli"))
    from deskguard.site import module_utils
    from deskguard.store import Store

    proto = module_utils("deskguard_protocol")
    keys = [proto.generate_private_key() for _ in range(devices)]
    uuids = []
    with Store.open(site, create=True) as store:
        with store.transaction():
            for i, key in enumerate(keys):
                dev = store.register_device(f"lt-{i:06d}", "debian", "10.9.0.1", 22, "dgadmin", None)
                store.set_agent_public_key(dev.uuid, proto.public_key_pem(key).decode())
                uuids.append(dev.uuid)
    start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=120)
    pos = posture()
    bodies = [[proto.sign(proto.build_checkin(u, pos, "1.0", now=start + dt.timedelta(seconds=r)), k)
               for u, k in zip(uuids, keys)] for r in range(rounds)]
    return uuids, bodies


async def post_all(port: int, bodies: list[bytes], concurrency: int):
    """(statuses, latencies) for every body, over `concurrency` keep-alive connections."""
    queue = asyncio.Queue()
    for b in bodies:
        queue.put_nowait(b)
    statuses, latencies = [], []

    async def worker():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while True:
                try:
                    body = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                t0 = time.perf_counter()
                writer.write(b"POST /v1/checkin HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(body) + body)
                status_line = await reader.readline()
                length = 0
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b""):
                        break
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - t0)
                statuses.append(int(status_line.split()[1]))
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses, latencies


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3, help="check-ins per device")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="deskguard-bench-") as tmp:
        site = Path(tmp)
        t0 = time.perf_counter()
        uuids, rounds = build_site(site, args.devices, args.rounds)
        print(f"set-up: {args.devices} devices with their own keys, {args.devices * args.rounds} signed reports "
              f"({len(rounds[0][0])} bytes each) in {time.perf_counter() - t0:.1f} s")
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k != "DESKGUARD_SITE"}
        server = subprocess.Popen([sys.executable, "-m", "deskguard", "serve", "--site", str(site), "--bind",
                                   f"127.0.0.1:{port}", "--workers", str(args.workers)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            for _ in range(200):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.1)
            time.sleep(1.0)  # every worker up
            statuses, latencies, elapsed = [], [], 0.0
            server_cpu0, client_cpu0 = tree_cpu_seconds(server.pid), time.process_time()
            for bodies in rounds:  # round r+1 of a device must follow its round r (sent_at increases)
                t0 = time.perf_counter()
                s, lat = asyncio.run(post_all(port, bodies, args.concurrency))
                elapsed += time.perf_counter() - t0
                statuses += s
                latencies += lat
            server_cpu = tree_cpu_seconds(server.pid) - server_cpu0
            client_cpu = time.process_time() - client_cpu0
        finally:
            server.terminate()
            err = server.communicate(timeout=30)[1].decode(errors="replace")
        from deskguard.store import Store

        with Store.open(site) as store:
            stored = len(store.latest_checkins())
    ok = statuses.count(200)
    rate = ok / elapsed
    lat = sorted(latencies)
    p50, p99 = statistics.median(lat), lat[int(len(lat) * 0.99) - 1]
    db = "PostgreSQL" if os.environ.get("DESKGUARD_DB_URL", "").startswith("postgres") else "SQLite (WAL)"
    print(f"store: {db}; server: uvicorn, {args.workers} worker process(es); client: {args.concurrency} "
          f"keep-alive connections; {os.cpu_count()} CPUs")
    print(f"accepted: {ok}/{len(statuses)} reports in {elapsed:.2f} s = {rate:,.0f} reports/s "
          f"(goal {GOAL:,.0f}: ratio {rate / GOAL:.2f})")
    print(f"latency: p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms")
    per = server_cpu / max(ok, 1)
    print(f"CPU per report: server {per * 1000:.2f} ms (= {1 / per:,.0f} reports/s per core it has to itself), "
          f"client {client_cpu / max(ok, 1) * 1000:.2f} ms; load average during the run {os.getloadavg()[0]:.1f}")
    print(f"store: {stored}/{len(uuids)} devices have their latest check-in")
    if ok != len(statuses) or stored != len(uuids):
        others = sorted({s for s in statuses if s != 200})
        print(f"NOT ALL ACCEPTED: other statuses {others}; server stderr tail: {err[-1500:]}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
