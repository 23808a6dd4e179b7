"""Recordings from real Windows hosts (tests/windows/recorded/*.json, made with record_preflight.py) replayed
through the kit's preflight; and the recorder itself, run against the loopback responder so that it works on
the day someone has a Windows VM. Until a real recording exists, the replay uses one made from the responder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from deskguard.windows.preflight import WinrmTarget, check_windows
from preflight_fixtures import PRO, host
from record_preflight import main as record_main
from responder import Responder

pytestmark = pytest.mark.windows
RECORDED = sorted((Path(__file__).parent / "recorded").glob("*.json"))


def _record_from_the_responder(tmp_path) -> Path:
    secret = tmp_path / "pw"
    secret.write_text("loopback-only\n")
    out = tmp_path / "responder-recording.json"
    with Responder(script_handler=host(PRO)) as r:
        assert record_main(["127.0.0.1", "--port", str(r.port), "--user", "deskguard-test", "--password-file",
                            str(secret), "--insecure-lab-winrm", "--out", str(out)]) == 0
    return out


def test_the_recorder_writes_a_scrubbed_replayable_file(tmp_path):
    out = _record_from_the_responder(tmp_path)
    data = json.loads(out.read_text())
    assert data["rc"] == 0 and data["script_matches_kit"] and len(data["exchanges"]) == 5
    assert json.loads(data["stdout"])["computer_name"] == "RECORDED-PC"
    text = out.read_text()
    assert "LAP-0042" not in text and "loopback-only" not in text and "deskguard-test" not in text


def test_recordings_replay_through_the_preflight(tmp_path):
    """Every recording from a real Windows host replays; until one exists, a recording made from the responder
    keeps the replay path exercised (it proves the plumbing, not Windows: docs/windows.md)."""
    for path in RECORDED or [_record_from_the_responder(tmp_path)]:
        data = json.loads(path.read_text())
        assert data["script_matches_kit"], f"{path.name} was recorded with another preflight script: record it again"
        with Responder(script_handler=lambda argv, script, stdin: (data["stdout"].encode(), data["stderr"].encode(),
                                                                    data["rc"])) as r:
            facts = check_windows(WinrmTarget("127.0.0.1", "deskguard-test", port=r.port, lab_insecure=True),
                                  "loopback-only")
        assert facts.edition and facts.build.isdigit(), path.name
