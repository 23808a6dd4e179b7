"""module_utils/deskguard_wireguard(_apply): the laptop's key, files and kill switch, with the real `wg`,
`wg-quick strip` and `nft -c` of this machine; systemd is faked (no systemd here, no kernel module)."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins" / "module_utils"))
import deskguard_wireguard as wgu  # noqa: E402
import deskguard_wireguard_apply as wga  # noqa: E402

pytestmark = pytest.mark.unit
GW = base64.b64encode(bytes(range(32))).decode()


class FakeSystem:
    """Real wg/wg-quick/nft; systemctl and friends recorded. `fail_restart` makes the tunnel not come up."""

    def __init__(self):
        self.cmds, self.fail_restart, self.units_ok = [], False, False

    def run(self, cmd, stdin=None):
        self.cmds.append(cmd)
        if cmd[0] in ("wg", "wg-quick", "nft") and cmd[:2] != ["wg", "show"]:
            return wgu._run(cmd, stdin)
        if self.fail_restart and cmd[:2] == ["systemctl", "restart"] and cmd[2].startswith("wg-quick@"):
            raise wgu.WireGuardError("wg-quick@wg0 failed")
        return ""

    def probe(self, cmd):
        self.cmds.append(cmd)
        return 0 if self.units_ok else 3


@pytest.fixture
def env(tmp_path):
    paths = wgu.Paths("wg0", config_dir=str(tmp_path / "etc/wireguard"), state_dir=str(tmp_path / "var/vpn"),
                      nm_dir=str(tmp_path / "etc/nm"), unit_dir=str(tmp_path / "etc/systemd"),
                      nft_dir=str(tmp_path / "etc/deskguard"))
    params = {"interface": "wg0", "address": "10.77.0.2", "gateway_public_key": GW, "endpoint": "10.0.2.2:51820",
              "allowed_ips": ["10.77.0.0/24"], "dns": [], "mtu": 1420, "keepalive": 25, "kill_switch": False,
              "kill_switch_captive_ports": ["53/udp", "80/tcp"], "management_networks": ["10.0.2.0/24"],
              "rotate": False, "rollback_seconds": 0}
    return paths, params, FakeSystem(), tmp_path


def _converge(env, **changes):
    paths, params, sysm, _ = env
    return wga.converge({**params, **changes}, paths, run=sysm.run, probe=sysm.probe, backend="wg-quick")


def _all_text(root):
    return "".join(p.read_text(errors="replace") for p in Path(root).rglob("*") if p.is_file())


def test_key_made_here_0600_and_never_in_config_result_or_commands(env):
    paths, _params, sysm, root = env
    res = _converge(env)
    private = Path(paths.key).read_text().strip()
    assert stat.S_IMODE(os.stat(paths.key).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(paths.config_dir).st_mode) == 0o700
    assert res["changed"] and res["key_created"]
    assert res["public_key"] == subprocess.run(["wg", "pubkey"], input=private, text=True, capture_output=True).stdout.strip()
    conf = Path(paths.conf).read_text()
    assert "PostUp = wg set %i private-key " + paths.key in conf and "AllowedIPs = 10.77.0.0/24" in conf
    # The private key is in exactly one file (the key file and its backup copy are the only places).
    holders = [p for p in Path(root).rglob("*") if p.is_file() and private in p.read_text(errors="replace")]
    assert holders == [Path(paths.key)]
    assert private not in json.dumps(res) and private not in json.dumps(sysm.cmds)
    assert ["systemctl", "restart", "wg-quick@wg0"] in sysm.cmds


def test_second_run_changes_nothing_and_a_policy_change_is_applied(env):
    paths, _params, sysm, _ = env
    first = _converge(env)
    sysm.units_ok = True
    again = _converge(env)
    assert not again["changed"] and again["public_key"] == first["public_key"] and not again["files"]
    mtu = _converge(env, mtu=1380)
    assert mtu["changed"] and mtu["files"] == [paths.conf] and "MTU = 1380" in Path(paths.conf).read_text()
    assert mtu["public_key"] == first["public_key"]


def test_rotation_makes_a_new_key_and_keeps_the_old_for_the_rollback_only(env):
    paths, _params, sysm, _ = env
    first = _converge(env)
    old = Path(paths.key).read_text()
    sysm.units_ok = True
    rot = _converge(env, rotate=True)
    assert rot["changed"] and rot["public_key"] != first["public_key"]
    backups = [p.read_text() for p in Path(paths.backup_dir).iterdir()]
    assert old in backups and stat.S_IMODE(os.stat(paths.backup_dir).st_mode) == 0o700


def test_tunnel_that_does_not_come_up_puts_the_old_config_back(env):
    paths, _params, sysm, _ = env
    _converge(env)
    before = Path(paths.conf).read_text()
    sysm.fail_restart = True
    with pytest.raises(wgu.WireGuardError, match="previous configuration is back"):
        _converge(env, address="10.77.0.9")
    assert Path(paths.conf).read_text() == before


def test_invalid_config_is_refused_before_anything_is_replaced(env):
    paths, _params, sysm, _ = env
    _converge(env)
    before = Path(paths.conf).read_text()
    with pytest.raises(wgu.WireGuardError, match="nft -c"):
        _converge(env, kill_switch=True, kill_switch_captive_ports=["53/bogus"])
    assert Path(paths.conf).read_text() == before and not os.path.exists(paths.nft)


def test_kill_switch_file_validates_and_keeps_management_and_replies(env):
    paths, _params, sysm, _ = env
    res = _converge(env, kill_switch=True)
    nft = Path(paths.nft).read_text()
    assert res["changed"] and ["nft", "-c", "-f"] == [c for c in sysm.cmds if c[0] == "nft"][0][:3]
    for rule in ("ct state established,related accept", 'oifname "wg0" accept', "ip daddr 10.0.2.2 udp dport 51820 accept",
                 "ip daddr 10.0.2.0/24 accept", "udp dport 53 accept", "tcp dport 80 accept", "reject"):
        assert rule in nft, rule
    assert "deskguard-vpn-killswitch" in Path(paths.unit).name
    off = _converge(env, kill_switch=False)
    assert off["changed"] and not os.path.exists(paths.nft) and not os.path.exists(paths.unit)


def test_rollback_timer_is_armed_before_the_change_when_managed_through_the_tunnel(env):
    paths, _params, sysm, _ = env
    res = _converge(env, rollback_seconds=300)
    arm = next(i for i, c in enumerate(sysm.cmds) if c[0] == "systemd-run")
    restart = sysm.cmds.index(["systemctl", "restart", "wg-quick@wg0"])
    assert res["rollback_armed"] and arm < restart
    script = Path(paths.state_dir, "rollback.sh").read_text()
    assert "systemctl disable --now wg-quick@wg0" in script   # nothing before: the rollback removes the tunnel


def test_check_mode_changes_nothing(env):
    paths, params, sysm, root = env
    res = wga.converge(params, paths, check_mode=True, run=sysm.run, probe=sysm.probe, backend="wg-quick")
    assert res["changed"] and not any(Path(root).rglob("*.key")) and not os.path.exists(paths.conf)


def test_networkmanager_keyfile_is_0600_and_has_the_tunnel(env):
    paths, params, sysm, _ = env
    _converge(env)
    private = Path(paths.key).read_text().strip()
    text = wgu.render_nm({**params, "dns": ["10.77.0.1", "corp.example"]}, private)
    assert "type=wireguard" in text and "[wireguard-peer.%s]" % GW in text and "allowed-ips=10.77.0.0/24;" in text
    assert "dns=10.77.0.1;" in text and "dns-search=corp.example;" in text and "address1=10.77.0.2/32" in text
    files = wga.desired_files(params, paths, "networkmanager", sysm.run)
    assert files[paths.nm][1] == 0o600 and files[paths.conf][0] is None
