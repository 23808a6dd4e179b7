"""VPN-001..003 facts and verdicts (module_utils/deskguard_vpn_facts) and the gateway sync
(module_utils/deskguard_wg_gateway), from `wg show dump` text: the interface's private key is never kept."""

from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins" / "module_utils"))
import deskguard_vpn_facts as facts_mod  # noqa: E402
import deskguard_wg_gateway as gwmod  # noqa: E402

pytestmark = pytest.mark.unit


def key(n):
    return base64.b64encode(bytes([n]) * 32).decode()


PRIVATE, PUB, GW = key(9), key(1), key(2)
NOW = 1_800_000_000


def dump(peers):
    lines = [f"{PRIVATE}\t{PUB}\t0\toff"]
    for k, ips, hs in peers:
        lines.append(f"{k}\t(none)\t10.0.2.2:51820\t{ips}\t{hs}\t100\t200\t25")
    return "\n".join(lines) + "\n"


def fake_out(wg_dump, nft=None):
    def out(cmd):
        if cmd[:2] == ["wg", "show"]:
            return wg_dump
        if cmd[0] == "nft":
            return nft
        return None
    return out


def _gather(tmp_path, wg_dump, nft=None, mode=0o600):
    keyf, conf = tmp_path / "wg0.key", tmp_path / "wg0.conf"
    keyf.write_text(PRIVATE)
    keyf.chmod(mode)
    conf.write_text("[Interface]\n")
    f = facts_mod.gather("wg0", str(keyf), [str(conf)], "deskguard_vpn", now=NOW, out=fake_out(wg_dump, nft))
    assert PRIVATE not in json.dumps(f)
    return f


def test_tunnel_up_with_recent_handshake_is_compliant(tmp_path):
    f = _gather(tmp_path, dump([(GW, "10.77.0.0/24", NOW - 30)]))
    c = facts_mod.evaluate(f, {"gateway_public_key": GW, "public_key": PUB})
    assert [c[k]["state"] for k in ("VPN-001", "VPN-002", "VPN-003")] == ["compliant", "compliant", "not_applicable"]
    assert c["VPN-002"]["observed"]["latest_handshake_age"] == 30


@pytest.mark.parametrize("wg_dump, mode, expected, finding", [
    (None, 0o600, {"VPN-001": "noncompliant", "VPN-002": "noncompliant"}, "not up"),
    (dump([(GW, "10.77.0.0/24", 0)]), 0o600, {"VPN-001": "compliant", "VPN-002": "noncompliant"}, "no handshake"),
    (dump([(GW, "10.77.0.0/24", NOW - 600)]), 0o600, {"VPN-002": "noncompliant"}, "600 s ago"),
    (dump([(GW, "10.77.0.0/24", NOW - 5)]), 0o644, {"VPN-001": "noncompliant"}, "not 0600 root"),
    (dump([(key(7), "10.77.0.0/24", NOW - 5)]), 0o600, {"VPN-001": "noncompliant"}, "gateway is not a peer"),
])
def test_broken_tunnels_fail_with_a_reason(tmp_path, wg_dump, mode, expected, finding):
    c = facts_mod.evaluate(_gather(tmp_path, wg_dump, mode=mode), {"gateway_public_key": GW})
    for cid, state in expected.items():
        assert c[cid]["state"] == state, (cid, c[cid])
    assert finding in json.dumps(c)


def test_a_previous_key_left_on_the_laptop_fails_vpn_001(tmp_path):
    saved = tmp_path / "previous"
    saved.mkdir()
    (saved / "5").write_text(key(7))
    up = dump([(GW, "10.77.0.0/24", NOW - 30)])
    keyf, conf = tmp_path / "wg0.key", tmp_path / "wg0.conf"
    keyf.write_text(PRIVATE)
    keyf.chmod(0o600)
    conf.write_text("[Interface]\n")

    def gather(timer_active):
        out = fake_out(up)
        return facts_mod.gather("wg0", str(keyf), [str(conf)], "deskguard_vpn", now=NOW, saved_dir=str(saved),
                                out=lambda cmd: "active\n" if timer_active and cmd[0] == "systemctl" else out(cmd))

    left = gather(timer_active=False)
    assert key(7) not in json.dumps(left)
    c = facts_mod.evaluate(left, {"gateway_public_key": GW, "public_key": PUB})["VPN-001"]
    assert c["state"] == "noncompliant" and c["findings"] == [
        "a previous private key is still on the laptop (%s): no rollback needs it any more" % saved]
    # While the rollback timer runs, the copy is what it needs: no finding.
    pending = facts_mod.evaluate(gather(timer_active=True), {"gateway_public_key": GW, "public_key": PUB})
    assert pending["VPN-001"]["state"] == "compliant"


