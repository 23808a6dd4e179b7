"""The network posture collector (module_utils/deskguard_network) on recorded real-world inputs, and NET-001..003
judged from them: each environment gets the right classification and the right verdict; missing tools, a
vanished interface, a name that does not resolve and a port that hangs finish in time as unknown, never pass."""

from __future__ import annotations

import os
import shlex
import socket
import sys
import time
from pathlib import Path

import pytest
from netcheck_recordings import COMPANY_POLICY, DHCLIENT_ANDROID, RECORDINGS, call_system_listener

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins" / "module_utils"))
import deskguard_network as dn  # noqa: E402

pytestmark = pytest.mark.unit


def make_root(tmp_path, rec):
    """The recording's sysfs and files under a fresh root."""
    net = tmp_path / "sys" / "class" / "net"
    net.mkdir(parents=True)
    for rel, content in rec.get("sysfs", {}).items():
        path = Path(os.path.normpath(net / rel))
        path.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith("/"):
            path.mkdir(exist_ok=True)
        elif content.startswith("-> "):
            path.symlink_to(content[3:])
        else:
            path.write_text(content)
    for rel, content in rec.get("files", {}).items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return tmp_path


class Recorded(dn.Probe):
    """Commands answer from the recording; a command it does not have is a tool that is not installed."""

    commands: dict = {}

    def has(self, tool):
        return tool == "ip" or any(c.split()[0] == tool for c in self.commands)

    def run(self, argv, what):
        key = shlex.join(argv)
        if key in self.commands:
            return self.commands[key]
        if argv[0] in ("wg", "nft"):       # no tunnel, no kill switch table
            return None
        self.unknown.append(f"{what}: {argv[0]} is not installed")
        return None


def observe(tmp_path, monkeypatch, name, **kw):
    rec = RECORDINGS[name]
    monkeypatch.setattr(Recorded, "commands", rec["commands"])
    monkeypatch.setattr(dn, "Probe", Recorded)
    return dn.gather(root=str(make_root(tmp_path, rec)), **kw)


def judged(network, policy=None):
    from deskguard.compliance.network import judge_all

    return {r.id: r for r in judge_all(network, policy or {})}


@pytest.mark.parametrize("name", sorted(RECORDINGS))
def test_each_recorded_environment_gets_its_kind_and_verdict(tmp_path, monkeypatch, name):
    rec = RECORDINGS[name]
    net = observe(tmp_path, monkeypatch, name)
    assert net["uplink"]["kind"] == rec["kind"], net["uplink"]
    if "driver" in rec:
        assert net["uplink"]["driver"] == rec["driver"]
    if "android_metered" in rec:
        assert net["android_metered"] is rec["android_metered"]
    if "security" in rec:
        assert net["wifi"]["security"] == rec["security"], net["wifi"]
    results = judged(net, COMPANY_POLICY)
    assert results["NET-001"].status == rec["net001"], results["NET-001"].evidence
    if "net002" in rec:
        assert results["NET-002"].status == rec["net002"], results["NET-002"].evidence
    if "says" in rec:
        assert rec["says"] in results["NET-001"].evidence + results["NET-002"].evidence
    assert results["NET-003"].status == "not_applicable"     # no call system in this policy


def test_android_usb_tethering_is_found_three_ways(tmp_path, monkeypatch):
    net = observe(tmp_path, monkeypatch, "android_usb_tethering")
    assert net["uplink"]["usb_id"] == "0bb4:0ffe"
    assert net["networkmanager"]["metered"] == "guess_yes" and net["android_metered"] is True
    evidence = judged(net)["NET-001"].evidence
    assert any("driver rndis_host" in e for e in evidence)
    # Allow-listing its USB id (as for a company dock) does not help: the lease and NetworkManager still say so.
    assert judged(net, {"network_posture_allowed_usb_adapters": ["0bb4:0ffe"]})["NET-001"].status == "fail"


