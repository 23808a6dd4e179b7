"""`deskguard demo` without a lab: bad input is refused in one line with nothing started or written, the lab
site's policy edit, the verdict (the onboarded laptops decide, the never-onboarded fleet does not), and
`comply --fix` leaving never-onboarded hosts alone. The demo itself runs for real in
tests/container/test_demo.py."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import clirun
import pytest

from deskguard.lab import demo
from deskguard.compliance import command
from deskguard.compliance.runs import Run
from deskguard.errors import LabError, UsageError

pytestmark = pytest.mark.unit


def run_demo(*args, lab_run: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "DESKGUARD_LAB_RUN": str(lab_run)}
    return clirun.deskguard("demo", *args, timeout=120, env=env)


def one_line(proc, code, text):
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("deskguard: "), proc.stderr
    assert text in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("args, text", [
    (["--containers", "-1"], "--containers must be between 0 and 50"),
    (["--fleet", "-3"], "--fleet must be between 0 and 1000"),
    (["--laptops", "3"], "--laptops must be between 0 and 2"),
    (["--laptops", "0", "--containers", "0"], "the demo onboards lab laptops"),
])
def test_bad_counts_are_one_line_and_nothing_is_made(tmp_path, args, text):
    folder = tmp_path / "demo"
    one_line(run_demo(*args, "--dir", str(folder), lab_run=tmp_path / "lab"), 2, text)
    assert not folder.exists() and not (tmp_path / "lab").exists()


def test_a_folder_that_is_not_a_demo_folder_is_never_replaced(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("the admin's own file")
    one_line(run_demo("--laptops", "0", "--fleet", "1", "--dir", str(folder), lab_run=tmp_path / "lab"), 2,
             "is not a demo folder")
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]


def test_a_lab_up_with_other_counts_is_refused_and_left_running(tmp_path):
    """The lab's record says one container runs (this test process stands in for its init: alive, same start
    time); a demo asking for other counts must refuse before it touches the lab or writes its folder."""
    from deskguard.lab.state import proc_start_time

    lab = tmp_path / "lab"
    lab.mkdir()
    state = {"hosts": {"lab-ct1": {"name": "lab-ct1", "kind": "container", "address": "10.213.1.1", "port": 22,
                                   "user": "dgadmin", "pid": os.getpid(), "pid_start": proc_start_time(os.getpid()),
                                   "extra": {}}}, "network": {}}
    (lab / "state.json").write_text(json.dumps(state))
    before = (lab / "state.json").read_bytes()
    folder = tmp_path / "demo"
    one_line(run_demo("--laptops", "0", "--containers", "1", "--fleet", "3", "--dir", str(folder), lab_run=lab), 2,
             "the lab already runs 0 laptop VM(s), 1 container(s), 0 fleet host(s)")
    assert (lab / "state.json").read_bytes() == before and not folder.exists()
    assert sorted(p.name for p in lab.iterdir()) == ["state.json"]


@pytest.mark.parametrize("recorded, text", [
    ({"suite": "bookworm"}, "the lab's laptops run Debian 12 (bookworm), the demo asked for Debian 13 (trixie): "
                            "run `deskguard lab down` first, or ask for --suite bookworm"),
    ({}, "the lab's laptops run an unrecorded release, the demo asked for Debian 13 (trixie): run `deskguard lab "
         "down` first"),
])
def test_a_lab_whose_laptops_run_another_release_is_refused_and_left_running(tmp_path, recorded, text):
    """Same counts, other release (or a laptop started before the lab recorded releases): refused before the lab
    or the folder is touched, so the demo never says it ran on a release it did not run on."""
    from deskguard.lab.state import proc_start_time

    lab = tmp_path / "lab"
    lab.mkdir()
    state = {"hosts": {"lab-ct1": {"name": "lab-ct1", "kind": "container", "address": "10.213.1.1", "port": 22,
                                   "user": "dgadmin", "pid": os.getpid(), "pid_start": proc_start_time(os.getpid()),
                                   "extra": recorded}}, "network": {}}
    (lab / "state.json").write_text(json.dumps(state))
    before = (lab / "state.json").read_bytes()
    folder = tmp_path / "demo"
    proc = run_demo("--laptops", "0", "--containers", "1", "--fleet", "0", "--dir", str(folder), lab_run=lab)
    one_line(proc, 2, text)
    assert proc.stderr.strip().endswith(text), proc.stderr
    assert (lab / "state.json").read_bytes() == before and not folder.exists()


def test_not_root_is_one_environment_error(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(LabError, match="needs root"):
        demo.check_request(demo.DemoRequest(0, 1, 3, tmp_path / "demo"))


def test_lab_site_gets_the_lab_networks_and_keeps_the_rest(tmp_path):
    from deskguard.lab.manager import management_networks
    from deskguard.lab.sites import policy_file, set_management_networks
    from deskguard.site.policyfile import read
    from deskguard.site.init import init_site

    site = tmp_path / "site"
    init_site(site, b"correct horse battery staple")
    before = policy_file(site).read_text()
    networks = management_networks()
    assert networks == ("10.213.0.0/16", "10.0.2.0/24")  # the default lab's, exactly as before
    set_management_networks(site, networks)
    after = policy_file(site).read_text()
    assert read(policy_file(site))["firewall_management_sources"] == list(networks)
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines()) if a != b]
    assert len(changed) == 1 and len(before.splitlines()) == len(after.splitlines()), changed

    policy_file(site).write_text(after.replace("firewall_management_sources:", "# firewall_management_sources:"))
    broken = policy_file(site).read_text()
    with pytest.raises(UsageError, match="expected one firewall_management_sources line"):
        set_management_networks(site, ["10.0.0.0/8"])
    assert policy_file(site).read_text() == broken


def host(compliant, device_uuid=None, state="ok", failing=()):
    results = {"FW-001": {"status": "fail" if "FW-001" in failing else "pass"},
               "ENC-001": {"status": "not_applicable"}}
    return {"state": state, "compliant": compliant, "score": 100.0 if compliant else 50.0, "message": None,
            "device_uuid": device_uuid, "results": results}


def outcome(tmp_path, laptop, fleet=2, onboard_exit=0, error=None):
    out = demo.DemoOutcome(tmp_path, tmp_path / "site", tmp_path / "pass",
                           report_html=tmp_path / "report.html")
    out.laptops = [demo.LaptopOutcome("lab-ct1", "container", onboard_exit, [], error=error)]
    out.fleet = [f"lab-f{i:03d}" for i in range(1, fleet + 1)]
    out.run = Run({"id": "r"}, {"lab-ct1": laptop, **{n: host(False, failing=("FW-001",)) for n in out.fleet}})
    return out


def test_verdict_the_onboarded_laptops_decide_not_the_fleet(tmp_path):
    out = outcome(tmp_path, host(True, "u1"))
    assert demo.verdict(out) == (0, None)
    assert demo.fleet_summary(out) == {"compliant": 0, "not compliant": 2, "unreachable": 0, "failed": 0}

    code, line = demo.verdict(outcome(tmp_path, host(False, "u1", failing=("FW-001",))))
    assert code == 1 and line.startswith("lab-ct1 is not compliant after onboarding (FW-001)") and "report.html" in line
    code, line = demo.verdict(outcome(tmp_path, host(False, "u1", state="unreachable")))
    assert code == 3 and "unreachable" in line
    code, line = demo.verdict(outcome(tmp_path, host(True, "u1"), onboard_exit=4, error="refused the admin key"))
    assert (code, line) == (4, "lab-ct1: refused the admin key")


def test_next_steps_name_the_demo_site_and_wipe_only_a_vm(tmp_path):
    out = outcome(tmp_path, host(True, "u1"))
    site = f"--site {tmp_path / 'site'}"
    cmds = [cmd for _what, cmd in demo.next_steps(out)]
    assert f"deskguard lab ssh lab-ct1 sudo ufw --force disable && deskguard comply {site} --fix" in cmds
    assert f"deskguard netcheck lab-ct1 {site}" in cmds and "deskguard lab down" in cmds
    assert not any(c.startswith("deskguard wipe") for c in cmds)   # a container has no LUKS root
    # Pasted in order, every step works: another demo only once this lab is down (else: refused, exit 2).
    assert cmds[-2:] == ["deskguard lab down", "deskguard demo"], cmds
    out.laptops.append(demo.LaptopOutcome("lab-vm1", "vm", 0, []))
    steps = demo.next_steps(out)
    cmds = [cmd for _what, cmd in steps]
    assert cmds[-3:] == [f"deskguard wipe lab-vm1 --reason 'demo: lost on the train' {site}",
                         f"deskguard orders list {site} && deskguard audit log --target lab-vm1 {site}",
                         "deskguard lab down"], cmds
    # The demo's laptops have the agent: the wipe works as printed, nothing to edit or re-onboard first.
    wipe_text = steps[-3][0]
    assert "policy.yml" not in wipe_text and "onboard" not in wipe_text and "type lab-vm1" in wipe_text, wipe_text


def test_the_demo_site_has_the_agent_on_calling_its_orders_server(tmp_path, monkeypatch):
    """The demo's site turns the check-in agent on (so `deskguard wipe` of a demo laptop is not refused for a
    missing agent), with URLs of the demo's own `deskguard serve` on the lab bridge, lab-only plain HTTP and a
    short first-run jitter; the whole policy passes the check every command makes, every other line kept."""
    from deskguard.lab import orders_server
    from deskguard.lab.sites import policy_file
    from deskguard.site.policyfile import check, read

    class Show:
        def step(self, text):
            self.text = text

        def secret(self, path):
            pass

    monkeypatch.setenv("DESKGUARD_LAB_PORT_BASE", "3000")
    show = Show()
    site, secret = demo._make_site(tmp_path, show)
    policy = read(policy_file(site))
    assert policy["endpoint_agent_enabled"] is True and policy["endpoint_agent_allow_http"] is True
    assert orders_server.url() == "http://10.213.0.1:3080"
    assert policy["endpoint_agent_server_url"] == "http://10.213.0.1:3080"
    assert policy["endpoint_agent_orders_url"] == "http://10.213.0.1:3080/orders"
    assert policy["endpoint_agent_jitter_seconds"] == 5 and policy["endpoint_agent_order_fetch"] == "signed"
    check(site)   # what onboard, comply and wipe check first
    assert "check-in agent on, calling http://10.213.0.1:3080" in show.text
    assert orders_server.command(site) == ["deskguard", "serve", "--site", str(site), "--bind", "10.213.0.1:3080",
                                           "--allow-http"]


def test_fix_leaves_never_onboarded_hosts_alone():
    run = Run({"id": "r"}, {"lab-ct1": host(False, "u1", failing=("FW-001",)),
                            "lab-f001": host(False, None, failing=("FW-001",)),
                            "lab-f002": host(True, None)})
    assert command.fix_targets(run) == {"lab-ct1": ["firewall"]}
    assert command.never_onboarded(run) == ["lab-f001"]
