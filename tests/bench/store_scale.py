#!/usr/bin/env python3
"""Benchmark: the store's per-row cost at 1,000, 10,000 and 100,000 rows (issue 24; goal: flat).

For each size N a fresh site holds N devices, N orders (one a device) and N audit entries (a day apart from
the newest 1 %), then the real commands run in this process through click (their output discarded; imports
warmed first): `devices list --json`, `orders list --json`, `audit log --since 1d --json` (1 % of the entries
match), `audit log --target HOST --json`; and the compliance runs: recording a run of N/10 hosts (26 results
each, one transaction) and reading it back with its drift against the previous one. Prints milliseconds per
row for each and the ratio of the largest size's per-row cost to the smallest's (1.0 is flat; more than ~2
means a cost that grows with the table: a missing index or a query per row). The rows are written in bulk
(the audit entries' hashes are not a valid chain: `audit verify` is not part of this bench).

Run: .venv/bin/python tests/bench/store_scale.py [--sizes 1000,10000,100000] [--postgres]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
import uuid as uuidlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parents[1] / "cli")]

CONTROLS = 26


def populate(site: Path, n: int) -> list[str]:
    from sqlalchemy import insert

    from deskguard.store import Store
    from deskguard.store.models import AuditEntry, Device, Order

    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    names = [f"op{i:06d}" for i in range(n)]
    uuids = [str(uuidlib.uuid4()) for _ in names]
    with Store.open(site) as store, store.transaction() as s:
        s.execute(insert(Device), [{"uuid": u, "hostname": h, "os": "debian", "address": "10.0.0.1", "port": 22,
                                    "ssh_user": "dgadmin", "operator": f"operator {i}", "state": "active",
                                    "created_at": now, "updated_at": now, "last_seen_at": now,
                                    "last_seen_via": "checkin"} for i, (u, h) in enumerate(zip(uuids, names))])
        s.execute(insert(Order), [{"id": str(uuidlib.uuid4()), "device_uuid": u, "action": "lock", "volumes": "[]",
                                   "nonce": uuidlib.uuid4().hex, "envelope": "{}", "state": "done",
                                   "prior_device_state": "active", "actor": "it", "reason": "bench",
                                   "issued_at": now, "expires_at": now, "created_at": now} for u in uuids])
        start = max((e.id for e in store.list_audit(limit=1)), default=0) + 1
        recent = max(n // 100, 1)
        s.execute(insert(AuditEntry), [{"id": start + i, "at": now - dt.timedelta(days=0 if i >= n - recent else 3),
                                        "actor": "it", "action": "device.state", "target": names[i % n],
                                        "detail": json.dumps({"i": i}), "prev_hash": f"{i:064x}",
                                        "hash": f"{i + 1:064x}"} for i in range(n)])
    return names


def run_hosts(n_hosts: int, status: str):
    from deskguard.compliance.runs import HostRecord

    results = [{"id": f"C-{c:03d}", "status": status if c == 0 else "pass", "severity": "high",
                "observed": {"value": c, "rules": ["allow 22/tcp from 10.0.0.0/8"]}, "expected": {"value": c},
                "evidence": []} for c in range(CONTROLS)]
    return {f"op{i:06d}": HostRecord("ok", results, {"score": 96.0, "compliant": status == "pass"},
                                     device_uuid=None, source="live") for i in range(n_hosts)}


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(n: int, env_url: str | None) -> dict[str, float]:
    from click.testing import CliRunner

    from deskguard.cli import app as cli
    from deskguard.compliance import runs
    from deskguard.store import Store
    from deskguard.store.models import utcnow

    with tempfile.TemporaryDirectory(prefix="deskguard-bench-") as tmp:
        site = Path(tmp)
        pw = site / "pw"
        pw.write_text("correct horse battery staple 42\n")
        runner = CliRunner()
        assert runner.invoke(cli, ["init", "--site", str(site), "--officer-passphrase-file", str(pw)]).exit_code == 0
        names = populate(site, n)

        def cmd(*args):
            res = runner.invoke(cli, [*args, "--site", str(site)])
            assert res.exit_code == 0, res.output[-500:]

        cmd("devices", "list", "--json")   # warm the imports
        out = {}
        out["devices list"] = timed(lambda: cmd("devices", "list", "--json")) / n
        out["orders list"] = timed(lambda: cmd("orders", "list", "--json")) / n
        out["audit log --since 1d"] = timed(lambda: cmd("audit", "log", "--since", "1d", "--json")) / max(n // 100, 1)
        out["audit log --target (per table row)"] = timed(lambda: cmd("audit", "log", "--target", names[n // 2],
                                                                        "--json")) / n
        hosts = max(n // 10, 1)
        with Store.open(site) as store:
            runs.record(store, "before", utcnow(), "bench", run_hosts(hosts, "pass"))
            out["run recording (per host)"] = timed(
                lambda: runs.record(store, "after", utcnow(), "bench", run_hosts(hosts, "fail"))) / hosts

            def read_back():
                after = runs.load(store, "after")
                assert len(runs.drift(runs.previous(store, after), after)) == hosts

            out["run read back + drift (per host)"] = timed(read_back) / hosts
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--postgres", action="store_true")
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    cluster = None
    if args.postgres:
        from pgcluster import PgCluster

        cluster = PgCluster().start(durable=True)
    try:
        table: dict[str, dict[int, float]] = {}
        for n in sizes:
            if cluster:
                os.environ["DESKGUARD_DB_URL"] = cluster.new_database()
            else:
                os.environ.pop("DESKGUARD_DB_URL", None)
            for op, per_row in measure(n, os.environ.get("DESKGUARD_DB_URL")).items():
                table.setdefault(op, {})[n] = per_row
            print(f"size {n:,}: done (load average {os.getloadavg()[0]:.1f})", flush=True)
    finally:
        if cluster:
            cluster.stop()
    print(f"store: {'PostgreSQL' if args.postgres else 'SQLite'}; ms per row (ratio = largest size / smallest)")
    print(f"{'operation':38}" + "".join(f"{n:>12,}" for n in sizes) + "       ratio")
    for op, by_size in table.items():
        print(f"{op:38}" + "".join(f"{by_size[n] * 1000:12.3f}" for n in sizes)
              + f"{by_size[sizes[-1]] / by_size[sizes[0]]:12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