def test_a_company_dock_on_cdc_ether_is_allowed_by_usb_id(tmp_path, monkeypatch):
    rec = dict(RECORDINGS["iphone_usb_tethering"])
    monkeypatch.setitem(RECORDINGS, "dock", {**rec, "sysfs": {k: v.replace("ipheth", "cdc_ether")
                                                              for k, v in rec["sysfs"].items()}})
    net = observe(tmp_path, monkeypatch, "dock")
    assert net["uplink"]["driver"] == "cdc_ether" and net["uplink"]["kind"] == "usb_tether"
    assert judged(net)["NET-001"].status == "fail"
    assert judged(net, {"network_posture_allowed_usb_adapters": ["05ac:12a8"]})["NET-001"].status == "pass"


def test_the_company_router_is_allowed_only_with_its_bssid(tmp_path, monkeypatch):
    net = observe(tmp_path, monkeypatch, "company_mobile_router")
    assert judged(net, COMPANY_POLICY)["NET-001"].observed["company_router"] == "HUAWEI-E5785-*"
    # The same model bought privately: matches the hotspot pattern, and NetworkManager says metered.
    net["wifi"]["bssid"] = "e8:4d:74:00:00:01"
    evidence = judged(net, COMPANY_POLICY)["NET-001"].evidence
    assert judged(net, COMPANY_POLICY)["NET-001"].status == "fail"
    assert any("HUAWEI-E*" in e for e in evidence) and any("metered" in e for e in evidence)
    # Without the policy's extra pattern, NetworkManager's metered flag alone still catches it.
    assert judged(net)["NET-001"].status == "fail"


def test_android_hotspot_bssid_alone_is_evidence(tmp_path, monkeypatch):
    net = observe(tmp_path, monkeypatch, "android_wifi_hotspot")
    assert "android_softap_bssid" in net["wifi"]["bssid_hints"]
    net["wifi"]["ssid"], net["android_metered"] = "Living room", None
    evidence = judged(net)["NET-001"].evidence
    assert evidence == ["The Wi-Fi's BSSID 02:1a:11:f5:3c:7e is an Android phone's hotspot address (02:1a:11)."]


def test_missing_tools_give_unknowns_never_a_pass(tmp_path, monkeypatch):
    rec = RECORDINGS["home_wifi_wpa2"]
    only_route = {"ip -j -4 route show default": rec["commands"]["ip -j -4 route show default"]}
    monkeypatch.setitem(RECORDINGS, "bare", {**rec, "commands": only_route})
    net = observe(tmp_path, monkeypatch, "bare")
    assert net["uplink"]["kind"] == "wifi"                       # sysfs alone says Wi-Fi
    assert net["wifi"]["security"] == "unknown" and not net["complete"]
    assert any("neither NetworkManager nor wpa_supplicant" in u for u in net["unknown"])
    assert judged(net)["NET-002"].status == "error"


def test_no_ip_tool_means_nothing_is_known(tmp_path, monkeypatch):
    monkeypatch.setattr(dn.shutil, "which", lambda tool: None)
    net = dn.gather(root=str(tmp_path), vpn_interface="")
    assert net["uplink"] is None and "default route: ip (iproute2) is not installed" in net["unknown"]
    results = judged(net)
    assert results["NET-001"].status == "error" and results["NET-002"].status == "error"


def test_an_interface_that_vanished_mid_check_is_unknown(tmp_path, monkeypatch):
    rec = RECORDINGS["android_wifi_hotspot"]
    monkeypatch.setitem(RECORDINGS, "vanished", {**rec, "sysfs": {}, "files": {}})
    net = observe(tmp_path, monkeypatch, "vanished")
    assert net["uplink"]["kind"] == "unknown" and net["uplink"]["present"] is False
    assert any("disappeared during the check" in u for u in net["unknown"])
    r = judged(net)["NET-001"]
    assert r.status == "error" and "disappeared" in r.evidence[0]


