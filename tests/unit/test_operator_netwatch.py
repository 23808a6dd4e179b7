"""Network trouble for the operator (docs/operators.md): the laptop judges its own network with the nightly
run's NET judges (one module, deskguard_network_judges, used by both sides), keeps only the words' keys for the
session (network.json), wakes the session's deskguard-notify, which says it in the operator's language once per
N hours; the NetworkManager / networkd-dispatcher hook starts the check on the changes that matter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "plugins" / "module_utils"))
import deskguard_network_judges as judges  # noqa: E402
import deskguard_operator_announcements as announcements  # noqa: E402
import deskguard_operator_netwatch as netwatch  # noqa: E402
import deskguard_operator_network as operator  # noqa: E402
import deskguard_operator_notify as notify  # noqa: E402

import test_operator_notify  # noqa: E402

session_bus = test_operator_notify.session_bus   # the real session bus + recording server (a fixture)

pytestmark = pytest.mark.unit
NOW = 1796630400.0                       # 2026-12-07 00:00 UTC
DAY = time.struct_time((2026, 12, 7, 10, 0, 0, 0, 341, 0))
NIGHT = time.struct_time((2026, 12, 7, 22, 30, 0, 0, 341, 0))
CFG = dict(notify.DEFAULTS, quiet_hours="20:00-08:00")
TARGETS = [{"host": "cti.example.com", "ports": [5061]}]
VPN_DOWN_NETWORK = {"uplink": {"interface": "host0", "kind": "virtual"}, "default_routes": [{"dev": "host0"}],
                    "vpn": {"interface": "wg0", "up": False, "admin_up": False, "peers": 1, "handshake_age": None},
                    "call_system": {"targets": [{"host": "cti.example.com", "resolved": True, "through_vpn": False,
                                                 "route_dev": "host0", "ports": {"5061": {"state": "open"}}}],
                                    "samples": {"sent": 10, "received": 10, "rtt_avg_ms": 1.0, "jitter_ms": 0.1,
                                                "loss_pct": 0.0}}}
TETHERED = {"uplink": {"interface": "usb0", "kind": "usb_tether", "driver": "cdc_subset", "usb_id": "0525:a4a2"},
            "default_routes": [{"dev": "usb0"}]}


def test_the_controller_judges_with_the_laptop_s_judges():
    """No copy: the nightly run's Result is the shared judge's dict, for every control."""
    from deskguard.compliance.network import JUDGES

    policy = {"network_posture_call_system": TARGETS}
    for network in (VPN_DOWN_NETWORK, TETHERED, {}):
        for cid, (_section, judge) in JUDGES.items():
            shared = judges.JUDGES[cid](network, policy)
            assert {k: v for k, v in judge(network, policy).to_dict().items()
                    if k in shared} == shared


def test_the_check_keeps_only_the_words_for_the_session(tmp_path):
    etc = tmp_path / "etc" / "deskguard"
    etc.mkdir(parents=True)
    (etc / "network-posture.json").write_text(json.dumps(
        {"targets": TARGETS, "vpn_interface": "wg0", "time_limit": 10,
         "policy": {"network_posture_require_vpn": True, "network_posture_max_rtt_ms": 150, "other": "ignored"}}))
    seen = {}

    def gather(**kw):
        seen.update(kw)
        return VPN_DOWN_NETWORK

    data = netwatch.check(root=str(tmp_path), status_dir=str(tmp_path / "status"), now=1000, gather=gather)
    assert seen == {"root": str(tmp_path), "targets": TARGETS, "vpn_interface": "wg0", "time_limit": 10}
    kept = tmp_path / "status" / netwatch.NETWORK_FILE
    assert kept.stat().st_mode & 0o777 == 0o644
    assert json.loads(kept.read_text()) == data == {
        "checked_at": 1000, "trouble": True,
        "controls": {"NET-001": "pass", "NET-002": "pass", "NET-003": "fail"},
        "messages": [[operator.VPN_DOWN, {}]]}
    # Without the role's file: the link is still judged (default policy), NET-003 does not apply.
    data = netwatch.check(root=str(tmp_path / "none"), status_dir=str(tmp_path / "status"), now=1,
                          gather=lambda **kw: TETHERED)
    assert data["controls"] == {"NET-001": "fail", "NET-002": "pass", "NET-003": "not_applicable"}
    assert data["messages"] == [[operator.TETHERING, {}]]


def test_network_trouble_is_due_once_per_n_hours_and_never_at_night():
    trouble = {"trouble": True, "messages": [[operator.TETHERING, {}]]}
    (n,) = notify.due(None, [], lambda i: False, {}, CFG, NOW, local=DAY, network=trouble)
    assert n == ("network", notify.NETWORK_SUMMARY, None, {"lines": trouble["messages"]}, "normal")
    assert notify.due(None, [], lambda i: False, {"network": NOW - 60}, CFG, NOW, local=DAY,
                      network=trouble) == []
    assert notify.due(None, [], lambda i: False, {}, CFG, NOW, local=NIGHT, network=trouble) == []
    fine = {"trouble": False, "messages": [[operator.OK, {}]]}
    assert notify.due(None, [], lambda i: False, {}, CFG, NOW, local=DAY, network=fine) == []


def _hook(tmp_path, args, env=None):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("systemctl", "logger"):
        (bin_dir / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> {tmp_path}/calls\n')
        (bin_dir / tool).chmod(0o755)
    (tmp_path / "calls").unlink(missing_ok=True)
    subprocess.run(["sh", str(ROOT / "roles" / "endpoint_agent" / "files" / "deskguard-network-changed"), *args],
                   check=True, env={"PATH": f"{bin_dir}:/usr/bin:/bin", **(env or {})}, timeout=30)
    return (tmp_path / "calls").read_text().splitlines() if (tmp_path / "calls").exists() else []


@pytest.mark.parametrize("args, env, starts", [
    (["wg0", "down"], None, True), (["enx0", "up"], None, True), (["", "connectivity-change"], None, True),
    (["wg0", "vpn-down"], None, True), (["none", "hostname"], None, False), (["eth0", "pre-down"], None, False),
    ([], {"IFACE": "usb0", "STATE": "routable"}, True), ([], {"IFACE": "usb0", "STATE": "carrier"}, False),
])
def test_the_dispatcher_hook_starts_the_check_on_the_changes_that_matter(tmp_path, args, env, starts):
    calls = _hook(tmp_path, args, env)
    assert ("systemctl restart --no-block deskguard-network-check.service" in calls) is starts, calls


def test_the_role_installs_the_hooks_as_the_dispatchers_require():
    """NetworkManager-dispatcher(8): root's, executable, not group/other-writable; the same script for
    networkd-dispatcher's states."""
    tasks = (ROOT / "roles" / "endpoint_agent" / "tasks" / "linux.yml").read_text()
    for path in ("/etc/NetworkManager/dispatcher.d/90-deskguard-network",
                 "/etc/networkd-dispatcher/routable.d/90-deskguard-network",
                 "/etc/networkd-dispatcher/off.d/90-deskguard-network"):
        block = tasks.split(f"path: {path}\n", 1)[1].split("- path:", 1)[0]
        assert 'mode: "0755"' in block and "deskguard-network-changed" in block, block
    wanted = (ROOT / "roles" / "endpoint_agent" / "vars" / "main.yml").read_text()
    assert "- deskguard_operator_netwatch\n" in wanted and "- deskguard_network_judges\n" in wanted


