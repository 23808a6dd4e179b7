"""`comply --fix` says only what is true: after the repair the posture is collected again, a control is called
fixed only if it now passes, every control still failing is listed, and the exit is 1 while any does
(issue 19, item 7). The laptop side is replaced by fakes of the two steps (the run, the repair play)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from deskguard.commands.comply import comply
from deskguard.compliance import command
from deskguard.compliance.runs import Run
from deskguard.runner import HostOutcome

pytestmark = pytest.mark.unit

LONG = "sshd permitrootlogin is 'yes', not 'no' " + "x" * 300


def host(device_uuid, **statuses):
    results = {cid: {"status": st, "severity": "high", "observed": {}, "expected": {},
                     "evidence": [LONG if cid == "ACC-005" else f"{cid} is wrong"] if st == "fail" else []}
               for cid, st in statuses.items()}
    bad = any(st == "fail" for st in statuses.values())
    return {"state": "ok", "compliant": not bad, "score": 50.0 if bad else 100.0, "message": None,
            "device_uuid": device_uuid, "source": "live", "evidence_at": None, "results": results}


def run(run_id, **hosts):
    return Run({"id": run_id, "score": 50.0, "finished_at": "2026-12-06T07:00:00Z"}, hosts)


class FakePlay:
    def __init__(self, hosts):
        self.hosts = hosts


@pytest.fixture
def fake(monkeypatch, tmp_path):
    """fake(after) -> the calls: run_once gives `before` first, `after` once the repair play ran."""
    from deskguard import site as site_mod

    before = run("r1", **{"lap-1": host("u1", **{"ACC-001": "fail", "ACC-005": "fail", "FW-001": "pass"}),
                          "lap-2": host(None, **{"FW-001": "fail"})})
    calls = []

    def install(after, play_hosts):
        runs = [before, after]
        monkeypatch.setattr(command, "run_once", lambda root, limit, progress=None, **kw: (None, runs.pop(0), None))
        monkeypatch.setattr(command, "fix", lambda root, targets, progress=None: calls.append(targets)
                            or [FakePlay(play_hosts)])
        monkeypatch.setattr(site_mod, "site_dir", lambda site: tmp_path)
        from deskguard.compliance import runs as runs_mod
        monkeypatch.setattr(runs_mod, "history", lambda store: [])
        monkeypatch.setattr("deskguard.store.Store.open", lambda root: _NoStore())
        monkeypatch.setattr("deskguard.site.inventory.play_hosts", lambda root, limit: sorted(before.hosts))
        monkeypatch.setattr(command, "checkpoint_audit", lambda root: None)
        return calls
    return install


class _NoStore:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_a_control_still_failing_after_the_fix_is_listed_and_exits_1(fake):
    after = run("r2", **{"lap-1": host("u1", **{"ACC-001": "pass", "ACC-005": "fail", "FW-001": "pass"}),
                         "lap-2": host(None, **{"FW-001": "fail"})})
    play = {"lap-1": HostOutcome(findings={"ACC-005": ["neutralised in /etc/ssh/sshd_config.d/00-a.conf: X"]})}
    calls = fake(after, play)
    res = CliRunner().invoke(comply, ["--fix", "--json"])
    assert calls == [{"lap-1": ["accounts"]}]
    assert res.exit_code == 1, res.output
    fix = json.loads(res.output)["fix"]
    assert fix["fixed"] == {"lap-1": ["ACC-001"]}
    assert list(fix["still_failing"]) == ["lap-1"] and list(fix["still_failing"]["lap-1"]) == ["ACC-005"]
    assert fix["never_onboarded"] == ["lap-2"]
    assert fix["notes"] == {"lap-1": ["ACC-005: neutralised in /etc/ssh/sshd_config.d/00-a.conf: X"]}


def test_the_table_says_what_is_still_failing_and_keeps_long_evidence_out(fake):
    after = run("r2", **{"lap-1": host("u1", **{"ACC-001": "pass", "ACC-005": "fail", "FW-001": "pass"}),
                         "lap-2": host(None, **{"FW-001": "fail"})})
    fake(after, {"lap-1": HostOutcome()})
    res = CliRunner().invoke(comply, ["--fix"], terminal_width=200)
    assert res.exit_code == 1, res.output
    out = res.output
    assert "fixed: lap-1: ACC-001" in out, out
    assert "still failing after the fix: lap-1: ACC-005" in out, out
    assert "x" * 100 not in out, out                       # the whole evidence is in --json / the HTML report
    # The managed laptop comes before the never-onboarded one in the table.
    assert out.index("lap-1 ") < out.rindex("lap-2 "), out
    assert "lap-2 │ NOT compliant (never" in out and "lap-1 │ NOT compliant  " in out, out


def test_a_fix_that_repairs_everything_exits_0(fake):
    after = run("r2", **{"lap-1": host("u1", **{"ACC-001": "pass", "ACC-005": "pass", "FW-001": "pass"})})
    fake(after, {"lap-1": HostOutcome()})
    res = CliRunner().invoke(comply, ["--fix", "--json"])
    assert res.exit_code == 0, res.output
    fix = json.loads(res.output)["fix"]
    assert fix["fixed"] == {"lap-1": ["ACC-001", "ACC-005"]} and fix["still_failing"] == {}


def test_hundreds_of_never_onboarded_hosts_are_one_short_line_after_the_laptops(fake, monkeypatch):
    many = {f"fleet-{n:03d}": host(None, **{"FW-001": "fail"}) for n in range(200)}
    before = run("r1", **{"lap-1": host("u1", **{"ACC-001": "fail"}), **many})
    after = run("r2", **{"lap-1": host("u1", **{"ACC-001": "pass"}), **many})
    fake(after, {"lap-1": HostOutcome()})
    runs = [before, after]
    monkeypatch.setattr(command, "run_once", lambda root, limit, progress=None, **kw: (None, runs.pop(0), None))
    out = CliRunner().invoke(comply, ["--fix"], terminal_width=200).output
    line = next(x for x in out.splitlines() if x.startswith("not fixed (never onboarded"))
    assert "200 hosts: fleet-000" in line and "190 more" in line and "fleet-199" not in line, line
    assert out.index("fixing: lap-1: accounts") < out.index("not fixed (never onboarded")


def test_a_failure_fix_cannot_repair_on_a_managed_laptop_is_listed_too(fake, monkeypatch):
    """NET-001 (the operator's network) is not fixable: --fix leaves it, and says it still fails."""
    before = run("r1", **{"lap-1": host("u1", **{"ACC-001": "fail"}), "lap-3": host("u3", **{"NET-001": "fail"})})
    after = run("r2", **{"lap-1": host("u1", **{"ACC-001": "pass"}), "lap-3": host("u3", **{"NET-001": "fail"})})
    calls = fake(after, {"lap-1": HostOutcome()})
    runs = [before, after]
    monkeypatch.setattr(command, "run_once", lambda root, limit, progress=None, **kw: (None, runs.pop(0), None))
    res = CliRunner().invoke(comply, ["--fix", "--json"])
    assert calls == [{"lap-1": ["accounts"]}] and res.exit_code == 1, res.output
    fix = json.loads(res.output)["fix"]
    assert fix["fixed"] == {"lap-1": ["ACC-001"]} and list(fix["still_failing"]) == ["lap-3"]