def test_parsers_on_their_recorded_outputs():
    assert dn.parse_iw_link("Not connected.\n")["connected"] is False
    assert dn.parse_iw_link(RECORDINGS["android_wifi_hotspot"]["commands"]["iw dev wlp2s0 link"]) == {
        "connected": True, "bssid": "02:1a:11:f5:3c:7e", "ssid": "AndroidAP_7d21", "freq": 2437.0}
    assert [w["ssid"] for w in dn.parse_nmcli_wifi("yes:Caf\\:e:AA\\:BB\\:CC\\:DD\\:EE\\:FF:WPA1 WPA2\n")] == ["Caf:e"]
    assert dn.nm_metered("yes (guessed)") == "guess_yes" and dn.nm_metered("no") == "no"
    assert dn.nm_metered("unknown") == "unknown"
    assert {s: dn.wifi_security(s) for s in ("", "--", "WEP", "WPA1", "WPA1 WPA2", "WPA3", "OWE", "WPA2 802.1X")} == {
        "": "open", "--": "open", "WEP": "wep", "WPA1": "wpa", "WPA1 WPA2": "wpa2", "WPA3": "wpa3", "OWE": "owe",
        "WPA2 802.1X": "enterprise"}
    assert dn.wpa_security({"state": "COMPLETED", "key_mgmt": "NONE", "pairwise_cipher": "WEP-104"}) == "wep"
    assert dn.wpa_security({"state": "SCANNING", "key_mgmt": "NONE"}) == "unknown"
    lease = dn.dhclient_lease_for(DHCLIENT_ANDROID, "enp0s31f6")
    assert "192.168.178.34" in lease and not dn.android_metered_in(lease)
    assert dn.android_metered_in(dn.dhclient_lease_for(DHCLIENT_ANDROID, "wlp2s0"))
    assert dn.android_metered_in("VENDOR_SPECIFIC=414E44524F49445F4D455445524544")   # networkd's hex
    assert dn.default_routes('[{"dst":"default","dev":"b","metric":600},{"dst":"default","dev":"a","metric":100},'
                             '{"dst":"10.0.0.0/8","dev":"c"}]')[0]["dev"] == "a"


def test_rtt_stats_loss_and_jitter():
    s = dn.rtt_stats([20.0, 60.0, None, 20.0, None])
    assert (s["sent"], s["received"], s["loss_pct"], s["jitter_ms"], s["rtt_avg_ms"]) == (5, 3, 40.0, 40.0, 33.3)
    assert dn.rtt_stats([None, None])["rtt_avg_ms"] is None and dn.rtt_stats([])["loss_pct"] is None


# ------------------------------------------------------------------------ call-system probes, for real

@pytest.fixture
def listener():
    with call_system_listener() as port:
        yield port


