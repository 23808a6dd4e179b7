#!/usr/bin/env python3
"""Benchmark: POST /v1/enrol of `deskguard serve` on loopback, beside tests/bench/checkin.py (goal: >= 20
enrolments/s on SQLite on this 2-core machine: a fleet of 10,000 laptops switched on the same morning enrols
within ten minutes).

Simulated laptops, each with its own device key and WireGuard key, enrol with one N-use token; every request is
signed before the clock starts. They come from many loopback source addresses (127.0.0.2...) because the
route limits each client address to a tenth of `enrolment_rate_per_minute`; the policy sets that to its maximum
(6,000 a minute per server process), which the output names as the ceiling. An enrolment is one write
transaction with five audit rows (device, agent key, VPN address, VPN key, token use), so unlike a check-in it
cannot share a commit. Prints enrolments/s, p50/p99 latency, server CPU per enrolment, the load average, the
ratio to the goal, and checks the store afterwards: one device and one distinct VPN address per laptop, the
token's use count, an intact audit chain.

Run: .venv/bin/python tests/bench/enrol.py [--laptops 600] [--concurrency 32] [--workers 1]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from checkin import load, post, start_serve, tree_cpu_seconds  # noqa: E402

GOAL = 20.0
RATE_PER_MINUTE = 6000


def build_site(site: Path, laptops: int):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "cli"))
    from deskguard.site import module_utils
    from deskguard.site.inventory import ensure_hosts_file
    from deskguard.store import Store

    proto, enrol = module_utils("deskguard_protocol"), module_utils("deskguard_enrol")
    ensure_hosts_file(site)
    policy = site / "inventory" / "group_vars" / "all"
    policy.mkdir(parents=True, exist_ok=True)
    (policy / "policy.yml").write_text(
        "vpn_enabled: true\nvpn_endpoint: vpn.example.com:51820\n"
        f"vpn_gateway_public_key: {base64.b64encode(b'g' * 32).decode()}\nvpn_pool: 10.64.0.0/16\n"
        f"enrolment_rate_per_minute: {RATE_PER_MINUTE}\n")
    with Store.open(site, create=True) as store:
        token_row, token = store.create_enrolment_token(uses=laptops)
    bodies = [enrol.build_request(token, f"home-{i:05d}", proto.generate_private_key(),
                                  base64.b64encode(i.to_bytes(4, "big") * 8).decode(), serial=f"SN{i}")
              for i in range(laptops)]
    return token_row.id, bodies


async def post_all(port: int, bodies: list[bytes], concurrency: int):
    queue = asyncio.Queue()
    for b in bodies:
        queue.put_nowait(b)
    statuses, latencies = [], []

    async def worker(k: int):
        source = f"127.0.{1 + k // 250}.{2 + k % 250}"
        while True:
            try:
                body = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            # One connection per laptop, as a laptop enrolling once would open it.
            reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
            t0 = time.perf_counter()
            statuses.append(await post(reader, writer, "/v1/enrol", body))
            latencies.append(time.perf_counter() - t0)
            writer.close()

    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return statuses, latencies


def check_store(site: Path, token_id: str, laptops: int) -> list[str]:
    from deskguard.store import Store

    with Store.open(site) as store:
        devices = store.list_devices()
        peers = store.list_vpn_peers()
        token = store.get_enrolment_token(token_id)
        audit_ok = store.verify_audit()[0]
    problems = []
    if len(devices) != laptops or len({p.address for p, _d in peers}) != laptops:
        problems.append(f"{len(devices)} devices, {len({p.address for p, _d in peers})} distinct addresses for "
                        f"{laptops} laptops")
    if token.uses != laptops:
        problems.append(f"the token counts {token.uses} uses for {laptops} enrolments")
    if not audit_ok:
        problems.append("the audit chain does not verify")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--laptops", type=int, default=600)
    ap.add_argument("--concurrency", type=int, default=32, help="laptops enrolling at once")
    ap.add_argument("--workers", type=int, default=1, help="server processes")
    args = ap.parse_args()
    load_start = load()
    env = {k: v for k, v in os.environ.items() if k not in ("DESKGUARD_SITE", "DESKGUARD_DB_URL")}
    os.environ.pop("DESKGUARD_DB_URL", None)
    with tempfile.TemporaryDirectory(prefix="deskguard-bench-enrol-") as tmp:
        site = Path(tmp)
        t0 = time.perf_counter()
        token_id, bodies = build_site(site, args.laptops)
        print(f"set-up: {args.laptops} laptops with their own keys, one {args.laptops}-use token, signed requests "
              f"({len(bodies[0])} bytes each) in {time.perf_counter() - t0:.1f} s")
        server, port = start_serve(site, env, args.workers)
        try:
            load_run = load()
            cpu0 = tree_cpu_seconds(server.pid)
            t0 = time.perf_counter()
            statuses, latencies = asyncio.run(post_all(port, bodies, args.concurrency))
            elapsed = time.perf_counter() - t0
            server_cpu = tree_cpu_seconds(server.pid) - cpu0
            load_end = load()
        finally:
            server.terminate()
            err = server.communicate(timeout=30)[1].decode(errors="replace")
        problems = check_store(site, token_id, statuses.count(200))
    ok = statuses.count(200)
    rate = ok / elapsed
    lat = sorted(latencies)
    cores = os.cpu_count() or 1
    busiest = max(os.getloadavg()[0], float(load_run.split()[0]))
    ceiling = RATE_PER_MINUTE / 60 * args.workers
    print(f"store: SQLite (WAL); server: uvicorn, {args.workers} worker process(es); client: {args.concurrency} "
          f"laptops at once from {min(args.concurrency, 250 * 4)} loopback addresses; {cores} CPUs; rate-limit "
          f"ceiling {ceiling:,.0f} enrolments/s (enrolment_rate_per_minute {RATE_PER_MINUTE} x workers)")
    print(f"load average: {load_start} before set-up, {load_run} at the start, {load_end} at the end"
          + (f"  -> LOADED: other work shared the {cores} CPUs" if busiest > 0.5 * cores else ""))
    print(f"enrolled: {ok}/{len(statuses)} in {elapsed:.2f} s = {rate:,.1f} enrolments/s (goal {GOAL:.0f}: ratio "
          f"{rate / GOAL:.2f}; {rate / ceiling:.2f} of the rate-limit ceiling)")
    print(f"latency: p50 {statistics.median(lat) * 1000:.1f} ms, p99 {lat[int(len(lat) * 0.99) - 1] * 1000:.1f} ms")
    per = server_cpu / max(ok, 1)
    print(f"server CPU per enrolment: {per * 1000:.2f} ms -> {cores / per:,.0f} enrolments/s if the server had the "
          f"{cores} CPUs to itself (an estimate from CPU time; ratio {cores / per / GOAL:.1f} to the goal)")
    print(f"store check: {'one device and one distinct VPN address per enrolment, token count right, audit chain intact' if not problems else 'FAILED'}")
    for p in problems:
        print(f"  {p}")
    if ok != len(statuses) or problems:
        print(f"NOT ALL ENROLLED: other statuses {sorted({s for s in statuses if s != 200})}; server stderr tail: "
              f"{err[-1500:]}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
