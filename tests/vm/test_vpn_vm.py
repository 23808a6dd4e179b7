"""VPN end to end on the laptop VM (real kernel WireGuard, wg-quick, nftables kill switch) against the lab
gateway: userspace wireguard-go in the `dgvpn-gw` namespace on the controller, reached through qemu's user
network. One onboarding (module scope), then: the tunnel carries a ping, the gateway lists exactly the enrolled
peer, a second run changes nothing, rotation changes the key and the tunnel comes back, removal stops the
handshakes, and the laptop's private key is nowhere but on the laptop."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from deskguard.lab import vm
from sitetools import onboard_lab
from deskguard.lab.state import LabState

sys.path.insert(0, str(Path(__file__).resolve().parent))
import labgateway  # noqa: E402

pytestmark = pytest.mark.vm
HOST = "lap-vm1"
OUTPUTS: list[str] = []


def deskguard(site, *args):
    from sitetools import run_deskguard

    proc = run_deskguard(site, *args)
    OUTPUTS.append(proc.stdout + proc.stderr)
    return proc


@pytest.fixture(scope="module")
def gateway():
    gw = labgateway.start()
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def laptop(lab_laptop):
    return LabState.load().hosts["lab-vm1"]


@pytest.fixture(scope="module")
def site(make_site, gateway):
    return labgateway.use_in_site(make_site(management="10.0.2.0/24"), gateway, "10.0.2.0/24")


def onboard(site, laptop):
    proc, out = onboard_lab(site, HOST, laptop, run=deskguard)
    assert out is not None, proc.stderr
    return proc, out


def ping_gateway(laptop):
    r = vm.ssh(laptop, "ping -c 3 -W 5 10.77.0.1 >/dev/null; echo rc=$?", timeout=120)
    return r.stdout.strip().endswith("rc=0")


def laptop_key(laptop) -> str:
    """Read on the laptop only to prove it appears nowhere else (never printed)."""
    return vm.ssh(laptop, "sudo cat /etc/wireguard/wg0.key", timeout=60).stdout.strip()


@pytest.fixture(scope="module")
def enrolled(site, laptop, gateway):
    started = time.monotonic()
    proc, out = onboard(site, laptop)
    print(f"onboard with VPN: {time.monotonic() - started:.0f} s")
    assert proc.returncode == 0, (proc.stderr[-3000:], out)
    return out


def test_onboard_enrols_the_laptop_and_the_tunnel_carries_a_ping(site, laptop, gateway, enrolled):
    states = {c["control"]: c["state"] for c in enrolled["controls"]}
    assert states["VPN-001"] == "applied" and states["VPN-003"] == "applied", enrolled
    peers = json.loads(deskguard(site, "vpn", "gateway-config", "--format", "json").stdout)["peers"]
    assert [(p["hostname"], p["address"]) for p in peers] == [(HOST, "10.77.0.2")]
    assert gateway.peers() == [peers[0]["public_key"]]          # the onboarding pushed the gateway
    assert ping_gateway(laptop)
    r = vm.ssh(laptop, "sudo stat -c '%a %U' /etc/wireguard/wg0.key; sudo wg show wg0 public-key; "
                       "ping -c 1 -W 2 192.0.2.1 >/dev/null 2>&1; sudo nft list table inet deskguard_vpn", timeout=120)
    lines = r.stdout.splitlines()
    assert lines[0] == "600 root" and lines[1] == peers[0]["public_key"], r.stdout
    # The kill switch rejected the ping outside the tunnel (its counter moved) while SSH kept working.
    rejected = [line for line in lines if "reject" in line and "counter packets" in line]
    assert rejected and "counter packets 0 " not in rejected[0], r.stdout


def test_facts_module_judges_vpn_001_to_003_read_only(site, laptop, gateway, enrolled):
    """The read-only module the nightly check will use: one round trip, nothing changed."""
    import os
    import subprocess

    from deskguard.site import KIT_ROOT

    peer = json.loads(deskguard(site, "vpn", "gateway-config", "--format", "json").stdout)["peers"][0]
    assert ping_gateway(laptop)   # traffic, so the handshake is fresh
    args = json.dumps({"gateway_public_key": gateway.public_key, "public_key": peer["public_key"], "kill_switch": True})
    env = {**os.environ, "ANSIBLE_CONFIG": str(KIT_ROOT / "ansible.cfg"), "DESKGUARD_SITE": str(site)}
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible"), HOST, "-i", str(site / "inventory" / "hosts.yml"),
                           "-m", "deskguard_vpn_facts", "-a", args, "-o"], capture_output=True, text=True, env=env,
                          timeout=300)
    OUTPUTS.append(proc.stdout + proc.stderr)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(proc.stdout.split("=>", 1)[1])
    assert result["changed"] is False
    assert {k: v["state"] for k, v in result["controls"].items()} == {
        "VPN-001": "compliant", "VPN-002": "compliant", "VPN-003": "compliant"}, result


def test_second_run_changes_nothing(site, laptop, enrolled):
    proc, out = onboard(site, laptop)
    assert proc.returncode == 0, (proc.stderr[-3000:], out)
    assert out["changed_tasks"] == 0, out
    assert {c["control"]: c["state"] for c in out["controls"]}["VPN-001"] == "already compliant", out


def test_rotation_changes_the_key_and_the_tunnel_comes_back(site, laptop, gateway, enrolled):
    before = json.loads(deskguard(site, "vpn", "gateway-config", "--format", "json").stdout)["peers"][0]
    old_private = laptop_key(laptop)
    proc = deskguard(site, "vpn", "rotate", HOST, "--json")
    assert proc.returncode == 0, OUTPUTS[-1][-3000:]
    row = json.loads(proc.stdout)
    assert row["state"] == "rotated" and row["address"] == "10.77.0.2" and row["public_key"] != before["public_key"]
    assert gateway.peers() == [row["public_key"]]
    assert ping_gateway(laptop)
    new_private = laptop_key(laptop)
    assert new_private != old_private
    _assert_private_keys_nowhere(site, laptop, [old_private, new_private])


def test_removing_the_device_stops_its_handshakes(site, laptop, gateway, enrolled):
    key = json.loads(deskguard(site, "vpn", "gateway-config", "--format", "json").stdout)["peers"][0]["public_key"]
    assert deskguard(site, "devices", "remove", HOST, "--yes").returncode == 0, OUTPUTS[-1]
    assert json.loads(deskguard(site, "vpn", "gateway-config", "--format", "json").stdout)["peers"] == []
    assert deskguard(site, "vpn", "push-gateway").returncode == 0, OUTPUTS[-1][-3000:]
    assert key not in gateway.peers() and key not in gateway.handshakes()
    assert not ping_gateway(laptop)                               # its handshakes no longer get an answer
    assert key not in gateway.handshakes()


def _assert_private_keys_nowhere(site, laptop, keys):
    site_bytes = b"".join(p.read_bytes() for p in site.rglob("*") if p.is_file())
    journal = vm.ssh(laptop, "sudo journalctl -o short --no-pager; true", timeout=180).stdout
    assert "deskguard_wireguard" in journal       # the grep means something: the module calls are logged
    for k in keys:
        assert len(k) == 44
        assert k.encode() not in site_bytes
        assert k not in journal
        assert not any(k in o for o in OUTPUTS)
