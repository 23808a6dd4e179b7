"""VPN on a laptop container (issue 6, "lab laptops (container and VM)"): the container shares this machine's
kernel, which has no WireGuard module, so the role must choose userspace wireguard-go on /dev/net/tun — and
say so — or refuse when the policy demands the kernel. The gateway is wireguard-go in the `dgvpn-ct` namespace,
one more host on the lab bridge (the lab's service address 2: 10.213.0.2 in the default lab). One onboarding
(module scope), then: the tunnel carries a ping, the gateway lists exactly the enrolled peer, a second run
changes nothing, rotation changes the key and the tunnel comes back, removal stops the handshakes, and the
private key is nowhere but on the laptop."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from deskguard.lab import network
from deskguard.lab.access import run_ssh as ssh
from sitetools import onboard_lab

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "vm"))
import labgateway  # noqa: E402

pytestmark = pytest.mark.container
HOST = "lap-ct1"
OUTPUTS: list[str] = []


def deskguard(site, *args):
    from sitetools import run_deskguard

    proc = run_deskguard(site, *args, timeout=600)
    OUTPUTS.append(proc.stdout + proc.stderr)
    return proc


@pytest.fixture(scope="module")
def laptop(lab_container):
    return lab_container.hosts["lab-ct1"]


@pytest.fixture(scope="module")
def gateway(lab_container):
    gw = labgateway.start_on_bridge()
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def site(make_site, gateway):
    # The controller reaches the containers from its bridge, and manages them through the tunnel from there.
    return labgateway.use_in_site(make_site(management=network.lab_network()), gateway, network.lab_network())


def onboard(site, laptop):
    proc, out = onboard_lab(site, HOST, laptop, run=deskguard)
    assert out is not None, proc.stderr[-3000:]
    return proc, out


def peers(site) -> list[dict]:
    return json.loads(deskguard(site, "vpn", "gateway-config", "--format", "json").stdout)["peers"]


def ping_gateway(laptop) -> bool:
    r = ssh(laptop, "sudo ping -c 3 -W 3 10.77.0.1 >/dev/null; echo rc=$?")
    return r.stdout.strip().endswith("rc=0")


def laptop_key(laptop) -> str:
    """Read on the laptop only to prove it appears nowhere else (never printed)."""
    return ssh(laptop, "sudo cat /etc/wireguard/wg0.key").stdout.strip()


def test_a_kernel_only_policy_is_refused_here_and_no_tunnel_is_made(site, laptop, gateway):
    """Never a silent fallback: the container's kernel has no WireGuard module, so `vpn_implementation: kernel`
    stops the VPN step with one message, before any VPN file or key exists on the laptop."""
    policy = site / "inventory" / "group_vars" / "all" / "policy.yml"
    good = policy.read_text()
    try:
        policy.write_text(good + "\nvpn_implementation: kernel\n")
        proc, out = onboard(site, laptop)
    finally:
        policy.write_text(good)
    assert proc.returncode != 0, out
    assert any("vpn_implementation is kernel, but this laptop's kernel has no WireGuard module" in m
               and "nothing was changed" in m for m in out["messages"]), out["messages"]
    r = ssh(laptop, "sudo ls -A /etc/wireguard /etc/systemd/system/wg-quick@wg0.service.d 2>&1; "
                    "ip link show wg0 2>&1; systemctl is-enabled wg-quick@wg0 2>&1; true")
    assert "wg0.key" not in r.stdout and "wg0.conf" not in r.stdout and "deskguard-userspace" not in r.stdout
    assert 'Device "wg0" does not exist' in r.stdout and "disabled" in r.stdout, r.stdout
    assert gateway.peers() == []


@pytest.fixture(scope="module")
def enrolled(site, laptop, gateway):
    started = time.monotonic()
    proc, out = onboard(site, laptop)
    print(f"onboard with VPN on a container: {time.monotonic() - started:.0f} s, "
          f"{out.get('module_calls')} module calls")
    assert proc.returncode == 0, (proc.stderr[-3000:], out)
    return out


def test_onboard_enrols_with_wireguard_go_says_so_and_the_tunnel_carries_a_ping(site, laptop, gateway, enrolled):
    rows = {c["control"]: c for c in enrolled["controls"]}
    assert rows["VPN-001"]["state"] == "applied" and rows["VPN-003"]["state"] == "applied", enrolled
    assert "userspace WireGuard (wireguard-go): no WireGuard kernel module (vpn_implementation: auto)" \
        in rows["VPN-001"]["findings"], rows["VPN-001"]
    listed = peers(site)
    assert [(p["hostname"], p["address"]) for p in listed] == [(HOST, "10.77.0.2")]
    assert gateway.peers() == [listed[0]["public_key"]]        # the onboarding pushed the gateway
    wg_quick = deskguard(site, "vpn", "gateway-config", "--format", "wg-quick").stdout
    assert wg_quick.count("[Peer]") == 1 and f"PublicKey = {listed[0]['public_key']}" in wg_quick
    assert ping_gateway(laptop)
    r = ssh(laptop, "sudo stat -c '%a %U' /etc/wireguard/wg0.key; sudo wg show wg0 public-key; "
                    "pgrep -x wireguard-go >/dev/null && echo wireguard-go-runs; "
                    "cat /etc/systemd/system/wg-quick@wg0.service.d/deskguard-userspace.conf; "
                    "sudo test -S /var/run/wireguard/wg0.sock && echo uapi-socket")
    lines = r.stdout.splitlines()
    assert lines[0] == "600 root" and lines[1] == listed[0]["public_key"], r.stdout
    assert "wireguard-go-runs" in lines and "uapi-socket" in lines, r.stdout
    assert "Environment=WG_QUICK_USERSPACE_IMPLEMENTATION=wireguard-go" in r.stdout
    handshake = gateway.handshakes()[listed[0]["public_key"]]
    assert time.time() - handshake < 60, handshake


def test_second_run_changes_nothing(site, laptop, enrolled):
    proc, out = onboard(site, laptop)
    assert proc.returncode == 0, (proc.stderr[-3000:], out)
    assert out["changed_tasks"] == 0, out
    vpn1 = next(c for c in out["controls"] if c["control"] == "VPN-001")
    # Met, and said with its note every run: a container has no WireGuard kernel module, so wireguard-go runs.
    assert vpn1["state"] == "passes with a warning", vpn1
    assert any(f.startswith("userspace WireGuard (wireguard-go)") for f in vpn1["findings"]), vpn1


def test_rotation_changes_the_key_and_the_tunnel_comes_back(site, laptop, gateway, enrolled):
    before = peers(site)[0]
    old_private = laptop_key(laptop)
    proc = deskguard(site, "vpn", "rotate", HOST, "--json")
    assert proc.returncode == 0, OUTPUTS[-1][-3000:]
    row = json.loads(proc.stdout)
    assert row["state"] == "rotated" and row["address"] == "10.77.0.2" and row["public_key"] != before["public_key"]
    assert gateway.peers() == [row["public_key"]]
    assert ping_gateway(laptop)
    new_private = laptop_key(laptop)
    assert new_private != old_private
    # No rollback timer here (management runs outside the tunnel): the old key's saved copy is gone at once.
    saved = ssh(laptop, "sudo ls -A /var/lib/deskguard/vpn/previous 2>&1; true").stdout
    assert "No such file" in saved, saved
    _assert_private_keys_nowhere(site, laptop, [old_private, new_private])


def test_removing_the_device_stops_its_handshakes(site, laptop, gateway, enrolled):
    key = peers(site)[0]["public_key"]
    assert deskguard(site, "devices", "remove", HOST, "--yes").returncode == 0, OUTPUTS[-1]
    assert peers(site) == []
    assert deskguard(site, "vpn", "push-gateway").returncode == 0, OUTPUTS[-1][-3000:]
    assert key not in gateway.peers() and key not in gateway.handshakes()
    assert not ping_gateway(laptop)                             # its handshakes no longer get an answer
    assert gateway.peers() == [] and key not in gateway.handshakes()


def _assert_private_keys_nowhere(site, laptop, keys):
    site_bytes = b"".join(p.read_bytes() for p in site.rglob("*") if p.is_file())
    journal = ssh(laptop, "sudo journalctl -o short --no-pager; true").stdout
    assert "deskguard_wireguard" in journal       # the grep means something: the module calls are logged
    for k in keys:
        assert len(k) == 44
        assert k.encode() not in site_bytes
        assert k not in journal
        assert not any(k in o for o in OUTPUTS)
