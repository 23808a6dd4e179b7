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
import deskguard_wireguard_impl as wgi  # noqa: E402

pytestmark = pytest.mark.unit
GW = base64.b64encode(bytes(range(32))).decode()


class FakeSystem:
    """Real wg/wg-quick/nft; systemctl and friends recorded. `fail_restart` makes the tunnel not come up.
    `kernel`: the laptop's kernel has the WireGuard module; otherwise a restart of wg-quick@ starts "wireguard-go"
    (its UAPI socket appears in `uapi_dir`) unless `userspace_runs` is off (wg-quick fell back to something else)."""

    def __init__(self, uapi_dir=None):
        self.cmds, self.fail_restart, self.units_ok, self.timer_active = [], False, False, False
        self.kernel, self.wireguard_go, self.tun, self.userspace_runs = True, True, True, True
        self.uapi_dir = uapi_dir

    def laptop(self):
        return wgi.Laptop(kernel_module=self.kernel, userspace_binary="/usr/bin/wireguard-go" if self.wireguard_go
                          else "", tun=self.tun)

    def run(self, cmd, stdin=None):
        self.cmds.append(cmd)
        if cmd[0] in ("wg", "wg-quick", "nft") and cmd[:2] != ["wg", "show"]:
            return wgu._run(cmd, stdin)
        if cmd[:2] == ["systemctl", "restart"] and cmd[2].startswith("wg-quick@"):
            if self.fail_restart:
                raise wgu.WireGuardError("wg-quick@wg0 failed")
            sock = Path(self.uapi_dir, "wg0.sock")
            if not self.kernel and self.userspace_runs:
                sock.parent.mkdir(parents=True, exist_ok=True)
                sock.touch()
            else:
                sock.unlink(missing_ok=True)
        return ""

    def probe(self, cmd):
        self.cmds.append(cmd)
        if cmd[-1].endswith("-rollback.timer"):
            return 0 if self.timer_active else 3
        return 0 if self.units_ok else 3


@pytest.fixture
def env(tmp_path):
    paths = wgu.Paths("wg0", config_dir=str(tmp_path / "etc/wireguard"), state_dir=str(tmp_path / "var/vpn"),
                      nm_dir=str(tmp_path / "etc/nm"), unit_dir=str(tmp_path / "etc/systemd"),
                      nft_dir=str(tmp_path / "etc/deskguard"), uapi_dir=str(tmp_path / "run/wireguard"))
    params = {"interface": "wg0", "address": "10.77.0.2", "gateway_public_key": GW, "endpoint": "10.0.2.2:51820",
              "allowed_ips": ["10.77.0.0/24"], "dns": [], "mtu": 1420, "keepalive": 25, "kill_switch": False,
              "kill_switch_captive_ports": ["53/udp", "80/tcp"], "management_networks": ["10.0.2.0/24"],
              "rotate": False, "rollback_seconds": 0}
    return paths, params, FakeSystem(paths.uapi_dir), tmp_path


def _converge(env, **changes):
    paths, params, sysm, _ = env
    return wga.converge({**params, **changes}, paths, run=sysm.run, probe=sysm.probe, backend="wg-quick",
                        laptop=sysm.laptop())


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
    rot = _converge(env, rotate=True, rollback_seconds=300)
    sysm.timer_active = True
    assert rot["changed"] and rot["public_key"] != first["public_key"]
    backups = [p.read_text() for p in Path(paths.backup_dir).iterdir()]
    assert old in backups and stat.S_IMODE(os.stat(paths.backup_dir).st_mode) == 0o700
    # The rollback timer, when it fires, puts the old key back and then deletes the saved copies.
    script = Path(paths.state_dir, "rollback.sh").read_text().splitlines()
    assert script[-1] == "rm -rf %s" % paths.backup_dir


def _holders(root, secret):
    return [p for p in Path(root).rglob("*") if p.is_file() and secret in p.read_text(errors="replace")]


def test_without_a_rollback_timer_the_old_key_is_deleted_at_once(env):
    paths, _params, sysm, root = env
    _converge(env)
    old = Path(paths.key).read_text().strip()
    sysm.units_ok = True
    _converge(env, rotate=True)
    assert _holders(root, old) == [] and not os.path.exists(paths.backup_dir)


