"""Compliance runs in a real SQLite store: recorded whole or not at all, read back, drift, reports."""

from __future__ import annotations

import csv
import io
import json
from xml.etree import ElementTree as ET

import pytest

from deskguard.compliance import report, runs
from deskguard.store.models import utcnow

pytestmark = pytest.mark.unit


def result(cid, status, evidence=()):
    return {"id": cid, "status": status, "severity": "high", "observed": {"active": status == "pass"},
            "expected": {"active": True}, "evidence": list(evidence)}


def host(*results, compliant=None):
    counts = [r["status"] for r in results]
    ok = all(s in ("pass", "waived", "not_applicable") for s in counts)
    return runs.HostRecord("ok", list(results), {"score": 100.0 * counts.count("pass") / len(counts),
                                                 "compliant": ok if compliant is None else compliant})


def record(store, run_id, hosts):
    runs.record(store, run_id, utcnow(), "test", hosts)
    return runs.load(store, run_id)


def test_a_run_is_recorded_read_back_and_drift_is_computed(store):
    first = record(store, "r1", {"lt-1": host(result("FW-001", "pass"), result("LCK-001", "pass")),
                                 "lt-2": host(result("FW-001", "fail", ["firewall off"]))})
    assert runs.load(store).run["id"] == "r1" and first.hosts["lt-2"]["results"]["FW-001"]["evidence"] == ["firewall off"]
    second = record(store, "r2", {"lt-1": host(result("FW-001", "fail", ["firewall off"]), result("LCK-001", "pass")),
                                  "lt-2": host(result("FW-001", "pass")),
                                  "lt-3": runs.HostRecord("unreachable", message="ssh: timed out")})
    assert runs.previous(store, second).run["id"] == "r1"
    assert runs.drift(runs.previous(store, second), second) == [
        {"host": "lt-1", "control": "FW-001", "before": "pass", "after": "fail", "change": "new failure"},
        {"host": "lt-2", "control": "FW-001", "before": "fail", "after": "pass", "change": "fixed"},
        {"host": "lt-3", "control": "HOST", "before": None, "after": "unreachable", "change": "reachability"}]
    assert [h["id"] for h in runs.history(store)] == ["r1", "r2"]
    assert second.run["score"] == 75.0            # the mean of reachable hosts' scores
    assert report.exit_code(second) == 3          # an unreachable host wins over a failing one
    assert report.exit_code(first) == 1
    assert store.verify_audit() == (True, None)


def test_a_run_is_all_or_nothing(store):
    bad = {"lt-1": host(result("FW-001", "pass")), "lt-2": runs.HostRecord("ok", [result("FW-001", "pass")] * 2)}
    with pytest.raises(Exception):
        runs.record(store, "r1", utcnow(), "test", bad)   # the duplicate result violates the primary key
    assert runs.load(store) is None and runs.history(store) == []


def test_reports_json_junit_csv_and_table(store):
    run = record(store, "r1", {"lt-1": host(result("FW-001", "fail", ["firewall off"]), result("LCK-001", "waived")),
                               "lt-2": runs.HostRecord("failed", message="posture: garbage")})
    doc = json.loads(report.to_json(run, [], runs.history(store)))
    assert doc["schema"] == "deskguard-compliance" and doc["version"] == 1 and set(doc["hosts"]) == {"lt-1", "lt-2"}
    suites = ET.fromstring(report.to_junit(run))
    by_host = {s.get("name"): s for s in suites}
    assert by_host["lt-1"].get("failures") == "1" and by_host["lt-1"].get("skipped") == "1"
    assert by_host["lt-2"].get("errors") == "1" and by_host["lt-2"].find("testcase/error").text == "posture: garbage"
    rows = list(csv.DictReader(io.StringIO(report.to_csv(run))))
    assert rows[0]["host"] == "lt-2" and rows[0]["host_state"] == "failed"   # worst first
    assert {r["control"]: r["status"] for r in rows if r["host"] == "lt-1"} == {"FW-001": "fail", "LCK-001": "waived"}
    table = report.table_rows(run)
    assert table[0]["host"] == "lt-2" and table[1]["failing"] == "FW-001: firewall off"


def test_runs_recorded_by_a_0003_store_survive_the_upgrade(site):
    """A store left at 0003 (compliance runs, before VPN peers) by an older release keeps its runs on open."""
    from sitetools import downgrade_store

    from deskguard.store import Store
    from deskguard.store.core import SCHEMA_HEAD, current_revision

    with Store.open(site, create=True) as store:
        record(store, "old-run", {"lt-1": host(result("FW-001", "fail", ["firewall off"]))})
        downgrade_store(store, "0003")
        assert current_revision(store.engine) == "0003"
    with Store.open(site) as store:
        assert current_revision(store.engine) == SCHEMA_HEAD
        run = runs.load(store, "old-run")
        assert run.hosts["lt-1"]["results"]["FW-001"]["evidence"] == ["firewall off"]
        assert store.verify_audit() == (True, None)


def test_a_streamed_report_appears_whole_or_not_at_all(store, tmp_path, capsys):
    """JSON and CSV are written a host at a time (never one string of the whole fleet); a writer that fails
    half-way leaves the earlier report in place and no temporary file behind."""
    from deskguard.commands.common import stream_output
    from deskguard.errors import DeskguardError

    run = record(store, "r1", {f"lt-{i}": host(result("FW-001", "pass")) for i in range(3)})
    target = tmp_path / "out" / "report.json"
    stream_output(target, lambda out: report.write_json(out, run, []), "the compliance report")
    assert set(json.loads(target.read_text())["hosts"]) == {"lt-0", "lt-1", "lt-2"}
    assert "written to" in capsys.readouterr().err
    before = target.read_bytes()

    def half_then_fail(out):
        out.write('{"hosts": {')
        raise OSError(28, "No space left on device")

    with pytest.raises(DeskguardError, match="No space left on device; nothing written"):
        stream_output(target, half_then_fail, "the compliance report")
    assert target.read_bytes() == before and sorted(p.name for p in target.parent.iterdir()) == ["report.json"]
    stream_output(None, lambda out: report.write_csv(out, run), "the compliance report")
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert sorted(r["host"] for r in rows) == ["lt-0", "lt-1", "lt-2"]
