"""The nightly run's posture from the agent's installed collector (`deskguard-agent posture`), used only while
its files are this kit's; otherwise the collector is shipped in the same task (deskguard.compliance.collector).
The laptop's half runs here in a fresh interpreter, from a folder laid out as the agent installs it, with the
bytecode the install step writes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deskguard.compliance import collector
from deskguard.compliance.evaluate import agent
from deskguard.site import module_utils
from deskguard.site.module_code import closure, digests

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
UTILS = ROOT / "plugins" / "module_utils"
LAUNCHER = ROOT / "roles" / "endpoint_agent" / "files" / "deskguard-agent"
PARAMS = {"accounts": {"admin_users": ["itadmin"]}}


@pytest.fixture
def code_dir(tmp_path):
    """The agent's code folder: the collector's files and the launcher, pointed at this folder."""
    folder = tmp_path / "deskguard-agent"
    folder.mkdir()
    for name in closure("deskguard_agent_posture"):
        shutil.copy(UTILS / f"{name}.py", folder)
    launcher = LAUNCHER.read_text()
    assert launcher.count("/usr/lib/deskguard-agent") == 2
    (folder / "deskguard-agent").write_text(launcher.replace("/usr/lib/deskguard-agent", str(folder)))
    return folder


def ask(folder: Path, request: bytes) -> subprocess.CompletedProcess:
    # The launcher's own interpreter line is /usr/bin/python3; the test runs it with this machine's.
    return subprocess.run([sys.executable, str(folder / "deskguard-agent"), "posture"], input=request,
                          capture_output=True, timeout=120)


def answer(proc: subprocess.CompletedProcess) -> dict:
    return collector._answer({"rc": proc.returncode, "stdout": proc.stdout.decode(), "stderr": proc.stderr.decode()})


def test_the_kits_own_files_answer_with_the_posture(code_dir):
    proc = ask(code_dir, collector.request(PARAMS))
    result, why, differs = answer(proc)
    assert proc.returncode == 0 and why == "" and not differs, proc.stderr.decode()[-2000:]
    # The same sections as the shipped module's (deskguard_posture.COLLECTORS), with the policy's parameters.
    sys.path.insert(0, str(UTILS))
    try:
        import deskguard_posture
    finally:
        sys.path.remove(str(UTILS))
    assert set(result["posture"]) | set(result["errors"]) == set(deskguard_posture.COLLECTORS)
    assert set(result["timings"]) == set(deskguard_posture.COLLECTORS)


def test_an_altered_or_missing_file_is_named_and_nothing_is_collected(code_dir):
    with open(code_dir / "deskguard_network.py", "a") as fh:
        fh.write("# altered\n")
    (code_dir / "deskguard_av.py").unlink()
    proc = ask(code_dir, collector.request(PARAMS))
    result, why, differs = answer(proc)
    assert proc.returncode == collector.STALE and result is None and differs
    assert why == ("the agent's installed code is not this kit's "
                   "(deskguard_av.py is missing (No such file or directory), deskguard_network.py differs)"), why


def test_a_file_of_the_same_size_and_time_is_still_caught(code_dir):
    """The check reads the files themselves: a change that keeps size and mtime (what timestamp-checked
    bytecode would miss) is caught too."""
    path = code_dir / "deskguard_reboot.py"
    stat = path.stat()
    data = path.read_bytes()
    path.write_bytes(data[:-2] + bytes([data[-2] ^ 1]) + data[-1:])   # one bit of its last line
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.read_bytes() != data
    _result, why, differs = answer(ask(code_dir, collector.request(PARAMS)))
    assert differs and "deskguard_reboot.py differs" in why


def test_an_unusable_request_is_one_line_exit_2(code_dir):
    for bad in (b"", b"[]", b'{"modules": {"../etc/passwd": "x"}}', b'{"modules": {}}', b"\xff"):
        proc = ask(code_dir, bad)
        result, why, differs = answer(proc)
        assert proc.returncode == 2 and result is None and not differs, (bad, proc.stdout, proc.stderr)
        assert why.startswith("the agent's installed collector failed (exit 2): deskguard-agent posture: the request"), why
        assert proc.stderr == b"", proc.stderr


def test_the_install_steps_bytecode_is_written_once_and_used_only_while_it_matches(code_dir):
    def write():
        written, why_not = module_utils("deskguard_bytecode").write(str(code_dir), python=sys.executable)
        assert why_not is None
        return written

    assert sorted(write()) == sorted(f"{n}.py" for n in closure("deskguard_agent_posture"))
    assert write() == []    # nothing out of date: nothing written, no change reported
    cached = next((code_dir / "__pycache__").glob("deskguard_posture.*.pyc"))
    assert cached.read_bytes()[4:8] == (3).to_bytes(4, "little")   # checked-hash (PEP 552)

    def imports_from_bytecode(name):
        proc = subprocess.run([sys.executable, "-v", "-c", f"import sys; sys.dont_write_bytecode = True; "
                               f"sys.path.insert(0, {str(code_dir)!r}); import {name}"], capture_output=True, text=True)
        return f"code object from '{code_dir}/__pycache__/{name}." in proc.stderr

    assert imports_from_bytecode("deskguard_posture")
    with open(code_dir / "deskguard_posture.py", "a") as fh:
        fh.write("# changed\n")
    assert not imports_from_bytecode("deskguard_posture")   # the source changed: compiled from it instead
    assert write() == ["deskguard_posture.py"]
    assert imports_from_bytecode("deskguard_posture")
    assert module_utils("deskguard_bytecode").write(str(code_dir / "nowhere"), python=sys.executable)[1].startswith(
        "FileNotFoundError")


@pytest.mark.parametrize("res, expected", [
    ({"rc": 127, "stdout": "", "stderr": "sh: 1: /usr/lib/deskguard-agent/deskguard-agent: not found"},
     "the agent's launcher could not be run: sh: 1: /usr/lib/deskguard-agent/deskguard-agent: not found"),
    # An agent installed before the posture subcommand existed prints its usage.
    ({"rc": 2, "stdout": "", "stderr": "usage: deskguard-agent run | ack --order FILE|-\n  run  one check-in"},
     "the agent's installed collector failed (exit 2):   run  one check-in"),
    ({"rc": 1, "stdout": "", "stderr": "Traceback …\nImportError: cannot import name 'collect'"},
     "the agent's installed collector failed (exit 1): ImportError: cannot import name 'collect'"),
    ({"rc": 0, "stdout": "not json", "stderr": ""}, "the agent's installed collector failed (exit 0): not json"),
])
def test_every_other_answer_says_why_it_was_not_used(res, expected):
    assert collector._answer(res) == (None, expected, False)


def test_a_banner_before_the_answer_is_skipped():
    res = {"rc": 0, "stdout": 'Welcome\n{"posture": {"agent": {}}, "errors": {}, "timings": {"agent": 0.1}}', "stderr": ""}
    assert collector._answer(res) == ({"posture": {"agent": {}}, "errors": {}, "timings": {"agent": 0.1}}, "", False)


def test_one_round_trip_when_installed_answers_two_when_it_is_shipped_after_it():
    posture = {"posture": {"agent": {"installed": True}}, "errors": {}, "timings": {}}
    asked, shipped = [], []

    def installed_ok(command, stdin):
        asked.append((command, json.loads(stdin)))
        return {"rc": 0, "stdout": json.dumps(posture), "stderr": ""}

    got = collector.collect(PARAMS, installed_ok, lambda: shipped.append(1) or {"posture": {}})
    assert (got.result, got.module_calls, got.collector, got.why_shipped, shipped) == (posture, 1, "installed", None, [])
    assert asked == [(collector.COMMAND, {"modules": digests("deskguard_agent_posture"), "params": PARAMS})]

    got = collector.collect(PARAMS, lambda c, s: {"rc": collector.STALE, "stdout": '{"stale": "deskguard_av.py differs"}'},
                            lambda: posture)
    assert (got.result, got.module_calls, got.collector, got.agent_code_differs) == (posture, 2, "shipped", True)
    assert got.why_shipped == "the agent's installed code is not this kit's (deskguard_av.py differs)"

    got = collector.collect(PARAMS, None, lambda: posture)   # no agent in the policy: not asked
    assert (got.module_calls, got.collector, got.why_shipped) == (1, "shipped", None)


def test_the_digests_cover_the_collector_and_the_check_itself():
    names = set(digests("deskguard_agent_posture"))
    assert {"deskguard_agent_posture", "deskguard_posture", "deskguard_luks_inspect", "deskguard_network"} <= names
    assert all(re.fullmatch(r"[0-9a-f]{64}", d) for d in digests("deskguard_agent_posture").values())


def test_agt_001_fails_when_the_agent_is_not_the_kits():
    facts = {"installed": True, "timer_enabled": True, "timer_active": True, "device_key_present": True,
             "last_checkin_age_seconds": 60}
    assert agent(facts, {}).status == "pass"
    why = "the agent's installed code is not this kit's (deskguard_network.py differs)"
    result = agent({**facts, "code_differs": why}, {})
    assert result.status == "fail" and result.observed["code_differs"] == why
    assert result.evidence == [f"{why}: `deskguard comply --fix` or onboarding installs the kit's agent again"]
