"""`deskguard netcheck HOST` for real: ansible-playbook, the action plugin and the module run against this machine
(local connection), with a call-system listener on the loopback. Plus the helpdesk wording for each situation."""

from __future__ import annotations

import json
import re
import sys

import pytest
from netcheck_recordings import call_system_listener
from sitetools import init_site, run_deskguard

from deskguard.compliance.netcheck import Netcheck, evidence, verdict

pytestmark = pytest.mark.unit


@pytest.fixture
def listener():
    with call_system_listener() as port:
        yield port


@pytest.fixture
def site(tmp_path, monkeypatch):
    from deskguard.site.inventory import add_host

    monkeypatch.delenv("DESKGUARD_DB_URL", raising=False)
    site = init_site(tmp_path / "site")
    add_host(site, "here", {"ansible_connection": "local", "ansible_python_interpreter": sys.executable})
    add_host(site, "gone", {"ansible_host": "127.0.0.1", "ansible_port": 9, "ansible_user": "nobody"})
    return site


def set_policy(site, **values):
    """Each key's line of the policy replaced (appended if absent): a key set twice is refused."""
    policy = site / "inventory" / "group_vars" / "all" / "policy.yml"
    text = policy.read_text()
    for key, value in values.items():
        text, n = re.subn(rf"^{key}:.*$", f"{key}: {json.dumps(value)}", text, flags=re.M)
        text += "" if n else f"{key}: {json.dumps(value)}\n"
    policy.write_text(text)


def test_netcheck_runs_the_module_and_judges_it_on_the_controller(site, listener):
    set_policy(site, network_posture_call_system=[{"host": "localhost", "ports": [listener]}],
               network_posture_require_vpn=False, network_posture_samples=3)
    proc = run_deskguard(site, "netcheck", "here", "--json", timeout=300)
    out = json.loads(proc.stdout)
    statuses = {c["id"]: c["status"] for c in out["controls"]}
    target = out["network"]["call_system"]["targets"][0]
    assert target["ports"][str(listener)]["state"] == "open" and target["route_dev"] == "lo"
    assert statuses["NET-003"] == "pass" and out["network"]["call_system"]["samples"]["received"] == 3
    # This machine's own link decides NET-001/002; the exit code follows the statuses either way.
    ok = all(s in ("pass", "not_applicable") for s in statuses.values())
    assert proc.returncode == (0 if ok else 1) == out["exit_code"], proc.stderr[-2000:]
    text = run_deskguard(site, "netcheck", "here", timeout=300)
    assert "NET-003 pass" in text.stdout and "evidence:" in text.stdout
    assert f"call system localhost: 127.0.0.1 via lo; {listener} open" in text.stdout
    from deskguard.store import Store

    with Store.open(site) as store:
        rows = [e for e in store.list_audit(target="here") if e.action == "netcheck"]
    assert len(rows) == 2


def test_the_vpn_requirement_fails_a_call_system_outside_the_tunnel(site, listener):
    set_policy(site, network_posture_call_system=[{"host": "localhost", "ports": [listener]}],
               network_posture_vpn_interface="dgtest0", network_posture_samples=2)
    proc = run_deskguard(site, "netcheck", "here", "--lang", "ja", timeout=300)
    assert proc.returncode == 1
    assert "VPN is down: the tunnel interface dgtest0 is not up." in proc.stdout
    assert "The call system localhost is reached via lo, not through the VPN." in proc.stdout
    # --lang: the same verdict in the words the operator is given (docs/operators.md), before IT's evidence.
    assert proc.stdout.startswith("operator (ja):\n  会社のVPNに接続されていません。"), proc.stdout[:300]


def test_unknown_host_is_a_usage_error_and_an_unreachable_one_exits_3(site):
    proc = run_deskguard(site, "netcheck", "nobody-here")
    assert proc.returncode == 2 and "not in the inventory" in proc.stderr
    proc = run_deskguard(site, "netcheck", "gone", timeout=300)
    assert proc.returncode == 3 and "netcheck: no answer from gone" in proc.stderr


CONTROLS_OK = [{"id": "NET-001", "status": "pass", "evidence": []}, {"id": "NET-002", "status": "pass", "evidence": []},
               {"id": "NET-003", "status": "pass", "evidence": []}]


def test_helpdesk_sentences_for_each_situation():
    tether = [{"id": "NET-001", "status": "fail",
               "evidence": ["Connected through a phone's USB tethering (driver rndis_host)."]}] + CONTROLS_OK[1:]
    assert verdict({}, tether) == ["Connected through a phone's USB tethering (driver rndis_host). The call system "
                                   "requires the home broadband or the company mobile Wi-Fi."]
    jitter = CONTROLS_OK[:2] + [{"id": "NET-003", "status": "fail", "evidence": [
        "Call system reachable, jitter 45 ms exceeds 30 ms: voice quality will suffer."]}]
    assert verdict({}, jitter) == ["Call system reachable, jitter 45 ms exceeds 30 ms: voice quality will suffer."]
    unknown = CONTROLS_OK[:2] + [{"id": "NET-003", "status": "error", "evidence": [
        "could not determine: cti.example.com: no DNS answer within 2.0 s"]}]
    assert verdict({}, unknown) == ["Could not check everything: cti.example.com: no DNS answer within 2.0 s."]
    network = {"uplink": {"interface": "enp0s31f6", "kind": "wired"}, "vpn": {"up": True},
               "call_system": {"samples": {"rtt_avg_ms": 23.4, "jitter_ms": 3.1, "loss_pct": 0.0}}}
    assert verdict(network, CONTROLS_OK) == ["Network OK: wired connection on enp0s31f6, VPN up, call system "
                                             "reachable in 23.4 ms (jitter 3.1 ms, loss 0%)."]
    jitter[-1].update(observed={"vpn_up": True, "vpn_handshake_age": 10, "targets": {}, "rtt_avg_ms": 20.0,
                                "jitter_ms": 45.0}, expected={"through_vpn": True})
    operator = Netcheck("here", network, jitter).to_dict("en")["operator"]
    assert operator == {"language": "en", "lines": ["Your connection to the call system is slow or unstable, so "
                                                    "calls may break up. Please move closer to the Wi-Fi router "
                                                    "or use a cable."]}
    assert "operator" not in Netcheck("here", network, jitter).to_dict()
    lines = evidence({**network, "unknown": ["Wi-Fi security: no answer"], "elapsed": 1.2, "time_limit": 10})
    assert "unknown: Wi-Fi security: no answer" in lines and lines[-1] == "checked in 1.2 s (limit 10 s)"


def test_a_control_that_does_not_apply_reads_in_words(site):
    """Without a call system NET-003 does not apply: the helpdesk's table says so in words, never the JSON token."""
    set_policy(site, network_posture_call_system=[], network_posture_require_vpn=False)
    text = run_deskguard(site, "netcheck", "here", timeout=300).stdout
    assert re.search(r"^NET-003 not applicable\s", text, flags=re.M), text
    assert "not_applicable" not in text
