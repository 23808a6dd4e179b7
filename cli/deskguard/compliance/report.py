"""Reports of a compliance run: JSON (schema version 1), JUnit XML, CSV, and the rows of the terminal table.

All take a runs.Run (what the store holds), so a report can be made again later from any recorded run.
"""

from __future__ import annotations

import csv
import io
import json
from xml.sax.saxutils import XMLGenerator

from .results import STATUS_WORDS

SCHEMA_VERSION = 1
RANK = {"unreachable": 0, "stale": 0, "failed": 1}


def worst_first(run) -> list[tuple[str, dict]]:
    """Hosts that could not be checked first, then by score (lowest first), then by name."""
    return sorted(run.hosts.items(), key=lambda kv: (RANK.get(kv[1]["state"], 2), kv[1]["score"] or 0, kv[0]))


def to_json(run, drift: list[dict], history: list[dict] | None = None, fix: dict | None = None) -> str:
    out = io.StringIO()
    write_json(out, run, drift, history, fix)
    return out.getvalue()


def write_json(out, run, drift: list[dict], history: list[dict] | None = None, fix: dict | None = None) -> None:
    """The JSON report written to `out` a host at a time. `fix` (what --fix achieved,
    compliance.command.fix_outcome) only when --fix was asked for."""
    doc = {"schema": "deskguard-compliance", "version": SCHEMA_VERSION, "run": run.run, "drift": drift,
           "history": history or []}
    if fix is not None:
        doc["fix"] = fix
    # One host a line (compact, keys sorted): the same JSON, but written by the C encoder, which an indented
    # dump never uses: 3 s of a 1,000-laptop run's 6 went to indenting (tests/bench/comply_checkins.py).
    head = json.dumps(doc, indent=2, sort_keys=True)
    out.write(head[:-2] + ',\n  "hosts": {')
    for i, (name, host) in enumerate(sorted(run.hosts.items())):
        out.write(f'{"," if i else ""}\n    {json.dumps(name)}: {json.dumps(host, sort_keys=True)}')
    out.write("\n  }\n}\n" if run.hosts else "}\n}\n")


def to_junit(run) -> str:
    out = io.StringIO()
    write_junit(out, run)
    return out.getvalue()


def write_junit(out, run) -> None:
    """JUnit XML written to `out` a host at a time: one testsuite per host, one testcase per control;
    an unreachable/failed host is one errored testcase."""
    xml = XMLGenerator(out, encoding="utf-8", short_empty_elements=True)
    xml.startDocument()
    xml.startElement("testsuites", {"name": "deskguard compliance", "id": run.run["id"]})
    for host, h in sorted(run.hosts.items()):
        cases = _junit_cases(host, h)
        children = [child for _, child, _, _ in cases]
        counts = {"tests": len(cases), "failures": children.count("failure"), "errors": children.count("error"),
                  "skipped": children.count("skipped")}
        xml.startElement("testsuite", {"name": host, **{k: str(v) for k, v in counts.items()}})
        for name, child, attrs, text in cases:
            xml.startElement("testcase", {"classname": host, "name": name})
            if child:
                xml.startElement(child, attrs)
                if text:
                    xml.characters(text)
                xml.endElement(child)
            xml.endElement("testcase")
        xml.endElement("testsuite")
    xml.endElement("testsuites")
    xml.endDocument()
    out.write("\n")


def _junit_cases(host: str, h: dict) -> list[tuple[str, str | None, dict, str]]:
    """(testcase name, child element or None for a plain pass, the child's attributes, its text)."""
    cases = []
    if h["state"] != "ok":
        cases.append(("HOST reachable and collected", "error", {"message": h["state"]}, h.get("message") or ""))
    for cid, r in sorted(h["results"].items()):
        why = "; ".join(r["evidence"])
        detail = json.dumps({"observed": r["observed"], "expected": r["expected"]}, sort_keys=True)
        if r["status"] == "warn":
            # A passed testcase (JUnit has no warning state) whose output CI shows beside it.
            cases.append((cid, "system-out", {}, "pass with a warning: " + why))
        elif r["status"] in ("fail", "error"):
            cases.append((cid, "failure" if r["status"] == "fail" else "error", {"message": why[:500]}, detail))
        elif r["status"] in ("waived", "not_applicable", "not_checked"):
            cases.append((cid, "skipped", {"message": f"{STATUS_WORDS[r['status']]}: " + why[:500]}, ""))
        else:
            cases.append((cid, None, {}, ""))
    return cases


def to_csv(run) -> str:
    out = io.StringIO()
    write_csv(out, run)
    return out.getvalue()


