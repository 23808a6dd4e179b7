"""The HTML compliance report: self-contained, escaped, with the trend chart; rendered by a real headless
Chromium (Debian's, installed by .ci/setup) into a screenshot."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from deskguard.compliance import html, runs
from deskguard.store.models import utcnow
from fleet_runs import fleet_run

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
        hosts["lt-9"] = runs.HostRecord("unreachable", message="ssh: timed out " + EVIL)
        runs.record(store, f"r{i}", utcnow(), "test", hosts)
    run = runs.load(store, "r0")
    return html.render(run, runs.drift(None, run), runs.history(store))


def test_the_report_is_self_contained_and_escaped(recorded):
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", recorded)
    # Its only scripts are its own: the host list's data (escaped JSON) and the code drawing it; the data can
    # neither end its element nor carry markup.
    assert re.findall(r"<script[^>]*>", recorded) == ['<script type="application/json" id="hosts-data">', "<script>"]
    assert recorded.count("</script>") == 2 and "<link" not in recorded and "src=" not in recorded
    assert "<script>alert(" not in recorded and "\\u003cscript\\u003ealert(" in recorded
    assert "&lt;script&gt;alert(" in recorded                # the unreachable table, server-rendered
    polyline = re.search(r'<polyline[^>]*points="([^"]+)"', recorded).group(1)
    assert len(polyline.split()) == 3                       # one point per scored run
    assert "FW-001" in recorded and "lt-9" in recorded and "unreachable" in recorded


def test_headless_chromium_renders_it(recorded, tmp_path):
    png, dom = screenshot(recorded, tmp_path, "report.png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000   # not a blank page
    assert 'id="trend"' in dom and "<polyline" in dom and "Worst controls" in dom
    # The host list was drawn by its script, the message as text (escaped in the DOM), never as markup.
    listed = section(dom, "hosts")
    assert all(f"<td>lt-{n}</td>" in listed for n in (0, 1, 2, 9)) and "FW-001 fail" in listed
    assert "ssh: timed out &lt;script&gt;alert(" in listed and "<script>alert(" not in listed


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


def chromium() -> str:
    """Debian's chromium (a failure under CI, where .ci/setup installs it; a skip elsewhere)."""
    browser = shutil.which("chromium")
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/setup installs it")
        pytest.skip("chromium not installed (bash .ci/setup installs it)")
    return browser


def dump_dom(page: Path, fragment: str = "") -> str:
    """The DOM headless Chromium built for PAGE (opened at #FRAGMENT when given)."""
    return subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                           page.as_uri() + (f"#{fragment}" if fragment else "")],
                          capture_output=True, text=True, timeout=120).stdout


def screenshot(page_html: str, tmp_path, name: str) -> tuple[bytes, str]:
    """(PNG bytes, the DOM Chromium built) of the page rendered by headless Chromium. The PNG is also kept as
    tmp_path/NAME (and copied to $DESKGUARD_KEEP_SCREENSHOT when set) to be looked at."""
    browser = chromium()
    page = tmp_path / "report.html"
    page.write_text(page_html)
    shot = tmp_path / name
    proc = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--window-size=1000,1300", f"--screenshot={shot}", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-2000:]
    if os.environ.get("DESKGUARD_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["DESKGUARD_KEEP_SCREENSHOT"])
    return shot.read_bytes(), dump_dom(page)


def section(dom: str, heading_id: str) -> str:
    """The DOM from the element with this id up to the next h2 (or the page's scripts)."""
    start = dom.index(f'id="{heading_id}"')
    ends = [i for i in (dom.find("<h2", start + 1), dom.find("<script", start + 1)) if i > 0]
    return dom[start:min(ends) if ends else None]


def dom_at(page_html: str, tmp_path, fragment: str) -> str:
    """The DOM headless Chromium built for the page opened at #FRAGMENT (the host list's filters and page)."""
    page = tmp_path / "list.html"
    page.write_text(page_html)
    return dump_dom(page, fragment)


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


# -- at fleet size (issue 24): the host list is data, filtered and paged in the page ------------------------

def test_ten_thousand_laptops_make_one_page_under_5_mb():
    page = html.render(fleet_run(10_000), [], [])
    assert len(page.encode()) < 5_000_000, len(page.encode())
    assert "lap-09999" in page and "cut: the JSON report has it whole" in page   # every host; long values cut


def test_the_host_list_filters_and_pages_in_the_page(tmp_path):
    page = html.render(fleet_run(120), [], [])

    def shown(fragment):
        listed = section(dom_at(page, tmp_path, fragment), "hosts")
        pager = re.search(r'id="host-pager"><span>([^<]*)', listed).group(1)
        return re.findall(r'<tr class="host"><td>([^<]*)</td>', listed), pager

    rows, pager = shown("")
    assert len(rows) == 50 and rows[0] == "lap-00000" and "of 120 shown by the filters (120 in the run); page 1 of 3" in pager
    rows, pager = shown("page=3")
    assert len(rows) == 20 and "hosts 101–120 of 120" in pager
    rows, _ = shown("state=not-compliant")
    assert rows == [f"lap-{n:05d}" for n in range(0, 120, 10)]
    rows, _ = shown("control=FW-001&q=lap-0011")
    assert rows == ["lap-00110"]
    rows, pager = shown("state=unreachable")
    assert rows == [] and "hosts 0–0 of 0" in pager
