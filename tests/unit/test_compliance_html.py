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
                                            {"score": 50.0 if n < failing else 100.0, "compliant": n >= failing})
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
    browser = shutil.which("chromium")
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/setup installs it")
        pytest.skip("chromium not installed (bash .ci/setup installs it)")
    page = tmp_path / "report.html"
    page.write_text(recorded)
    shot = tmp_path / "report.png"
    proc = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--window-size=900,1100", f"--screenshot={shot}", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-2000:]
    if os.environ.get("DESKGUARD_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["DESKGUARD_KEEP_SCREENSHOT"])   # to look at it
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000   # not a blank page
    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    assert 'id="trend"' in dom and "<polyline" in dom and "Worst controls" in dom
