"""Compliance runs in the store: record one (a single transaction), read them back, and the drift between
two runs. Used by the callback plugin (which records) and by `deskguard comply` (which reports)."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field

from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from ..store.auditchain import canonical_json
from ..store.models import ComplianceHost, ComplianceResult, ComplianceRun, iso, utcnow


@dataclass
class HostRecord:
    """What a run learnt about one host: state ok (results) | unreachable | failed | stale (message), and where
    the evidence came from (live, or the laptop's latest check-in) and when it was collected."""

    state: str
    results: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    message: str | None = None
    device_uuid: str | None = None
    source: str | None = None
    evidence_at: dt.datetime | None = None


def fleet_score(hosts: dict[str, HostRecord]) -> float | None:
    scores = [h.summary.get("score") for h in hosts.values() if h.state == "ok" and h.summary]
    return round(sum(scores) / len(scores), 1) if scores else None


def record(store, run_id: str, started: dt.datetime, source: str, hosts: dict[str, HostRecord]) -> None:
    """The run, its hosts and every result, in one transaction: a run is in the store whole or not at all.
    A run id already recorded is one slice of a run split over several processes (AWX job slicing: every
    slice of one workflow records under one id): this slice's hosts join it, and its host count and score
    become those of every slice recorded so far. A host already in the run is refused (the transaction rolls
    back: nothing of this slice is kept)."""
    try:
        _record(store, run_id, started, source, hosts)
    except _Raced:
        _record(store, run_id, started, source, hosts)   # another slice created the run a moment ago: join it


class _Raced(Exception):
    """Two slices created the same run at once; the one that lost rolls back and joins the other's."""


def _record(store, run_id: str, started: dt.datetime, source: str, hosts: dict[str, HostRecord]) -> None:
    from ..store.common import StoreError

    with store.transaction() as s:
        run = s.get(ComplianceRun, run_id, with_for_update=True)
        if run is None:
            run = ComplianceRun(id=run_id, started_at=started, finished_at=utcnow(), source=source, hosts=0)
            try:
                with s.begin_nested():
                    s.add(run)
                    s.flush()
            except IntegrityError:
                raise _Raced() from None
        else:
            taken = sorted(set(s.scalars(select(ComplianceHost.hostname).where(ComplianceHost.run_id == run_id)))
                           & set(hosts))
            if taken:
                raise StoreError(f"run {run_id}: {', '.join(taken[:5])}{' …' if len(taken) > 5 else ''} already "
                                 "recorded in it (a slice run twice?); nothing of this slice was recorded")
        s.flush()
        # Bulk inserts (executemany), not an ORM object per row: 26 results a laptop at 10,000 laptops.
        s.execute(insert(ComplianceHost), [  # never empty: a run without hosts is not recorded
            {"run_id": run_id, "hostname": name, "device_uuid": h.device_uuid, "state": h.state,
             "score": h.summary.get("score"), "compliant": bool(h.summary.get("compliant")), "message": h.message,
             "source": h.source, "evidence_at": h.evidence_at} for name, h in sorted(hosts.items())])
        rows = [{"run_id": run_id, "hostname": name, "control": r["id"], "status": r["status"],
                 "severity": r.get("severity") or "", "observed": canonical_json(r.get("observed")),
                 "expected": canonical_json(r.get("expected")), "evidence": canonical_json(r.get("evidence") or [])}
                for name, h in sorted(hosts.items()) for r in h.results]
        if rows:
            s.execute(insert(ComplianceResult), rows)
        counted, scores = s.execute(select(func.count(), func.avg(ComplianceHost.score)).where(
            ComplianceHost.run_id == run_id)).one()
        run.hosts, run.finished_at = counted, utcnow()
        run.score = round(scores, 1) if scores is not None else None   # the mean over hosts with a score
        store.audit(None, "compliance.run", "fleet", {"run_id": run_id, "hosts": len(hosts), "source": source,
                                                      "score": fleet_score(hosts)})
    seen = [h.device_uuid for h in hosts.values() if h.device_uuid and h.state == "ok" and h.source == "live"]
    if seen:
        store.mark_seen(seen, via="live")


@dataclass
class Run:
    run: dict
    hosts: dict[str, dict]                  # hostname -> {state, score, compliant, message, results: {cid: {...}}}


def load(store, run_id: str | None = None) -> Run | None:
    """A run (the latest when run_id is None) with its hosts and results."""
    with store.reading() as s:
        q = select(ComplianceRun)
        q = q.where(ComplianceRun.id == run_id) if run_id else q.order_by(ComplianceRun.finished_at.desc()).limit(1)
        run = s.scalars(q).first()
        if run is None:
            return None
        hosts = {h.hostname: {"state": h.state, "score": h.score, "compliant": h.compliant, "message": h.message,
                              "device_uuid": h.device_uuid, "source": h.source,
                              "evidence_at": iso(h.evidence_at), "results": {}}
                 for h in s.scalars(select(ComplianceHost).where(ComplianceHost.run_id == run.id))}
        for r in s.scalars(select(ComplianceResult).where(ComplianceResult.run_id == run.id)):
            hosts[r.hostname]["results"][r.control] = {
                "status": r.status, "severity": r.severity, "observed": json.loads(r.observed),
                "expected": json.loads(r.expected), "evidence": json.loads(r.evidence)}
        return Run(run.to_dict(), hosts)


def previous(store, run: Run) -> Run | None:
    with store.reading() as s:
        prev = s.scalars(select(ComplianceRun.id).where(ComplianceRun.finished_at < dt.datetime.fromisoformat(
            run.run["finished_at"].rstrip("Z"))).order_by(ComplianceRun.finished_at.desc()).limit(1)).first()
    return load(store, prev) if prev else None


def history(store, limit: int = 30) -> list[dict]:
    with store.reading() as s:
        rows = s.scalars(select(ComplianceRun).order_by(ComplianceRun.finished_at.desc()).limit(limit))
        return [r.to_dict() for r in reversed(list(rows))]


def drift(before: Run | None, after: Run) -> list[dict]:
    """Per host and control, what changed since the previous run: {host, control, before, after, change}.
    Without a previous run nothing has changed: a first run's failures are the report, not drift."""
    if before is None:
        return []
    changes = []
    for host, h in sorted(after.hosts.items()):
        old = (before.hosts.get(host) if before else None) or {"state": None, "results": {}}
        if old["state"] != h["state"] and (old["state"] or h["state"] != "ok"):
            changes.append({"host": host, "control": "HOST", "before": old["state"], "after": h["state"],
                            "change": "reachability"})
        for cid, r in sorted(h["results"].items()):
            was = old["results"].get(cid, {}).get("status")
            if was == r["status"]:
                continue
            kind = ("new failure" if r["status"] in ("fail", "error") else
                    "fixed" if was in ("fail", "error") and r["status"] == "pass" else
                    "fixed, with a warning" if was in ("fail", "error") and r["status"] == "warn" else
                    "new warning" if r["status"] == "warn" else
                    "warning cleared" if was == "warn" and r["status"] == "pass" else
                    "new waiver" if r["status"] == "waived" else
                    "no longer failing (not checked)" if was in ("fail", "error") and r["status"] == "not_checked" else
                    "no longer checked" if r["status"] == "not_checked" else "changed")
            if was is None and r["status"] == "pass":
                continue   # a new host or control that passes is not drift
            changes.append({"host": host, "control": cid, "before": was, "after": r["status"], "change": kind})
    return changes