@pytest.fixture
def hanging_port():
    """A port whose SYNs are dropped: the listener's accept queue is full (Linux drops SYNs then)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    port, fillers = srv.getsockname()[1], []
    for _ in range(3):
        c = socket.socket()
        c.settimeout(0.3)
        try:
            c.connect(("127.0.0.1", port))
        except OSError:
            pass
        fillers.append(c)
    yield port
    for c in fillers:
        c.close()
    srv.close()


def probe_call_system(targets, **kw):
    kw.setdefault("vpn_interface", "")
    return dn.gather(targets=targets, **kw)


def test_open_port_gives_samples_and_passes_within_limits(listener):
    net = probe_call_system([{"host": "localhost", "ports": [listener]}], samples=5)
    t = net["call_system"]["targets"][0]
    assert t["resolved"] and t["ports"][str(listener)]["state"] == "open" and t["route_dev"] == "lo"
    s = net["call_system"]["samples"]
    assert s["sent"] == 5 and s["received"] == 5 and s["loss_pct"] == 0
    policy = {"network_posture_call_system": [{"host": "localhost", "ports": [listener]}],
              "network_posture_require_vpn": False}
    assert judged(net, policy)["NET-003"].status == "pass"
    # Through the VPN is required by default: lo is not the tunnel.
    policy.pop("network_posture_require_vpn")
    r = judged(net, policy)["NET-003"]
    assert r.status == "fail" and "reached via lo, not through the VPN" in " ".join(r.evidence)


def test_jitter_and_loss_beyond_the_policy_fail_with_the_helpdesk_sentence(listener):
    net = probe_call_system([{"host": "localhost", "ports": [listener]}], samples=2)
    net["call_system"]["samples"].update(dn.rtt_stats([20.0, 65.0, 20.0, 65.0, None, 20.0, 65.0, 20.0, 65.0, 20.0]))
    policy = {"network_posture_call_system": [{"host": "localhost", "ports": [listener]}],
              "network_posture_require_vpn": False, "network_posture_max_jitter_ms": 30}
    r = judged(net, policy)["NET-003"]
    assert r.status == "fail"
    assert "Call system reachable, jitter 45 ms exceeds 30 ms: voice quality will suffer." in r.evidence
    assert "Call system reachable, 10% packet loss exceeds 2%: calls will break up." in r.evidence


def test_a_hanging_port_finishes_in_time_as_unknown(hanging_port):
    start = time.monotonic()
    net = probe_call_system([{"host": "127.0.0.1", "ports": [hanging_port]}], probe_timeout=1.0, time_limit=3)
    assert time.monotonic() - start < 3.5
    assert net["call_system"]["targets"][0]["ports"][str(hanging_port)]["state"] == "unknown"
    policy = {"network_posture_call_system": [{"host": "127.0.0.1", "ports": [hanging_port]}],
              "network_posture_require_vpn": False}
    r = judged(net, policy)["NET-003"]
    assert r.status == "error" and any("did not answer in time" in e for e in r.evidence)


def test_a_refused_port_fails():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    net = probe_call_system([{"host": "127.0.0.1", "ports": [port]}])
    policy = {"network_posture_call_system": [{"host": "127.0.0.1", "ports": [port]}],
              "network_posture_require_vpn": False}
    r = judged(net, policy)["NET-003"]
    assert r.status == "fail" and f"refuses connections on port {port}" in r.evidence[0]


def test_a_name_that_does_not_resolve_and_a_resolver_that_hangs(monkeypatch):
    real = socket.getaddrinfo

    def fake(host, *a, **kw):
        if host == "gone.example":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        if host == "slow.example":
            time.sleep(5)
        return real(host, *a, **kw)

    monkeypatch.setattr(dn.socket, "getaddrinfo", fake)
    start = time.monotonic()
    net = probe_call_system([{"host": "gone.example", "ports": [5061]}, {"host": "slow.example", "ports": [5061]}],
                            probe_timeout=1.0, time_limit=4)
    assert time.monotonic() - start < 2.5
    gone, slow = net["call_system"]["targets"]
    assert gone["resolved"] is False and slow["resolved"] is None
    assert any("slow.example: no DNS answer within 1.0 s" in u for u in net["unknown"])
    policy = {"network_posture_call_system": [{"host": "gone.example"}], "network_posture_require_vpn": False}
    r = judged(net, policy)["NET-003"]
    assert r.status == "fail" and "gone.example does not resolve" in r.evidence[0]
    net["call_system"]["targets"] = [slow]
    assert judged(net, policy)["NET-003"].status == "error"


def test_the_overall_time_limit_holds_with_many_hanging_probes(hanging_port):
    start = time.monotonic()
    net = probe_call_system([{"host": "127.0.0.1", "ports": [hanging_port] * 10}], probe_timeout=1.0, time_limit=2.5)
    assert time.monotonic() - start < 3.6                  # the limit plus at most one probe
    assert not net["complete"] and any("no time left" in u for u in net["unknown"])


def test_vpn_down_is_a_failure_even_when_the_call_system_answers(listener):
    net = probe_call_system([{"host": "localhost", "ports": [listener]}], samples=2)
    net["vpn"] = {"interface": "wg0", "up": False, "handshake_age": 12}
    policy = {"network_posture_call_system": [{"host": "localhost", "ports": [listener]}]}
    r = judged(net, policy)["NET-003"]
    assert r.status == "fail" and r.evidence[0] == "VPN is down: the tunnel interface wg0 is not up."


def test_the_posture_section_reads_the_role_s_targets(tmp_path, listener):
    (tmp_path / "etc" / "deskguard").mkdir(parents=True)
    (tmp_path / dn.CONFIG_PATH).write_text('{"targets": [{"host": "localhost", "ports": [%d]}], '
                                           '"vpn_interface": "", "samples": 2}' % listener)
    got = dn.posture_section(str(tmp_path))
    assert got["configured"] and got["call_system"]["targets"][0]["ports"][str(listener)]["state"] == "open"
    bare = dn.posture_section(str(tmp_path / "nothing"))
    assert bare["configured"] is False and bare["call_system"] is None
    r = judged(bare, {"network_posture_call_system": [{"host": "x", "ports": [1]}]})["NET-003"]
    assert r.status in ("error", "fail") and r.status != "pass"


def test_the_example_policy_fits_the_role_s_argument_spec():
    """onboard.yml validates every role's spec before any change: the example policy must pass it, and a call
    system without a host must be refused there, not on the laptop."""
    import yaml
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

    root = Path(__file__).resolve().parents[2]
    spec = yaml.safe_load((root / "roles/network_posture/meta/argument_specs.yml").read_text())
    validator = ArgumentSpecValidator(spec["argument_specs"]["main"]["options"])
    policy = yaml.safe_load((root / "inventory/group_vars/all/policy.yml").read_text())
    mine = {k: v for k, v in policy.items() if k.startswith("network_posture_")}
    assert set(mine) == set(spec["argument_specs"]["main"]["options"])
    assert validator.validate(mine).error_messages == []
    bad = validator.validate({**mine, "network_posture_call_system": [{"ports": [5061]}]})
    assert bad.error_messages == ["missing required arguments: host found in network_posture_call_system"]


def test_onboarding_says_net_003_is_not_applicable_as_the_nightly_run_does(tmp_path):
    """One verdict for one laptop: without a call system in the policy, onboarding's per-control table and the
    nightly summary both say NET-003 does not apply (onboarding used to say "already compliant")."""
    from deskguard.compliance.network import call_system
    from deskguard.runner import run_playbook

    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "t.yml").write_text(
        "- hosts: all\n  gather_facts: true\n  gather_subset: [min]\n  roles: [network_posture]\n")
    inv = tmp_path / "hosts.yml"
    inv.write_text('all: {hosts: {lt-1: {ansible_connection: local, ansible_python_interpreter: '
                   '"{{ ansible_playbook_python }}"}}}\n')
    outcome = run_playbook(tmp_path, "t.yml", [inv]).hosts["lt-1"]
    nightly = call_system({}, {"network_posture_call_system": []})
    assert nightly.status == "not_applicable"
    assert outcome.controls["NET-003"] == "not_applicable", outcome
    assert outcome.findings["NET-003"] == nightly.evidence


# ------------------------------------------------------------------------- the operator's words for the verdict

import deskguard_operator_network as operator  # noqa: E402

OPERATOR_SAYS = {"android_usb_tethering": operator.TETHERING, "iphone_usb_tethering": operator.TETHERING,
                 "bluetooth_pan": operator.TETHERING, "mobile_broadband_modem": operator.TETHERING,
                 "android_wifi_hotspot": operator.PHONE_HOTSPOT, "open_cafe_wifi": operator.OPEN_WIFI,
                 "company_mobile_router": operator.OK, "container_veth": operator.OK,
                 "home_wifi_wpa2": operator.OK, "wired_home_broadband": operator.OK}


@pytest.mark.parametrize("name", sorted(RECORDINGS))
def test_each_recorded_environment_tells_the_operator_what_to_do(tmp_path, monkeypatch, name):
    """The operator's message follows the NET judges' verdict on the same observation (one verdict, two wordings)."""
    controls = [r.to_dict() for r in judged(observe(tmp_path, monkeypatch, name), COMPANY_POLICY).values()]
    assert [m for m, _params in operator.messages(controls)] == [OPERATOR_SAYS[name]]


def _call_system_controls(vpn, samples, ports=None, through_vpn=True, require_vpn=True):
    network = {"uplink": {"interface": "enp1s0", "kind": "wired"}, "vpn": vpn,
               "call_system": {"targets": [{"host": "cti.example.com", "resolved": True, "addresses": ["10.9.0.5"],
                                            "through_vpn": through_vpn, "route_dev": "wg0",
                                            "ports": ports or {"5061": {"state": "open", "ms": 20}}}],
                               "samples": samples}}
    policy = {"network_posture_call_system": [{"host": "cti.example.com", "ports": [5061]}],
              "network_posture_require_vpn": require_vpn}
    return [r.to_dict() for r in judged(network, policy).values()]


GOOD = {"sent": 10, "received": 10, "rtt_avg_ms": 20.0, "jitter_ms": 2.0, "loss_pct": 0.0}


@pytest.mark.parametrize("vpn, samples, ports, through_vpn, says", [
    ({"interface": "wg0", "up": True, "handshake_age": 30}, GOOD, None, True, operator.OK),
    ({"interface": "wg0", "up": False}, {}, None, True, operator.VPN_DOWN),
    ({"interface": "wg0", "up": True, "handshake_age": 900}, GOOD, None, True, operator.VPN_DOWN),
    ({"interface": "wg0", "up": True, "handshake_age": 30}, {"sent": 10, "received": 0, "rtt_avg_ms": None,
                                                             "jitter_ms": None, "loss_pct": 100.0},
     None, True, operator.CALL_SYSTEM_UNREACHABLE),
    ({"interface": "wg0", "up": True, "handshake_age": 30}, {}, {"5061": {"state": "refused"}}, True,
     operator.CALL_SYSTEM_UNREACHABLE),
    ({"interface": "wg0", "up": True, "handshake_age": 30}, GOOD, None, False, operator.CALL_SYSTEM_UNREACHABLE),
    ({"interface": "wg0", "up": True, "handshake_age": 30}, {**GOOD, "jitter_ms": 45.0}, None, True,
     operator.CALL_QUALITY),
    ({"interface": "wg0", "up": True, "handshake_age": 30}, {**GOOD, "loss_pct": 10.0}, None, True,
     operator.CALL_QUALITY),
])
def test_the_call_system_verdict_in_the_operators_words(vpn, samples, ports, through_vpn, says):
    assert [m for m, _ in operator.messages(_call_system_controls(vpn, samples, ports, through_vpn))] == [says]


def test_an_unknown_reads_could_not_check_and_a_fail_outranks_it():
    unknown = _call_system_controls({}, {})
    assert {c["id"]: c["status"] for c in unknown}["NET-003"] == "error"
    assert operator.lines(unknown, "ja") == ["ネットワークを十分に確認できませんでした。通話ができない場合はヘルプデスク"
                                             "に連絡してください。"]
    open_wifi = [{"id": "NET-002", "status": "fail", "observed": {"ssid": "Free_WiFi", "security": "open"}}]
    assert operator.lines(unknown + open_wifi, "en") == [
        'The Wi-Fi "Free_WiFi" is not protected by a password. Please switch to your home Wi-Fi or a cable.']
