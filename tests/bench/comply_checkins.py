#!/usr/bin/env python3
"""Benchmark: the check-in-first nightly run at fleet scale (issue 24; goal >= 10,000 laptops judged a minute).

A site with N enrolled laptops (each its own agent key and escrowed BitLocker recovery password, as after
onboarding; inventory and host_vars files as onboarding writes them) whose policy says
`deskguard_comply_evidence: checkin_first`; every laptop posts one signed check-in (the Windows posture of
tests/windows/posture_fixtures.py, which the judges find compliant) to a real `deskguard serve`; then the real
`deskguard comply --format json --output …` is timed. Nothing is contacted: every laptop's WinRM port is a
closed loopback port, so a laptop the run tried to reach would show up as contacted (counted below).

Prints the laptops judged a minute and the ratio to the goal, where the time went (inventory and variables,
check-in reads, judging, recording: from a profile of the same run in-process with --profile), the load
average (other sessions share this machine: LOADED says so), and checks the report: every laptop judged from
its check-in, compliant, none contacted. With --ssh-hosts N the same run also times the live SSH path (the
kit's play, cold, over N lab fleet hosts: tests/bench/comply.py) and prints both ratios.

Run: .venv/bin/python tests/bench/comply_checkins.py [--laptops 10000] [--postgres] [--ssh-hosts 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent), str(HERE.parent / "windows"), str(HERE.parents[1] / "cli")]

from checkin import load, post_all, start_serve  # noqa: E402

GOAL_PER_MIN = 10_000.0
CLOSED_PORT = 9   # discard: nothing listens there on the controller


def build(site: Path, laptops: int) -> list[bytes]:
    """The site's policy, devices, escrow records, inventory; the signed check-in bodies."""
    import yaml
    from posture_fixtures import POLICY, answer, escrow_recovery_password
    from sitetools import init_site

    from deskguard.site import module_utils
    from deskguard.store import Store

    init_site(site)
    policy = {k: v for k, v in POLICY.items() if k != "deskguard_hosts"}
    policy.update(endpoint_agent_orders_url="https://orders.example/o",
                  endpoint_agent_server_url="https://orders.example", vpn_endpoint="vpn.example.com:51820")
    folder = site / "inventory" / "group_vars" / "all"
    (folder / "bench.yml").write_text(yaml.safe_dump(policy))
    main = folder / "policy.yml"   # read after bench.yml (Ansible merges the folder's files in name order)
    main.write_text(main.read_text().replace("deskguard_comply_evidence: live", "deskguard_comply_evidence: checkin_first"))
    proto = module_utils("deskguard_protocol")
    names = [f"op{i:05d}" for i in range(laptops)]
    keys = [proto.generate_private_key() for _ in names]
    with Store.open(site) as store, store.transaction():
        devices = [store.register_device(n, "windows", "127.0.0.1", CLOSED_PORT, "deskguard-test", None) for n in names]
        for dev, key in zip(devices, keys):
            store.set_agent_public_key(dev.uuid, proto.public_key_pem(key).decode())
    for name, dev in zip(names, devices):
        escrow_recovery_password(site, dev.uuid, hostname=name)
    host_vars = site / "inventory" / "host_vars"
    host_vars.mkdir(exist_ok=True)
    for name, dev in zip(names, devices):
        (host_vars / f"{name}.yml").write_text(yaml.safe_dump({
            "ansible_host": "127.0.0.1", "ansible_port": CLOSED_PORT, "ansible_connection": "winrm",
            "ansible_user": "deskguard-test", "deskguard_device_uuid": dev.uuid, "deskguard_os": "windows"}))
    (site / "inventory" / "hosts.yml").write_text(yaml.safe_dump(
        {"all": {"children": {"laptops": {"hosts": {n: None for n in names}}}}}))
    body = answer()
    return [proto.sign(proto.build_checkin(dev.uuid, body, "2-windows"), key) for dev, key in zip(devices, keys)]