def write_csv(out, run) -> None:
    """The CSV report written to `out` a row at a time: one row per host and control, worst hosts first."""
    w = csv.writer(out)
    w.writerow(["run", "host", "host_state", "control", "status", "severity", "observed", "expected", "evidence"])
    for host, h in worst_first(run):
        if not h["results"]:
            w.writerow([run.run["id"], host, h["state"], "", "", "", "", "", h.get("message") or ""])
        for cid, r in sorted(h["results"].items()):
            w.writerow([run.run["id"], host, h["state"], cid, r["status"], r["severity"],
                        json.dumps(r["observed"], sort_keys=True), json.dumps(r["expected"], sort_keys=True),
                        "; ".join(r["evidence"])])


def table_rows(run) -> list[dict]:
    """One row per host for the terminal: state, score, the failing controls with their first reason
    (shortened), and the controls that pass with a warning with theirs. Onboarded laptops first (worst
    first), then the hosts never onboarded (no device id)."""
    rows = []
    for host, h in sorted(worst_first(run), key=lambda kv: not kv[1].get("device_uuid")):
        bad = [(cid, r) for cid, r in sorted(h["results"].items()) if r["status"] in ("fail", "error")]
        warned = [(cid, r) for cid, r in sorted(h["results"].items()) if r["status"] in ("warn", "not_checked")]
        unchecked = sum(r["status"] == "not_checked" for _, r in warned)
        state = h["state"] if h["state"] != "ok" else ("compliant" if h["compliant"] else "NOT compliant")
        if h["state"] == "ok" and len(warned) > unchecked:
            state += f", {len(warned) - unchecked} warning" + ("s" if len(warned) - unchecked > 1 else "")
        if h["state"] == "ok" and unchecked:
            state += f", {unchecked} not checked"
        if h.get("source") == "checkin" and h["state"] == "ok":
            state += f" (check-in {h['evidence_at']})"
        if not h.get("device_uuid"):
            state += " (never onboarded)"
        rows.append({"host": host, "state": state,
                     "score": "-" if h["score"] is None else f"{h['score']:.0f}%",
                     "failing": "; ".join(f"{cid}: {short((r['evidence'] or [r['status']])[0])}" for cid, r in bad)
                     or short(h.get("message") or "-", 120),
                     "warnings": "; ".join(f"{cid}: " + ("not checked: " if r["status"] == "not_checked" else "")
                                           + short(r["evidence"][0]) for cid, r in warned) or "-"})
    return rows


def host_counts(run) -> str:
    """One line of counts over every host of the run (what a table cut to the worst hosts leaves out)."""
    hosts = run.hosts.values()
    counts = {"compliant": sum(1 for h in hosts if h["state"] == "ok" and h["compliant"]),
              "NOT compliant": sum(1 for h in hosts if h["state"] == "ok" and not h["compliant"])}
    for h in hosts:
        if h["state"] != "ok":
            counts[h["state"]] = counts.get(h["state"], 0) + 1
    said = ", ".join(f"{n:,} {what}" for what, n in counts.items() if n)
    checkins = sum(1 for h in hosts if h.get("source") == "checkin" and h["state"] == "ok")
    return f"{len(run.hosts):,} host(s): {said}" + (f"; {checkins:,} judged from check-ins" if checkins else "")


def exit_code(run) -> int:
    """0 all compliant, 3 a host unreachable (and no fresh check-in), 1 a host not compliant or not collected
    (docs/compliance.md)."""
    from ..errors import EXIT_HOST_FAILED, EXIT_OK, EXIT_UNREACHABLE

    if any(h["state"] in ("unreachable", "stale") for h in run.hosts.values()):
        return EXIT_UNREACHABLE
    if any(h["state"] != "ok" or not h["compliant"] for h in run.hosts.values()):
        return EXIT_HOST_FAILED
    return EXIT_OK


def fix_lines(fix: dict) -> list[str]:
    """What --fix achieved, for the terminal: fixed, then every control still failing (its first reason,
    shortened), then what the repair said (e.g. the sshd drop-ins it neutralised)."""
    lines = [f"fixed: {host}: {', '.join(cids)}" for host, cids in fix["fixed"].items()]
    if not fix["fixed"]:
        lines.append("fixed: nothing")
    for host, failing in fix["still_failing"].items():
        lines.append(f"still failing after the fix: {host}: " + "; ".join(
            f"{cid} ({short(why)})" for cid, why in failing.items()))
    lines += [f"repair on {host}: {short(note, 160)}" for host, said in fix["notes"].items() for note in said]
    return lines


def short(text: str, width: int = 60) -> str:
    """One line of at most `width` characters (the whole text is in --json and the HTML report)."""
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[:width - 1] + "…"


def some(names: list[str], shown: int = 10) -> str:
    """Names for one line: all of them up to `shown`, else the first ones and how many more."""
    if len(names) <= shown:
        return ", ".join(names)
    return f"{len(names)} hosts: {', '.join(names[:shown])} and {len(names) - shown} more (all in --json)"
