"""module_utils/deskguard_files: converge whole files in one pass, validated and atomic."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins" / "module_utils"))
import deskguard_files as df  # noqa: E402

pytestmark = pytest.mark.unit


def spec(path, content, **kw):
    return {"path": str(path), "content": content, "mode": "0644", "owner": "root", "group": "root", **kw}


def test_create_then_converged_then_attribute_drift(tmp_path):
    target = tmp_path / "etc" / "a.conf"
    marker = tmp_path / "ran"
    files = [spec(target, "x=1\n")]
    cmds = [["touch", str(marker)]]
    first = df.apply(files, cmds)
    assert first["changed"] and first["files"] == [{"path": str(target), "reason": "create"}]
    assert target.read_text() == "x=1\n" and marker.exists()
    marker.unlink()
    again = df.apply(files, cmds)
    assert not again["changed"] and not marker.exists()  # follow-ups only after a change
    os.chmod(target, 0o600)
    drift = df.apply(files, cmds)
    assert drift["files"][0]["reason"] == "attributes" and oct(target.stat().st_mode & 0o777) == "0o644"


def test_check_mode_reports_and_changes_nothing(tmp_path):
    target = tmp_path / "b.conf"
    target.write_text("old\n")
    result = df.apply([spec(target, "new\n")], [["false"]], check_mode=True)
    assert result["changed"] and result["files"][0]["reason"] == "content"
    assert target.read_text() == "old\n"


def test_failed_validation_keeps_the_old_file(tmp_path):
    target = tmp_path / "c.conf"
    target.write_text("good\n")
    with pytest.raises(df.FilesError, match="validation of .*c.conf failed"):
        df.apply([spec(target, "bad\n", validate=["grep", "-q", "^good", "%s"])], [])
    assert target.read_text() == "good\n"
    assert [p.name for p in tmp_path.iterdir()] == ["c.conf"]  # no temporary file left behind


def test_absent_and_failing_follow_up(tmp_path):
    gone = tmp_path / "gone.conf"
    gone.write_text("x")
    with pytest.raises(df.FilesError, match="false failed"):
        df.apply([{"path": str(gone), "state": "absent"}], [["false"]])
    assert not gone.exists()