def post_checkins(site: Path, bodies: list[bytes], env: dict) -> int:
    server, port = start_serve(site, env, 2, stderr=subprocess.DEVNULL)
    try:
        statuses, _ = asyncio.run(post_all(port, bodies, 64))
    finally:
        server.terminate()
        server.wait(30)
    return statuses.count(200)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--laptops", type=int, default=10_000)
    ap.add_argument("--postgres", action="store_true", help="a throw-away PostgreSQL server instead of SQLite")
    ap.add_argument("--ssh-hosts", type=int, default=0,
                    help="also run the live SSH path (the kit's play, cold) over this many lab fleet hosts in the "
                         "same run and print the ratio (as root; the lab's fleet is brought up)")
    args = ap.parse_args()
    env = {k: v for k, v in os.environ.items() if k not in ("DESKGUARD_SITE", "DESKGUARD_DB_URL")}
    cluster = None
    if args.postgres:
        from pgcluster import PgCluster

        cluster = PgCluster().start(durable=True)
        env["DESKGUARD_DB_URL"] = os.environ["DESKGUARD_DB_URL"] = cluster.new_database()
    else:
        os.environ.pop("DESKGUARD_DB_URL", None)
    try:
        return run(args, env)
    finally:
        if cluster:
            cluster.stop()


def run(args, env: dict) -> int:
    with tempfile.TemporaryDirectory(prefix="deskguard-bench-") as tmp:
        site = Path(tmp) / "site"
        site.mkdir()
        t0 = time.perf_counter()
        bodies = build(site, args.laptops)
        print(f"set-up: {args.laptops} laptops enrolled and escrowed in {time.perf_counter() - t0:.0f} s")
        accepted = post_checkins(site, bodies, env)
        print(f"check-ins: {accepted}/{len(bodies)} accepted by deskguard serve")
        load_start = load()
        report = Path(tmp) / "report.json"
        cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "deskguard", "comply", "--site", str(site), "--format", "json",
                               "--output", str(report)], env=env, capture_output=True, text=True)
        took = time.perf_counter() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
        load_end = load()
        if not report.exists():
            print(f"NO REPORT: exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
            return 1
        hosts = json.loads(report.read_text())["hosts"]
    judged = [h for h in hosts.values() if h["source"] == "checkin" and "not contacted" in (h["message"] or "")]
    compliant = [h for h in judged if h["compliant"]]
    rate = len(judged) / took * 60
    cores = os.cpu_count() or 1
    busy = max(float(load_start.split()[0]), float(load_end.split()[0])) > 0.5 * cores
    db = "PostgreSQL (fsync on)" if args.postgres else "SQLite (WAL)"
    print(f"store: {db}; load average {load_start} at the start, {load_end} at the end"
          + (f"  -> LOADED: other work shared the {cores} CPUs" if busy else ""))
    print(f"deskguard comply: exit {proc.returncode}, {len(hosts)} host(s) in the report in {took:.1f} s; "
          f"{len(judged)} judged from their check-ins without contact, {len(compliant)} compliant")
    print(f"throughput: {rate:,.0f} laptops judged a minute (goal {GOAL_PER_MIN:,.0f}: ratio {rate / GOAL_PER_MIN:.2f})")
    per = cpu / max(len(hosts), 1)
    print(f"CPU: {cpu:.1f} s for the whole command = {per * 1000:.1f} ms a laptop (one process) -> on a CPU of its "
          f"own {60 / per:,.0f} laptops a minute (ratio {60 / per / GOAL_PER_MIN:.2f}; an estimate from CPU time, "
          "not a measurement)")
    if args.ssh_hosts:
        import comply as ssh_bench   # tests/bench/comply.py

        live = ssh_bench.live_run(args.ssh_hosts)
        print(live.line(os.cpu_count() or 1))
        print(f"against the live SSH path in this run ({live.rate:.0f} hosts/min over {args.ssh_hosts} lab fleet hosts, "
              f"{1000 * live.total:.0f} ms CPU a host, laptops included): ratio {rate / live.rate:.1f} wall, "
              f"{live.total / per:.1f} CPU")
    problems = len(hosts) != args.laptops or len(judged) != len(hosts) or len(compliant) != len(hosts)
    if problems or proc.returncode != 0:
        print(f"NOT ALL JUDGED FROM CHECK-INS OR NOT COMPLIANT: stderr tail {proc.stderr[-1500:]}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