def test_a_leftover_old_key_is_deleted_by_the_next_run_once_no_timer_needs_it(env):
    paths, _params, sysm, root = env
    _converge(env)
    old = Path(paths.key).read_text().strip()
    sysm.units_ok = True
    _converge(env, rotate=True, rollback_seconds=300)
    sysm.timer_active = True       # the guard has not confirmed yet: the rollback may still need it
    assert not _converge(env)["changed"] and _holders(root, old)
    sysm.timer_active = False      # the timer is gone (fired, or stopped without the clean-up)
    assert not _converge(env)["changed"] and _holders(root, old) == []


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
    res = wga.converge(params, paths, check_mode=True, run=sysm.run, probe=sysm.probe, backend="wg-quick",
                       laptop=sysm.laptop())
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


# -- kernel module or userspace wireguard-go (container laptops share a host kernel without the module) --------

def test_kernel_laptop_gets_no_userspace_dropin_and_says_kernel(env):
    paths, _params, _sysm, _ = env
    res = _converge(env)
    assert (res["implementation"], res["implementation_reason"]) == ("kernel", "the kernel has the WireGuard module")
    assert not os.path.exists(paths.dropin)


def test_without_the_kernel_module_auto_runs_wireguard_go_explicitly_and_converges(env):
    paths, _params, sysm, _ = env
    sysm.kernel = False
    res = _converge(env)
    assert res["changed"] and res["implementation"] == "userspace"
    assert "no WireGuard kernel module" in res["implementation_reason"]
    dropin = Path(paths.dropin)
    assert dropin.parent.name == "wg-quick@wg0.service.d"
    assert "Environment=WG_QUICK_USERSPACE_IMPLEMENTATION=wireguard-go" in dropin.read_text()
    sysm.units_ok = True
    again = _converge(env)
    assert not again["changed"] and again["implementation"] == "userspace", again
    sysm.kernel = True   # the laptop got a kernel with the module: the drop-in goes, the tunnel restarts
    back = _converge(env)
    assert back["changed"] and paths.dropin in back["files"] and not dropin.exists()


@pytest.mark.parametrize("setup, requested, backend, message", [
    ({"kernel": False}, "kernel", "wg-quick", "vpn_implementation is kernel, but this laptop's kernel has no"),
    ({"kernel": True}, "userspace", "wg-quick", "wg-quick always uses it"),
    ({"kernel": False, "wireguard_go": False}, "auto", "wg-quick", "wireguard-go is not installed"),
    ({"kernel": False, "tun": False}, "userspace", "wg-quick", "/dev/net/tun is missing"),
    ({"kernel": False}, "auto", "networkmanager", "set vpn_backend: wg-quick"),
])
def test_an_implementation_the_laptop_cannot_run_is_refused_and_nothing_changes(env, setup, requested, backend,
                                                                                 message):
    paths, params, sysm, root = env
    for k, v in setup.items():
        setattr(sysm, k, v)
    with pytest.raises(wgu.WireGuardError, match="nothing was changed") as exc:
        wga.converge({**params, "implementation": requested}, paths, run=sysm.run, probe=sysm.probe,
                     backend=backend, laptop=sysm.laptop())
    assert message in str(exc.value) and "\n" not in str(exc.value)
    assert not any(p.is_file() for p in Path(root).rglob("*")) and sysm.cmds == []


def test_a_tunnel_up_on_another_implementation_than_chosen_is_undone(env):
    """wg-quick's own silent fallback (or a kernel that lost its module) is caught: previous files back."""
    paths, _params, sysm, _ = env
    sysm.kernel, sysm.userspace_runs = False, False
    with pytest.raises(wgu.WireGuardError, match="came up on the kernel implementation, not the userspace"):
        _converge(env)
    assert not os.path.exists(paths.conf) and not os.path.exists(paths.dropin)
    assert ["systemctl", "disable", "--now", "wg-quick@wg0"] in sysm.cmds


def test_adding_the_kill_switch_to_a_running_tunnel_does_not_restart_the_tunnel(env):
    """A laptop enrolled at home has the tunnel its first boot made; onboarding, through that tunnel, adds the
    kill switch. Restarting wg-quick then cut the connection running the play (the lab VM under TCG: the next
    task's sudo answered after Ansible's timeout, the laptop "unreachable"). Only the kill switch restarts."""
    paths, _params, sysm, _ = env
    first = _converge(env)
    sysm.units_ok = True
    sysm.cmds.clear()
    res = _converge(env, kill_switch=True)
    assert res["changed"] and paths.conf not in res["files"] and res["public_key"] == first["public_key"]
    assert ["systemctl", "restart", wga.KILL_SWITCH_UNIT] in sysm.cmds
    assert ["systemctl", "restart", "wg-quick@wg0"] not in sysm.cmds
    # A change of the tunnel's own file still restarts it.
    sysm.cmds.clear()
    _converge(env, kill_switch=True, mtu=1380)
    assert ["systemctl", "restart", "wg-quick@wg0"] in sysm.cmds
