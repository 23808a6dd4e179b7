#!/usr/bin/env python3
"""Benchmark: check-in ingest of `deskguard serve` on loopback (goal: >= 1,000 accepted reports/s on SQLite on
this 2-core machine; one report per laptop every 15 minutes is then ~900,000 laptops).

Many simulated laptops, each with its own ECDSA key registered in the store, post signed check-ins (a posture
of realistic size) over keep-alive HTTP/1.1 connections from an asyncio client in this process; the server is
its own process tree. Everything is signed before the clock starts (each report of a device has a later sent_at,
which is what makes it new rather than a replay), so the client spends its CPU on HTTP only. Prints accepted
reports/s, p50/p99 latency, server and client CPU per report (from /proc and this process), the load average at
the start and end (other sessions share this machine: a loaded figure says so), the ratio to the goal, and checks
the store afterwards: every device's stored check-in is its last accepted one, one row per device, no report
lost or stored twice.

Run: .venv/bin/python tests/bench/checkin.py [--devices 2000] [--rounds 3] [--concurrency 64] [--workers 2]
     [--postgres]   (a throw-away PostgreSQL server from tests/pgcluster.py, fsync on, instead of SQLite)
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


def start_serve(site: Path, env: dict, workers: int, stderr=subprocess.PIPE) -> tuple[subprocess.Popen, int]:
    """`deskguard serve` for SITE on a free loopback port, once it accepts connections and its workers are up
    (up to a minute on a loaded machine). (process, port); the caller terminates it."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "deskguard", "serve", "--site", str(site), "--bind",
                               f"127.0.0.1:{port}", "--workers", str(workers)], env=env,
                              stdout=subprocess.DEVNULL, stderr=stderr)
    for _ in range(600):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    time.sleep(1.0)  # every worker up
    return server, port


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


async def post(reader, writer, path: str, body: bytes) -> int:
    """POST one JSON body over an open HTTP/1.1 connection; the answer's status (its body read and dropped)."""
    writer.write(b"POST %s HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % (path.encode(), len(body)) + body)
    status_line = await reader.readline()
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    await reader.readexactly(length)
    return int(status_line.split()[1])


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
                statuses.append(await post(reader, writer, "/v1/checkin", body))
                latencies.append(time.perf_counter() - t0)
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses, latencies


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.1f} (1 min) / {five:.1f} (5 min)"


def check_store(site: Path, uuids: list[str], rounds: list[list[bytes]], statuses: list[int]) -> list[str]:
    """What is wrong with the store after the run: each device must hold exactly its newest accepted report."""
    import base64
    import json

    from deskguard.site import module_utils
    from deskguard.store import Store

    proto = module_utils("deskguard_protocol")
    newest = {}
    for r, bodies in enumerate(rounds):
        for i, body in enumerate(bodies):
            if statuses[r * len(bodies) + i] == 200:
                newest[uuids[i]] = json.loads(base64.b64decode(json.loads(body)["payload"]))["sent_at"]
    with Store.open(site) as store:
        stored = store.latest_checkins()
        seen = {d.uuid: d.last_seen_via for d in store.list_devices()}
    problems = [f"{len(stored)} check-in rows for {len(newest)} devices with an accepted report"] \
        if set(stored) != set(newest) else []
    for uuid, sent_at in newest.items():
        row = stored.get(uuid)
        if row is None or proto.format_time(row.sent_at) != sent_at or seen.get(uuid) != "checkin":
            problems.append(f"device {uuid}: stored {row and proto.format_time(row.sent_at)}, last accepted {sent_at}")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3, help="check-ins per device")
    ap.add_argument("--concurrency", type=int, default=64, help="keep-alive connections (laptops at once)")
    ap.add_argument("--workers", type=int, default=2, help="server processes")
    ap.add_argument("--postgres", action="store_true", help="a throw-away PostgreSQL server instead of SQLite")
    args = ap.parse_args()

    load_start = load()
    cluster = None
    env = {k: v for k, v in os.environ.items() if k not in ("DESKGUARD_SITE", "DESKGUARD_DB_URL")}
    if args.postgres:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from pgcluster import PgCluster

        cluster = PgCluster().start(durable=True)
        env["DESKGUARD_DB_URL"] = os.environ["DESKGUARD_DB_URL"] = cluster.new_database()
    else:
        os.environ.pop("DESKGUARD_DB_URL", None)
    try:
        db_pid = int((cluster.data / "postmaster.pid").read_text().split()[0]) if cluster else None
        return run(args, env, load_start, db_pid)
    finally:
        if cluster:
            cluster.stop()