def _notifier(tmp_path, box, lang, name):
    """The real deskguard-notify loop (its launcher's name, its main()), reading ``box`` instead of /var/lib."""
    launcher = tmp_path / name / "deskguard-notify"
    launcher.parent.mkdir()
    settings = tmp_path / "operator.json"
    launcher.write_text(f"""import sys
sys.path.insert(0, {str(ROOT / 'plugins' / 'module_utils')!r})
import deskguard_operator_status as s
s.STATUS_DIR, s.SETTINGS_PATH = {str(box)!r}, {str(settings)!r}
from deskguard_operator_notify import main
sys.exit(main())
""")
    env = dict(os.environ, LANG=lang, XDG_STATE_HOME=str(tmp_path / name / "state"))
    env.pop("LANGUAGE", None), env.pop("LC_ALL", None), env.pop("LC_MESSAGES", None)
    proc = subprocess.Popen([sys.executable, str(launcher)], env=env)
    for _ in range(1200):   # until it catches the wake signal, as the checker requires (slow on a busy host)
        if netwatch.catches_wake(Path(f"/proc/{proc.pid}/status").read_text()) or proc.poll() is not None:
            break
        time.sleep(0.1)
    assert netwatch.catches_wake(Path(f"/proc/{proc.pid}/status").read_text()), "the notifier never got ready"
    return proc


