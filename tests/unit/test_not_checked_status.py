"""A control the kit could not read on this laptop is "not checked" (`not_checked`), never a pass: LCK-001 when
the operator's desktop is not GNOME or GNOME's settings reader is missing (issue 26). Left out of the score like
not applicable, counted on its own, and named in every report format and in drift."""

from __future__ import annotations

import csv
import io
import json
from xml.etree import ElementTree as ET

import pytest
from test_compliance_evaluate import GOOD, run
from test_warn_status import recorded

from deskguard.compliance import html, report, runs
from deskguard.compliance.results import STATUS_WORDS

pytestmark = pytest.mark.unit

WHY = "KDE Plasma found: the kit sets GNOME's idle lock only"
KDE = {"desktop": "KDE Plasma", "desktops_found": ["KDE Plasma"], "checked": False, "values": {}, "writable": {},
       "why": WHY}


def on_kde():
    return list(run(posture={**GOOD, "screen_lock": {**GOOD["screen_lock"], "session": KDE}}).values())


def test_every_report_format_says_not_checked():
    rec = recorded(on_kde())
    assert report.exit_code(rec) == 0
    row = report.table_rows(rec)[0]
    assert row["state"] == "compliant, 1 not checked" and "warning" not in row["state"]
    assert row["warnings"].startswith("LCK-001: not checked: the idle lock")

    data = json.loads(report.to_json(rec, []))
    lck = data["hosts"]["lt-1"]["results"]["LCK-001"]
    assert lck["status"] == "not_checked" and WHY in lck["evidence"][0]

    case = ET.fromstring(report.to_junit(rec)).find(".//testcase[@name='LCK-001']")
    assert case.find("failure") is None and case.find("error") is None
    assert case.find("skipped").get("message").startswith("not checked: ")

    rows = {r["control"]: r for r in csv.DictReader(io.StringIO(report.to_csv(rec)))}
    assert rows["LCK-001"]["status"] == "not_checked" and WHY in rows["LCK-001"]["evidence"]

    # The HTML host list: LCK-001's letter says not checked, its details carry why, and the list's word for it.
    page, data = html.render(rec, [], []), html.hosts_data(rec)
    host = data["hosts"][0]
    assert host[5][data["controls"].index("LCK-001")] == "c" and host[9]["LCK-001"][0] == "not_checked"
    assert 'c: "not checked"' in page and "KDE Plasma found" in page
    assert STATUS_WORDS["not_checked"] == "not checked"


def test_drift_says_a_control_is_no_longer_checked():
    before, after = recorded(list(run().values()), "a"), recorded(on_kde(), "b")
    assert [d for d in runs.drift(before, after) if d["control"] == "LCK-001"] == [
        {"host": "lt-1", "control": "LCK-001", "before": "pass", "after": "not_checked",
         "change": "no longer checked"}]
    failing = recorded(list(run(posture={**GOOD, "screen_lock": {**GOOD["screen_lock"], "idle_delay": 3600}}).values()), "c")
    assert [d["change"] for d in runs.drift(failing, after) if d["control"] == "LCK-001"] == [
        "no longer failing (not checked)"]   # never "fixed": nothing proves the session gets the fix

