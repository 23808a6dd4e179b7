"""Reports of a compliance run: JSON (schema version 1), JUnit XML, CSV, and the rows of the terminal table.

All take a runs.Run (what the store holds), so a report can be made again later from any recorded run.
"""

from __future__ import annotations

import csv
import io
import json
from xml.etree import ElementTree as ET

SCHEMA_VERSION = 1
RANK = {"unreachable": 0, "stale": 0, "failed": 1}


def worst_first(run) -> list[tuple[str, dict]]:
    """Hosts that could not be checked first, then by score (lowest first), then by name."""
    return sorted(run.hosts.items(), key=lambda kv: (RANK.get(kv[1]["state"], 2), kv[1]["score"] or 0, kv[0]))


def to_json(run, drift: list[dict], history: list[dict] | None = None) -> str:
    return json.dumps({"schema": "deskguard-compliance", "version": SCHEMA_VERSION, "run": run.run,
                       "hosts": run.hosts, "drift": drift, "history": history or []}, indent=2, sort_keys=True)


def to_junit(run) -> str:
    """One testsuite per host, one testcase per control; unreachable/failed hosts are one errored testcase."""
    suites = ET.Element("testsuites", name="deskguard compliance", id=run.run["id"])
    for host, h in sorted(run.hosts.items()):
        suite = ET.SubElement(suites, "testsuite", name=host)
        counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        if h["state"] != "ok":
            case = ET.SubElement(suite, "testcase", classname=host, name="HOST reachable and collected")
            ET.SubElement(case, "error", message=h["state"]).text = h.get("message") or ""
            counts["tests"] += 1
            counts["errors"] += 1
        for cid, r in sorted(h["results"].items()):
            case = ET.SubElement(suite, "testcase", classname=host, name=cid)
            counts["tests"] += 1
            detail = json.dumps({"observed": r["observed"], "expected": r["expected"]}, sort_keys=True)
            if r["status"] == "warn":
                # A passed testcase (JUnit has no warning state) whose output CI shows beside it.
                ET.SubElement(case, "system-out").text = "pass with a warning: " + "; ".join(r["evidence"])
            elif r["status"] == "fail":
                counts["failures"] += 1
                ET.SubElement(case, "failure", message="; ".join(r["evidence"])[:500]).text = detail
            elif r["status"] == "error":
                counts["errors"] += 1
                ET.SubElement(case, "error", message="; ".join(r["evidence"])[:500]).text = detail
            elif r["status"] in ("waived", "not_applicable"):
                counts["skipped"] += 1
                ET.SubElement(case, "skipped", message=f"{r['status']}: " + "; ".join(r["evidence"])[:500])
        for k, v in counts.items():
            suite.set(k, str(v))
    return ET.tostring(suites, encoding="unicode", xml_declaration=True)


def to_csv(run) -> str:
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["run", "host", "host_state", "control", "status", "severity", "observed", "expected", "evidence"])
    for host, h in worst_first(run):
        if not h["results"]:
            w.writerow([run.run["id"], host, h["state"], "", "", "", "", "", h.get("message") or ""])
        for cid, r in sorted(h["results"].items()):
            w.writerow([run.run["id"], host, h["state"], cid, r["status"], r["severity"],
                        json.dumps(r["observed"], sort_keys=True), json.dumps(r["expected"], sort_keys=True),
                        "; ".join(r["evidence"])])
    return out.getvalue()


def table_rows(run) -> list[dict]:
    """One row per host for the terminal: state, score, the failing controls with their first reason, and the
    controls that pass with a warning with theirs."""
    rows = []
    for host, h in worst_first(run):
        bad = [(cid, r) for cid, r in sorted(h["results"].items()) if r["status"] in ("fail", "error")]
        warned = [(cid, r) for cid, r in sorted(h["results"].items()) if r["status"] == "warn"]
        state = h["state"] if h["state"] != "ok" else ("compliant" if h["compliant"] else "NOT compliant")
        if h["state"] == "ok" and warned:
            state += f", {len(warned)} warning" + ("s" if len(warned) > 1 else "")
        if h.get("source") == "checkin" and h["state"] == "ok":
            state += f" (check-in {h['evidence_at']})"
        rows.append({"host": host, "state": state,
                     "score": "-" if h["score"] is None else f"{h['score']:.0f}%",
                     "failing": "; ".join(f"{cid}: {(r['evidence'] or [r['status']])[0]}" for cid, r in bad)
                     or (h.get("message") or "-"),
                     "warnings": "; ".join(f"{cid}: {r['evidence'][0]}" for cid, r in warned) or "-"})
    return rows


def exit_code(run) -> int:
    """0 all compliant, 3 a host unreachable (and no fresh check-in), 1 a host not compliant or not collected
    (docs/compliance.md)."""
    from ..errors import EXIT_HOST_FAILED, EXIT_OK, EXIT_UNREACHABLE

    if any(h["state"] in ("unreachable", "stale") for h in run.hosts.values()):
        return EXIT_UNREACHABLE
    if any(h["state"] != "ok" or not h["compliant"] for h in run.hosts.values()):
        return EXIT_HOST_FAILED
    return EXIT_OK