def _wait_for(session_bus, count):
    for _ in range(1200):
        got = session_bus()
        if len(got) >= count:
            return got
        time.sleep(0.1)
    return session_bus()


def test_a_network_change_reaches_running_notifiers_once_in_both_languages(session_bus, tmp_path):
    """The real loop of two operators' deskguard-notify on a real session bus: the check's wake makes each say
    the VPN trouble at once, in its language; a second change does not repeat it (the next thing due, an
    announcement, proves the loop did run)."""
    box = tmp_path / "status"
    (tmp_path / "operator.json").write_text(json.dumps({"quiet_hours": "", "notify_every_hours": 4}))
    procs = [_notifier(tmp_path, box, "ja_JP.UTF-8", "ja"), _notifier(tmp_path, box, "en_US.UTF-8", "en")]
    mine = {p.pid for p in procs}
    ours = lambda pid, sig: os.kill(pid, sig) if pid in mine else None   # noqa: E731 - never another's process
    try:
        assert session_bus() == []                     # nothing due at their start
        etc = tmp_path / "root" / "etc" / "deskguard"
        etc.mkdir(parents=True)
        (etc / "network-posture.json").write_text(json.dumps({"targets": TARGETS}))
        netwatch.check(root=str(tmp_path / "root"), status_dir=str(box), gather=lambda **kw: VPN_DOWN_NETWORK)
        assert mine <= set(netwatch.wake_notifiers(kill=ours))
        got = _wait_for(session_bus, 2)
        assert sorted((n["summary"], n["body"]) for n in got) == [
            ("Your network is not suitable for calls.", ("The company VPN is not connected. Please restart the "
                                                          "laptop; if that does not help, call the helpdesk.")),
            ("通話に適したネットワークではありません。",
             "会社のVPNに接続されていません。パソコンを再起動し、直らない場合はヘルプデスクに連絡してください。")], got
        assert all(n["app_name"] == "deskguard" and n["urgency"] == 1 for n in got)
        # A second change, still VPN down, with an announcement kept meanwhile: only the announcement comes.
        announcements.prepare(str(box))
        kept = {"id": "5d1c7d3e-2b6f-4c1e-8a54-3f2b1c0d9e88", "text": "お知らせ", "languages": [],
                "issued_at": "2026-12-06T00:00:00Z", "expires_at": "2099-01-01T00:00:00Z"}
        (box / "announcements" / f"{kept['id']}.json").write_text(json.dumps(kept, ensure_ascii=False))
        netwatch.check(root=str(tmp_path / "root"), status_dir=str(box), gather=lambda **kw: VPN_DOWN_NETWORK)
        netwatch.wake_notifiers(kill=ours)
        got = _wait_for(session_bus, 4)
        assert [n["body"] for n in got[2:]] == ["お知らせ", "お知らせ"], got
        assert all(p.poll() is None for p in procs)     # woken, not killed
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=10)


def test_only_a_waiting_notifier_is_signalled(tmp_path):
    """A notifier that does not catch the wake signal yet (starting up), or a --once run, is left alone: the
    signal would end it."""
    proc = tmp_path / "proc"
    for pid, argv, caught in (("11", ["/usr/bin/python3", "/usr/bin/deskguard-notify"], "0000000000000200"),
                               ("12", ["/usr/bin/python3", "/usr/bin/deskguard-notify"], "0000000000000000"),
                               ("13", ["/usr/bin/python3", "/usr/bin/deskguard-notify", "--once"], "0000000000000200"),
                               ("14", ["/usr/bin/sleep", "100"], "0000000000000200")):
        (proc / pid).mkdir(parents=True)
        (proc / pid / "cmdline").write_bytes("\0".join(argv).encode() + b"\0")
        (proc / pid / "status").write_text(f"Name:\tpython3\nSigBlk:\t0000000000000000\nSigCgt:\t{caught}\n")
    (proc / "self").mkdir()
    sent = []
    assert netwatch.wake_notifiers(str(proc), kill=lambda pid, sig: sent.append((pid, sig))) == [11]
    assert sent == [(11, netwatch.WAKE)]