def test_kill_switch_verdict(tmp_path):
    table = "table inet deskguard_vpn {\n chain output {\n type filter hook output priority 0; ... reject\n }\n}"
    on = facts_mod.evaluate(_gather(tmp_path, dump([]), nft=table), {"gateway_public_key": GW, "kill_switch": True})
    off = facts_mod.evaluate(_gather(tmp_path, dump([]), nft=None), {"gateway_public_key": GW, "kill_switch": True})
    assert on["VPN-003"]["state"] == "compliant" and off["VPN-003"]["state"] == "noncompliant"


class FakeGateway:
    def __init__(self, peers):
        self.peers, self.synced = dict(peers), None

    def run(self, cmd):
        if cmd[:2] == ["wg", "show"]:
            return dump([(k, ",".join(v), NOW - 5) for k, v in self.peers.items()])
        if cmd[:2] == ["wg", "showconf"]:
            return f"[Interface]\nListenPort = 51820\nPrivateKey = {PRIVATE}\n\n[Peer]\nPublicKey = {key(60)}\n"
        if cmd[:2] == ["wg", "syncconf"]:
            self.synced = Path(cmd[3]).read_text()
            self.synced_mode = os.stat(cmd[3]).st_mode & 0o777
            new, cur = {}, None
            for line in self.synced.splitlines():
                if line.startswith("PublicKey = "):
                    cur = line.split(" = ")[1]
                    new[cur] = []
                elif line.startswith("AllowedIPs = ") and cur:
                    new[cur] = line.split(" = ")[1].split(", ")
            self.peers = new
            return ""
        raise AssertionError(cmd)


def test_gateway_sync_adds_ours_drops_revoked_and_keeps_foreign_peers(tmp_path):
    site_link = key(50)
    gw = FakeGateway({site_link: ["192.168.9.0/24"]})
    state, persist = str(tmp_path / "state.json"), str(tmp_path / "peers.conf")
    ours = [{"public_key": key(1), "allowed_ips": ["10.77.0.2/32"]}, {"public_key": key(3), "allowed_ips": ["10.77.0.3/32"]}]
    r = gwmod.sync("wg0", ours, state, persist, run=gw.run)
    assert r["changed"] and r["added"] == sorted([key(1), key(3)]) and r["kept_foreign"] == 1
    assert set(gw.peers) == {site_link, key(1), key(3)}
    # syncconf replaces the whole interface: its own key and port must be in the (0600, removed) sync file.
    assert gw.synced.startswith(f"[Interface]\nListenPort = 51820\nPrivateKey = {PRIVATE}\n\n[Peer]")
    assert gw.synced_mode == 0o600 and not list(tmp_path.glob(".deskguard-sync-*"))
    assert PRIVATE not in json.dumps(r) and PRIVATE not in Path(persist).read_text()
    assert not gwmod.sync("wg0", ours, state, persist, run=gw.run)["changed"]       # converged
    r = gwmod.sync("wg0", ours[:1], state, persist, run=gw.run)                      # key(3)'s laptop removed
    assert r["removed"] == [key(3)] and set(gw.peers) == {site_link, key(1)}
    assert Path(persist).read_text().count("[Peer]") == 1 and oct(os.stat(persist).st_mode)[-3:] == "600"


def test_gateway_check_mode_changes_nothing(tmp_path):
    gw = FakeGateway({})
    r = gwmod.sync("wg0", [{"public_key": key(1), "allowed_ips": ["10.77.0.2/32"]}], str(tmp_path / "s.json"),
                   "", check_mode=True, run=gw.run)
    assert r["changed"] and gw.synced is None and not (tmp_path / "s.json").exists()
