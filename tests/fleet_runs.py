"""In-memory compliance runs of fleet size, for the HTML report's tests and the report benchmark."""

from __future__ import annotations

from deskguard.compliance import runs


def fleet_run(hosts: int, failing_every: int = 10):
    """An in-memory run of HOSTS managed laptops with 26 controls each (observed values of a real size); every
    FAILING_EVERY-th laptop fails FW-001 with a long observed value."""
    from deskguard.compliance.catalog import CONTROLS

    ids = sorted(CONTROLS)[:26]
    run = {"id": "f" * 36, "finished_at": "2026-12-06T23:00:00Z", "hosts": hosts, "source": "cli", "score": 99.0}
    table = {}
    for n in range(hosts):
        bad = n % failing_every == 0
        results = {cid: {"status": "fail" if bad and cid == "FW-001" else "pass", "severity": "high",
                         "observed": {"rules": [f"ALLOW IN 10.{n % 250}.0.0/16 port {p}" for p in range(40)]}
                         if cid == "FW-001" else {"volumes": [{"device": "/dev/nvme0n1p3", "slots": [0, 1]}]},
                         "expected": {"active": True}, "evidence": ["ufw is inactive"] if bad and cid == "FW-001"
                         else []} for cid in ids}
        table[f"lap-{n:05d}"] = {"state": "ok", "compliant": not bad, "score": 96.0 if bad else 100.0,
                                 "message": None, "device_uuid": f"u{n}", "source": "live", "evidence_at": None,
                                 "results": results}
    return runs.Run(run=run, hosts=table)
