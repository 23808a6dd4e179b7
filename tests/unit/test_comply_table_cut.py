"""The terminal table at fleet size: the worst TABLE_HOSTS hosts and one line of counts over every host;
`--all` lists them all (issue 24)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.unit


def fleet(n_ok: int, n_bad: int):
    from deskguard.compliance.runs import Run

    hosts = {f"ok{i:03d}": {"state": "ok", "compliant": True, "score": 100.0, "message": None, "device_uuid": f"u{i}",
                            "source": "checkin", "evidence_at": "2026-12-06T01:00:00Z", "results": {}}
             for i in range(n_ok)}
    hosts.update({f"bad{i:03d}": {"state": "ok", "compliant": False, "score": 50.0, "message": None,
                                  "device_uuid": f"b{i}", "source": "live", "evidence_at": None,
                                  "results": {"FW-001": {"status": "fail", "evidence": ["firewall off"]}}}
                  for i in range(n_bad)})
    hosts["gone"] = {"state": "unreachable", "compliant": False, "score": None, "message": "no route",
                     "device_uuid": "g", "source": None, "evidence_at": None, "results": {}}
    return Run(run={"id": "r" * 36, "score": 90.0}, hosts=hosts)


def table(run, show_all, capsys):
    from deskguard.commands.comply import _report

    _report(run, [], [], "table", None, None, show_all)
    return capsys.readouterr().out


def test_a_large_run_shows_the_worst_hosts_and_counts_every_host(capsys):
    from deskguard.commands.comply import TABLE_HOSTS

    out = table(fleet(TABLE_HOSTS + 20, 3), False, capsys)
    assert "gone" in out and all(f"bad{i:03d}" in out for i in range(3))   # the worst are shown
    shown = sum(1 for i in range(TABLE_HOSTS + 20) if f"ok{i:03d}" in out)
    assert shown == TABLE_HOSTS - 4
    said = " ".join(out.split())
    assert (f"{TABLE_HOSTS + 24} host(s): {TABLE_HOSTS + 20} compliant, 3 NOT compliant, 1 unreachable; "
            f"{TABLE_HOSTS + 20} judged from check-ins. The table shows the worst {TABLE_HOSTS}; 24 more host(s) "
            "not shown (`--all` lists every host).") in said, said[-400:]


def test_all_lists_every_host_and_a_small_run_is_never_cut(capsys):
    out = table(fleet(70, 1), True, capsys)
    assert all(f"ok{i:03d}" in out for i in range(70)) and "not shown" not in out
    out = table(fleet(5, 1), False, capsys)
    assert all(f"ok{i:03d}" in out for i in range(5)) and "not shown" not in out
