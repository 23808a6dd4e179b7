"""`deskguard comply` refusals that need no laptop: each one line, exit 2, nothing run or recorded."""

from __future__ import annotations


import pytest
from sitetools import deskguard_sqlite as deskguard

pytestmark = pytest.mark.unit


@pytest.fixture
def site(tmp_path):
    (tmp_path / "pw").write_text("correct horse battery staple\n")
    assert deskguard("init", "--officer-passphrase-file", str(tmp_path / "pw"), site=tmp_path).returncode == 0
    return tmp_path


def test_no_laptops_is_a_usage_error(site):
    proc = deskguard("comply", site=site)
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "deskguard: no managed laptops in the inventory (add one with `deskguard onboard`)")


def test_an_unknown_since_run_is_refused_before_anything_runs(site):
    proc = deskguard("comply", "--since", "no-such-run", site=site)
    assert proc.returncode == 2 and "no such run" in proc.stderr and proc.stderr.count("\n") == 1


def test_an_unknown_format_is_refused(site):
    proc = deskguard("comply", "--format", "pdf", site=site)
    assert proc.returncode == 2 and "pdf" in proc.stderr
