"""The controller's enrolment order with a fake laptop: one module call, the address from the store, only the
public key recorded, the management guard."""

from __future__ import annotations

import base64
import json

import pytest

from deskguard.vpn import enrol
from deskguard.vpn.gateway import peer_rows, render
from deskguard.vpn.settings import VpnSettingsError, from_policy

pytestmark = pytest.mark.unit
GW = base64.b64encode(bytes(range(32))).decode()
POLICY = {"vpn_pool": "10.77.0.0/24", "vpn_endpoint": "10.0.2.2:51820", "vpn_gateway_public_key": GW}


def laptop_key(n):
    return base64.b64encode(bytes([n]) * 32).decode()


class FakeLaptop:
    """Answers deskguard_wireguard like the module: a key per rotation, changed only when args differ."""

    def __init__(self, n=1):
        self.n, self.calls, self.applied = n, [], None

    def __call__(self, module, args):
        self.calls.append((module, args))
        if args["rotate"]:
            self.n += 1
        changed = args != self.applied or args["rotate"]
        self.applied = args
        return {"changed": changed, "public_key": laptop_key(self.n), "rollback_armed": bool(args["rollback_seconds"]),
                "controls": {"VPN-001": {"state": "compliant", "findings": []},
                             "VPN-002": {"state": "noncompliant", "findings": ["no handshake"]},
                             "VPN-003": {"state": "not_applicable", "findings": []}}}


def _req(dev, mode="apply", address="10.0.2.15", policy=POLICY):
    return enrol.Request(device_uuid=dev.uuid, hostname=dev.hostname, settings=from_policy(policy), mode=mode,
                         management_address=address)


def test_enrol_once_then_converged_then_rotate(store):
    dev = store.register_device("lt-1", "debian", "10.0.2.15", 22, "dgadmin", None)
    laptop = FakeLaptop()
    out = enrol.run(store, laptop, _req(dev))
    assert out.changed and out.address == "10.77.0.2" and len(laptop.calls) == 1
    assert laptop.calls[0][1]["allowed_ips"] == ["10.77.0.0/24"] and laptop.calls[0][1]["rollback_seconds"] == 0
    assert store.vpn_peer(dev.uuid).public_key == laptop_key(1)
    assert out.controls["VPN-001"]["state"] == "applied" and "VPN-002" not in out.controls
    again = enrol.run(store, laptop, _req(dev))
    assert not again.changed and again.controls["VPN-001"]["state"] == "compliant" and len(laptop.calls) == 2
    rotated = enrol.run(store, laptop, _req(dev, mode="rotate"))
    assert rotated.changed and store.vpn_peer(dev.uuid).public_key == laptop_key(2)
    assert rotated.address == "10.77.0.2"
    assert [e.action for e in store.list_audit(target="lt-1")][-3:] == ["vpn.allocate", "vpn.key", "vpn.key"]


def test_a_laptop_reporting_a_bad_key_is_refused_and_not_recorded(store):
    dev = store.register_device("lt-1", "debian", "10.0.2.15", 22, "dgadmin", None)

    def bad(module, args):
        return {"changed": True, "public_key": "not-a-key"}
    with pytest.raises(VpnSettingsError, match="public key reported by the laptop"):
        enrol.run(store, bad, _req(dev))
    assert store.vpn_peer(dev.uuid).public_key is None


def test_managed_through_the_tunnel_arms_the_rollback_and_refuses_a_pool_move(store):
    dev = store.register_device("lt-1", "debian", "10.77.0.2", 22, "dgadmin", None)
    laptop = FakeLaptop()
    out = enrol.run(store, laptop, _req(dev, address="10.77.0.2"))
    assert out.management_over_vpn and laptop.calls[0][1]["rollback_seconds"] == 300 and out.rollback_armed
    moved = {**POLICY, "vpn_pool": "10.78.0.0/24"}
    with pytest.raises(enrol.VpnRefused, match="would cut that path"):
        enrol.run(store, laptop, _req(dev, address="10.77.0.2", policy=moved))
    assert store.vpn_peer(dev.uuid).pool == "10.77.0.0/24" and len(laptop.calls) == 1


