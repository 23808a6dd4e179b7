"""A control that passes but carries a finding is "pass with a warning" (`warn`), never a bare pass: in the
evaluation, the summary counts, drift, every report format, the runner's per-control states and onboarding's
table. A warning is compliant (exit 0) and counted on its own."""

from __future__ import annotations

import csv
import io
import json
from xml.etree import ElementTree as ET

import pytest
from test_compliance_evaluate import GOOD, run

from deskguard.compliance import html, report, runs
from deskguard.compliance.evaluate import host_summary
from deskguard.recovery.escrow import Outcome

pytestmark = pytest.mark.unit

WEAK = "/dev/vda2: keyslot 0 uses weak PBKDF pbkdf2 (cryptsetup luksConvertKey --pbkdf argon2id)"


def weak_pbkdf():
    return Outcome(volumes=[{"device": "/dev/vda2", "escrowed": [1]}], enc001_warnings=[WEAK])


def recorded(results, run_id="6f1c2d4e-0b7a-4a8e-9d51-3c2f7e8a1b90"):
    summary = host_summary(results)
    host = {"state": "ok", "score": summary["score"], "compliant": summary["compliant"], "message": None,
            "device_uuid": "u", "source": "live", "evidence_at": "2026-11-28T01:00:00Z",
            "results": {r.id: r.to_dict() for r in results}}
    return runs.Run({"id": run_id, "finished_at": "2026-11-28T01:00:00Z", "hosts": 1, "source": "cli",
                     "score": summary["score"]}, {"lt-1": host})


def test_a_weak_pbkdf_is_a_pass_with_a_warning_not_a_bare_pass():
    r = run(outcome=weak_pbkdf())["ENC-001"]
    assert r.status == "warn" and r.evidence == [WEAK]


def test_no_judge_returns_a_bare_pass_beside_a_finding():
    results = run(posture={**GOOD}, outcome=Outcome(volumes=[{"device": "/dev/vda2", "escrowed": [1]}],
                                                    notes=["/dev/vdb1: already LUKS but no key escrowed for it"]))
    assert all(not (r.status == "pass" and r.evidence) for r in results.values()), \
        [(r.id, r.evidence) for r in results.values() if r.status == "pass" and r.evidence]
    assert results["ENC-002"].status == "warn"


def test_a_warning_is_compliant_scored_as_passed_and_counted_on_its_own():
    summary = host_summary(list(run(outcome=weak_pbkdf()).values()))
    assert summary["compliant"] is True and summary["score"] == 100.0
    assert summary["counts"]["warn"] == 1
    assert report.exit_code(recorded(list(run(outcome=weak_pbkdf()).values()))) == 0


def test_every_report_format_shows_the_warning():
    rec = recorded(list(run(outcome=weak_pbkdf()).values()))
    row = report.table_rows(rec)[0]
    # The table keeps long evidence short (the whole finding is in JSON, JUnit, CSV and HTML, below).
    assert "warning" in row["state"] and "ENC-001" in row["warnings"] and WEAK[:40] in row["warnings"]

    data = json.loads(report.to_json(rec, []))
    assert data["hosts"]["lt-1"]["results"]["ENC-001"]["status"] == "warn"

    case = ET.fromstring(report.to_junit(rec)).find(".//testcase[@name='ENC-001']")
    assert case.find("failure") is None and case.find("error") is None and case.find("skipped") is None
    assert "pass with a warning" in case.findtext("system-out") and WEAK in case.findtext("system-out")

    rows = {r["control"]: r for r in csv.DictReader(io.StringIO(report.to_csv(rec)))}
    assert rows["ENC-001"]["status"] == "warn" and WEAK in rows["ENC-001"]["evidence"]

    # The HTML host list: ENC-001's letter is a warning, its details carry the finding, and the list's word for it.
    page, data = html.render(rec, [], []), html.hosts_data(rec)
    host = data["hosts"][0]
    assert host[5][data["controls"].index("ENC-001")] == "w" and host[9]["ENC-001"][:2] == ["warn", [WEAK]]
    assert 'w: "pass with a warning"' in page and html.script_json(WEAK)[1:-1] in page


def test_drift_names_a_new_warning_and_a_cleared_one():
    clean = recorded(list(run().values()), "a")
    warned = recorded(list(run(outcome=weak_pbkdf()).values()), "b")
    assert [d for d in runs.drift(clean, warned) if d["control"] == "ENC-001"] == [
        {"host": "lt-1", "control": "ENC-001", "before": "pass", "after": "warn", "change": "new warning"}]
    assert [d["change"] for d in runs.drift(warned, clean) if d["control"] == "ENC-001"] == ["warning cleared"]
    assert runs.drift(None, warned) == []   # a first run has no drift, warnings included


def test_the_runner_and_onboarding_never_say_already_compliant_beside_a_finding():
    from deskguard.onboarding.onboard import summary_rows
    from deskguard.runner import EXIT_OK, EventCollector, PlaybookResult

    c = EventCollector()
    c({"event": "runner_on_ok", "event_data": {"host": "lt-1", "task": "ENC-002 | PATCH | escrow", "task_action": "x",
                                               "res": {"changed": False, "deskguard_controls": {
                                                   "ENC-001": {"state": "compliant", "findings": [WEAK]}}}}})
    c({"event": "runner_on_ok", "event_data": {"host": "lt-1", "task": "UPD-002 | AUDIT | reboot", "task_action": "x",
                                               "res": {"changed": False, "finding": "reboot pending"}}})
    assert c.hosts["lt-1"].controls == {"ENC-001": "warning", "ENC-002": "compliant", "UPD-002": "warning"}
    result = PlaybookResult("onboard.yml", 0, "successful", 1.0, c.hosts)
    assert result.exit_code == EXIT_OK
    rows = {r["control"]: r for r in summary_rows(result, "lt-1", False)}
    assert rows["ENC-001"]["state"] == "passes with a warning" and WEAK in rows["ENC-001"]["next"]
    assert all(r["state"] != "already compliant" for r in rows.values() if r["findings"])
