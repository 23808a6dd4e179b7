"""The self-contained HTML report: one file, no external assets (it is mailed and archived), with the fleet
score trend as an inline SVG chart, the managed laptops' own score and worst controls, the unreachable hosts,
the hosts never onboarded (kept apart), drift against a real previous run, and a per-host drill-down."""

from __future__ import annotations

from pathlib import Path

from .catalog import CONTROLS
from .report import worst_first
from .results import STATUS_WORDS

WIDTH, HEIGHT, PAD = 640, 160, 24
DRIFT_ROWS = 50          # drift rows shown; the rest are counted (all of them are in the JSON report)


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


def render(run, drift: list[dict], history: list[dict]) -> str:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters["pretty"] = lambda v: __import__("json").dumps(v, indent=1, sort_keys=True)
    ours = managed(run)
    never = [(n, h) for n, h in worst_first(run) if n not in ours]
    return env.get_template("report.html.j2").render(
        words=STATUS_WORDS, run=run.run, hosts=[(n, h) for n, h in worst_first(run) if n in ours], never=never,
        managed_count=len(ours), managed_score=managed_score(run), first_run=is_first_run(run, history),
        drift=drift[:DRIFT_ROWS], drift_more=max(len(drift) - DRIFT_ROWS, 0), drift_summary=drift_summary(drift),
        points=trend_points(history), width=WIDTH, height=HEIGHT, pad=PAD, worst=worst_controls(run),
        unreachable=[(n, h) for n, h in sorted(run.hosts.items()) if h["state"] != "ok"])
