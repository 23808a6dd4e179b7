"""The self-contained HTML report: one file, no external assets (it is mailed and archived), with the fleet
score trend as an inline SVG chart, the worst controls, the unreachable hosts and a per-host drill-down."""

from __future__ import annotations

from pathlib import Path

from .catalog import CONTROLS
from .report import worst_first

WIDTH, HEIGHT, PAD = 640, 160, 24


def trend_points(history: list[dict]) -> list[tuple[float, float, dict]]:
    """(x, y, run) for each run with a score, oldest left; y = 0 % at the bottom, 100 % at the top."""
    scored = [r for r in history if r.get("score") is not None]
    if not scored:
        return []
    step = (WIDTH - 2 * PAD) / max(len(scored) - 1, 1)
    return [(round(PAD + i * step, 1), round(HEIGHT - PAD - (HEIGHT - 2 * PAD) * r["score"] / 100.0, 1), r)
            for i, r in enumerate(scored)]


def worst_controls(run) -> list[dict]:
    """Controls by how many hosts fail them (errors count too), most first."""
    counts: dict[str, int] = {}
    for h in run.hosts.values():
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
    return env.get_template("report.html.j2").render(
        run=run.run, hosts=worst_first(run), drift=drift, points=trend_points(history), width=WIDTH,
        height=HEIGHT, pad=PAD, worst=worst_controls(run),
        unreachable=[(n, h) for n, h in sorted(run.hosts.items()) if h["state"] != "ok"])