def run(args, env: dict, load_start: str, db_pid: int | None) -> int:
    """The timed run; db_pid: PostgreSQL's postmaster, whose process tree's CPU is the database's share."""
    with tempfile.TemporaryDirectory(prefix="deskguard-bench-") as tmp:
        site = Path(tmp)
        t0 = time.perf_counter()
        uuids, rounds = build_site(site, args.devices, args.rounds)
        print(f"set-up: {args.devices} devices with their own keys, {args.devices * args.rounds} signed reports "
              f"({len(rounds[0][0])} bytes each) in {time.perf_counter() - t0:.1f} s")
        server, port = start_serve(site, env, args.workers)
        try:
            load_run = load()
            statuses, latencies, elapsed = [], [], 0.0
            server_cpu0, client_cpu0 = tree_cpu_seconds(server.pid), time.process_time()
            db_cpu0 = tree_cpu_seconds(db_pid) if db_pid else 0.0
            for bodies in rounds:  # round r+1 of a device must follow its round r (sent_at increases)
                t0 = time.perf_counter()
                s, lat = asyncio.run(post_all(port, bodies, args.concurrency))
                elapsed += time.perf_counter() - t0
                statuses += s
                latencies += lat
            server_cpu = tree_cpu_seconds(server.pid) - server_cpu0
            client_cpu = time.process_time() - client_cpu0
            db_cpu = tree_cpu_seconds(db_pid) - db_cpu0 if db_pid else 0.0
            load_end = load()
        finally:
            server.terminate()
            err = server.communicate(timeout=30)[1].decode(errors="replace")
        problems = check_store(site, uuids, rounds, statuses)
    ok = statuses.count(200)
    rate = ok / elapsed
    lat = sorted(latencies)
    p50, p99 = statistics.median(lat), lat[int(len(lat) * 0.99) - 1]
    db = "PostgreSQL (fsync on)" if args.postgres else "SQLite (WAL)"
    cores = os.cpu_count() or 1
    busiest = max(os.getloadavg()[0], float(load_run.split()[0]))
    print(f"store: {db}; server: uvicorn, {args.workers} worker process(es); client: {args.concurrency} "
          f"keep-alive connections, its own process; {cores} CPUs")
    print(f"load average: {load_start} before set-up, {load_run} at the start of the run, {load_end} at its end"
          + (f"  -> LOADED: other work shared the {cores} CPUs, the figures below are lower than on an idle machine"
             if busiest > 0.5 * cores else ""))
    print(f"accepted: {ok}/{len(statuses)} reports in {elapsed:.2f} s = {rate:,.0f} reports/s "
          f"(goal {GOAL:,.0f}: ratio {rate / GOAL:.2f})")
    print(f"latency: p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms")
    per, client_per, db_per = (cpu / max(ok, 1) for cpu in (server_cpu, client_cpu, db_cpu))
    total = per + client_per + db_per
    print(f"CPU per report: server {per * 1000:.2f} ms, client {client_per * 1000:.2f} ms"
          + (f", PostgreSQL {db_per * 1000:.2f} ms" if db_pid else "")
          + f" -> with the {cores} CPUs to themselves they could take {cores / total:,.0f} reports/s "
          f"(ratio {cores / total / GOAL:.2f} to the goal; an estimate from CPU time, not a measurement)")
    print(f"store check: {'every device holds exactly its last accepted report' if not problems else 'FAILED'} "
          f"({len(uuids)} devices)")
    for p in problems[:10]:
        print(f"  {p}")
    if ok != len(statuses) or problems:
        others = sorted({s for s in statuses if s != 200})
        print(f"NOT ALL ACCEPTED OR STORED: other statuses {others}; server stderr tail: {err[-1500:]}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
