"""The HTML compliance report: self-contained, escaped, with the trend chart; rendered by a real headless
Chromium (Debian's, installed by .ci/setup) into a screenshot."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from deskguard.compliance import html, runs
from deskguard.store.models import utcnow

pytestmark = pytest.mark.unit

EVIL = "<script>alert('x')</script>"


def result(cid, status, evidence=()):
    return {"id": cid, "status": status, "severity": "high", "observed": {"value": EVIL if status == "fail" else 1},
            "expected": {"value": 1}, "evidence": list(evidence)}


@pytest.fixture
def recorded(store):
    for i, failing in enumerate((2, 1, 0)):
        hosts = {f"lt-{n}": runs.HostRecord("ok", [result("FW-001", "fail" if n < failing else "pass", [EVIL]),
                                                   result("LCK-001", "pass")],
                                            {"score": 50.0 if n < failing else 100.0, "compliant": n >= failing},
                                            device_uuid=f"u{n}")
                 for n in range(3)}
        hosts["lt-9"] = runs.HostRecord("unreachable", message="ssh: timed out")
        runs.record(store, f"r{i}", utcnow(), "test", hosts)
    run = runs.load(store, "r0")
    return html.render(run, runs.drift(None, run), runs.history(store))


def test_the_report_is_self_contained_and_escaped(recorded):
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", recorded)
    assert "<script" not in recorded and "<link" not in recorded
    assert "&lt;script&gt;alert(" in recorded
    polyline = re.search(r'<polyline[^>]*points="([^"]+)"', recorded).group(1)
    assert len(polyline.split()) == 3                       # one point per scored run
    assert "FW-001" in recorded and "lt-9" in recorded and "unreachable" in recorded


def test_headless_chromium_renders_it(recorded, tmp_path):
    png, dom = screenshot(recorded, tmp_path, "report.png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000   # not a blank page
    assert 'id="trend"' in dom and "<polyline" in dom and "Worst controls" in dom


# A first run of a site like the demo's: two onboarded laptops and many hosts that were never onboarded (no
# device id), each failing several controls. Issue 19: the page must not be buried under "new failure" rows
# (there is no previous run), must name the never-onboarded hosts apart from the managed laptops' score, and a
# one-run chart must show its point.
NEVER = 40


@pytest.fixture
def first_run(store):
    hosts = {"lap-good": runs.HostRecord("ok", [result("FW-001", "pass"), result("LCK-001", "pass")],
                                         {"score": 100.0, "compliant": True}, device_uuid="u-good"),
             "lap-bad": runs.HostRecord("ok", [result("FW-001", "fail", ["ufw is inactive"]), result("LCK-001", "pass")],
                                        {"score": 50.0, "compliant": False}, device_uuid="u-bad")}
    for n in range(NEVER):
        hosts[f"fleet-{n:03d}"] = runs.HostRecord("ok", [result("FW-001", "fail", ["ufw is inactive"]),
                                                         result("LCK-001", "fail", ["idle delay 0"])],
                                                  {"score": 0.0, "compliant": False})
    runs.record(store, "only", utcnow(), "test", hosts)
    run = runs.load(store, "only")
    return html.render(run, runs.drift(runs.previous(store, run), run), runs.history(store))


def screenshot(page_html: str, tmp_path, name: str) -> tuple[bytes, str]:
    """(PNG bytes, the DOM Chromium built) of the page rendered by headless Chromium. The PNG is also kept as
    tmp_path/NAME (and copied to $DESKGUARD_KEEP_SCREENSHOT when set) to be looked at."""
    browser = shutil.which("chromium")
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/setup installs it")
        pytest.skip("chromium not installed (bash .ci/setup installs it)")
    page = tmp_path / "report.html"
    page.write_text(page_html)
    shot = tmp_path / name
    proc = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--window-size=1000,1300", f"--screenshot={shot}", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-2000:]
    if os.environ.get("DESKGUARD_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["DESKGUARD_KEEP_SCREENSHOT"])
    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    return shot.read_bytes(), dom


def section(dom: str, heading_id: str) -> str:
    """The DOM from the element with this id up to the next h2."""
    start = dom.index(f'id="{heading_id}"')
    end = dom.find("<h2", start + 1)
    return dom[start:end if end > 0 else None]


def test_a_first_run_is_not_buried_under_drift_and_names_the_never_onboarded(first_run, tmp_path):
    png, dom = screenshot(first_run, tmp_path, "first-run.png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    # No previous run: no drift table, one sentence saying why.
    assert "new failure" not in dom and 'id="drift"' in dom
    assert "first run" in section(dom, "drift").lower() and "<tr" not in section(dom, "drift")
    # The managed laptops' score is theirs alone; the never-onboarded hosts are named apart, not in it.
    assert re.search(r'id="managed-score"[^>]*>75%<', dom), dom[:3000]
    never = section(dom, "never-onboarded")
    assert f"{NEVER} host(s)" in never and "fleet-000" in never and "fleet-039" in never
    assert "lap-bad" not in never and "lap-good" not in never
    # The worst controls count the managed laptops only (1 failing FW-001, none LCK-001).
    worst = section(dom, "worst")
    assert re.search(r"FW-001.*?<td[^>]*>1</td>", worst, re.S) and "LCK-001" not in worst
    # One run: one visible point with its value, not an empty axis.
    chart = section(dom, "trend-heading")
    assert chart.count("<circle") == 1 and re.search(r"<text[^>]*>\d+%</text>", chart.split("0%</text>", 1)[1])


def test_drift_against_a_real_previous_run_is_shown_and_summarised(store):
    for i, status in enumerate(("pass", "fail")):
        runs.record(store, f"r{i}", utcnow(), "test", {
            f"lap-{n}": runs.HostRecord("ok", [result("FW-001", status)], {"score": 50.0, "compliant": False},
                                        device_uuid=f"u{n}") for n in range(80)})
    run = runs.load(store, "r1")
    page = html.render(run, runs.drift(runs.previous(store, run), run), runs.history(store))
    drift = section(page, "drift")
    assert "80 new failure" in drift
    assert drift.count("<tr>") <= html.DRIFT_ROWS + 1 and "30 more" in drift
