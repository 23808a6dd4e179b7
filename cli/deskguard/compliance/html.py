"""The self-contained HTML report: one file, no external assets (it is mailed and archived), with the fleet
score trend as an inline SVG chart, the managed laptops' own score and worst controls, the unreachable hosts,
the hosts never onboarded (kept apart), drift against a real previous run, and a host list with a per-host
drill-down that filters and pages in the page itself (no server).

At 10,000 laptops a page rendered host by host with every control's observed and expected values was ~90 MB;
the host list is therefore data (one compact JSON block: a status letter per control, details only for the
controls that are not a plain pass, values cut at VALUE_CHARS) drawn by a small script, page by page, with text
nodes only (never markup from the data)."""

from __future__ import annotations

import json
from pathlib import Path

from .catalog import CONTROLS
from .report import worst_first

WIDTH, HEIGHT, PAD = 640, 160, 24
DRIFT_ROWS = 50          # drift rows shown; the rest are counted (all of them are in the JSON report)
LIST_ROWS = 50           # rows of the unreachable and never-onboarded tables; the rest are in the host list
VALUE_CHARS = 400        # an observed or expected value longer than this is cut (the JSON report has it whole)
LETTERS = {"pass": "p", "warn": "w", "fail": "f", "error": "e", "waived": "v", "not_applicable": "n",
           "not_checked": "c"}


def trend_points(history: list[dict]) -> list[tuple[float, float, dict]]:
    """(x, y, run) for each run with a score, oldest left; y = 0 % at the bottom, 100 % at the top."""
    scored = [r for r in history if r.get("score") is not None]
    if not scored:
        return []
    if len(scored) == 1:    # one run: its point in the middle (at the axis' edge it looked like an empty chart)
        return [(WIDTH / 2, round(HEIGHT - PAD - (HEIGHT - 2 * PAD) * scored[0]["score"] / 100.0, 1), scored[0])]
    step = (WIDTH - 2 * PAD) / (len(scored) - 1)
    return [(round(PAD + i * step, 1), round(HEIGHT - PAD - (HEIGHT - 2 * PAD) * r["score"] / 100.0, 1), r)
            for i, r in enumerate(scored)]


def managed(run) -> dict[str, dict]:
    """The hosts onboarded by deskguard (they have a device id): the laptops the report is about."""
    return {name: h for name, h in run.hosts.items() if h.get("device_uuid")}


def managed_score(run) -> float | None:
    """The mean score of the managed laptops that were collected; never-onboarded hosts are not in it."""
    scores = [h["score"] for h in managed(run).values() if h["state"] == "ok" and h["score"] is not None]
    return round(sum(scores) / len(scores), 1) if scores else None


def is_first_run(run, history: list[dict]) -> bool:
    return not any(r["finished_at"] < run.run["finished_at"] for r in history if r.get("finished_at"))


def drift_summary(drift: list[dict]) -> list[tuple[str, int]]:
    counts: dict[str, int] = {}
    for d in drift:
        counts[d["change"]] = counts.get(d["change"], 0) + 1
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def worst_controls(run) -> list[dict]:
    """Controls by how many managed laptops fail them (errors count too), most first."""
    counts: dict[str, int] = {}
    for h in managed(run).values():
        for cid, r in h["results"].items():
            if r["status"] in ("fail", "error"):
                counts[cid] = counts.get(cid, 0) + 1
    return [{"id": cid, "title": CONTROLS[cid].title if cid in CONTROLS else cid, "hosts": n,
             "severity": CONTROLS[cid].severity if cid in CONTROLS else ""}
            for cid, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def _value(v) -> str:
    text = json.dumps(v, sort_keys=True, separators=(",", ":"))
    return text if len(text) <= VALUE_CHARS else text[:VALUE_CHARS] + " … (cut: the JSON report has it whole)"


def hosts_data(run) -> dict:
    """The host list's data: every host worst first (managed laptops, then the never onboarded), with one
    status letter per control of the run (LETTERS; "-" not judged) and, for each control that is not a plain
    pass or not applicable, its status, evidence and (cut) observed and expected values."""
    ours = managed(run)
    order = sorted(worst_first(run), key=lambda kv: kv[0] not in ours)
    controls = sorted({cid for _, h in order for cid in h["results"]})
    rows = []
    for name, h in order:
        results = h["results"]
        details = {cid: [r["status"], r["evidence"] or [], _value(r["observed"]), _value(r["expected"])]
                   for cid, r in results.items() if r["status"] not in ("pass", "not_applicable")}
        rows.append([name, 1 if name in ours else 0, h["state"], 1 if h["compliant"] else 0, h["score"],
                     "".join(LETTERS.get(results[c]["status"], "-") if c in results else "-" for c in controls),
                     h.get("source") or "", h.get("evidence_at") or "", h.get("message") or "", details])
    return {"controls": controls, "titles": {c: CONTROLS[c].title for c in controls if c in CONTROLS},
            "hosts": rows}


def script_json(data) -> str:
    """JSON safe inside a <script> element: no '<', '>' or '&' can end it or open a comment."""
    return (json.dumps(data, separators=(",", ":"), sort_keys=True)
            .replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def render(run, drift: list[dict], history: list[dict]) -> str:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters["pretty"] = lambda v: __import__("json").dumps(v, indent=1, sort_keys=True)
    ours = managed(run)
    never = [(n, h) for n, h in worst_first(run) if n not in ours]
    return env.get_template("report.html.j2").render(
        run=run.run, hosts=[(n, h) for n, h in worst_first(run) if n in ours], never=never,
        managed_count=len(ours), managed_score=managed_score(run), first_run=is_first_run(run, history),
        drift=drift[:DRIFT_ROWS], drift_more=max(len(drift) - DRIFT_ROWS, 0), drift_summary=drift_summary(drift),
        points=trend_points(history), width=WIDTH, height=HEIGHT, pad=PAD, worst=worst_controls(run),
        unreachable=[(n, h) for n, h in sorted(run.hosts.items()) if h["state"] != "ok"], list_rows=LIST_ROWS,
        data=script_json(hosts_data(run)), script=(Path(__file__).parent / "templates" / "report.js").read_text())