def test_rotating_a_laptop_managed_through_its_tunnel_is_refused_before_it_is_touched(store):
    """Found on the VM (issue 22's drop-shipped laptop): the laptop restarted its tunnel on the new key before
    its answer could come back through that tunnel."""
    dev = store.register_device("lt-1", "debian", "10.77.0.2", 22, "dgadmin", None)
    laptop = FakeLaptop()
    enrol.run(store, laptop, _req(dev, address="10.77.0.2"))
    with pytest.raises(enrol.VpnRefused, match="manages this laptop through its tunnel .10.77.0.2.; a new key would cut"):
        enrol.run(store, laptop, _req(dev, mode="rotate", address="10.77.0.2"))
    assert len(laptop.calls) == 1 and store.vpn_peer(dev.uuid).public_key == laptop_key(1)


def test_check_mode_of_a_new_laptop_touches_neither_store_nor_laptop(store):
    dev = store.register_device("lt-1", "debian", "10.0.2.15", 22, "dgadmin", None)
    laptop = FakeLaptop()
    out = enrol.run(store, laptop, _req(dev, mode="check"))
    assert out.changed and laptop.calls == [] and store.vpn_peer(dev.uuid) is None


def test_gateway_config_lists_exactly_the_enrolled_peers_in_every_format(store):
    s = from_policy(POLICY)
    devs = [store.register_device(f"lt-{i}", "debian", "10.0.2.15", 22, "dgadmin", None) for i in range(3)]
    for i, d in enumerate(devs[:2]):
        enrol.run(store, FakeLaptop(i + 1), _req(d))
    store.allocate_vpn_address(devs[2].uuid, s.pool, reserved=[s.gateway_address])   # key not reported yet
    peers, pending = peer_rows(store, s)
    assert [p["hostname"] for p in peers] == ["lt-0", "lt-1"] and pending == ["lt-2"]
    data = json.loads(render("json", s, peers, pending))
    assert [(p["public_key"], p["allowed_ips"]) for p in data["peers"]] == [
        (laptop_key(1), ["10.77.0.2/32"]), (laptop_key(2), ["10.77.0.3/32"])]
    wgq = render("wg-quick", s, peers, pending)
    assert wgq.count("[Peer]") == 2 and "ListenPort = 51820" in wgq and "Address = 10.77.0.1/24" in wgq
    assert "PrivateKey" not in wgq
    nd = render("networkd", s, peers, pending)
    assert nd.count("[WireGuardPeer]") == 2 and "PrivateKeyFile = /etc/systemd/network/wg0.key" in nd
    store.remove_device("lt-0")
    peers, _ = peer_rows(store, s)
    assert [p["hostname"] for p in peers] == ["lt-1"]


def test_the_implementation_is_passed_down_and_userspace_is_said_every_run(store):
    """Never silently on wireguard-go: the policy's choice goes to the laptop, and a userspace tunnel is a
    VPN-001 finding of every run (containers; kernels without the module)."""
    dev = store.register_device("lt-1", "debian", "10.0.2.15", 22, "dgadmin", None)
    laptop = FakeLaptop()

    def userspace(module, args):
        return {**laptop(module, args), "implementation": "userspace",
                "implementation_reason": "no WireGuard kernel module (vpn_implementation: auto)"}
    req = _req(dev)
    req.implementation = "userspace"
    out = enrol.run(store, userspace, req)
    assert laptop.calls[0][1]["implementation"] == "userspace" and out.implementation == "userspace"
    note = "userspace WireGuard (wireguard-go): no WireGuard kernel module (vpn_implementation: auto)"
    assert out.controls["VPN-001"]["findings"] == [note] and note in out.notes
    again = enrol.run(store, userspace, req)
    assert not again.changed and again.controls["VPN-001"]["findings"] == [note]
    kernel = enrol.run(store, laptop, _req(dev))
    assert kernel.controls["VPN-001"]["findings"] == [] and kernel.notes == []
