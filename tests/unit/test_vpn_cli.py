"""`deskguard vpn gateway-config|list|rotate` as an admin runs them: exactly the enrolled peers, clear errors."""

from __future__ import annotations

import base64
import json

import pytest
from test_devices import deskguard, one_line_error

pytestmark = pytest.mark.unit
GW = base64.b64encode(bytes(range(32))).decode()


def key(n):
    return base64.b64encode(bytes([n]) * 32).decode()


@pytest.fixture
def site(site):
    """A site whose policy names a gateway, with three laptops: two enrolled, one removed after enrolling
    (on each store backend)."""
    tmp_path = site
    from deskguard.site.inventory import ensure_hosts_file, register_and_add
    from deskguard.store import Store

    ensure_hosts_file(tmp_path)
    policy = tmp_path / "inventory" / "group_vars" / "all"
    policy.mkdir(parents=True)
    (policy / "policy.yml").write_text(f"vpn_pool: 10.77.0.0/24\nvpn_endpoint: 10.0.2.2:51820\n"
                                       f"vpn_gateway_public_key: '{GW}'\nvpn_gateway_listen_port: 51999\n")
    with Store.open(tmp_path, create=True) as store:
        for i, name in enumerate(["lt-a", "lt-b", "lt-gone"]):
            dev, _ = register_and_add(tmp_path, store, name, os="debian", address=f"10.8.0.{i + 2}", port=22,
                                      ssh_user="dgadmin", operator=None)
            peer = store.allocate_vpn_address(dev.uuid, "10.77.0.0/24", reserved=["10.77.0.1"])
            store.set_vpn_public_key(peer.id, key(i + 1))
        store.remove_device("lt-gone")
    return tmp_path


def test_gateway_config_contains_exactly_the_enrolled_peers(site):
    proc = deskguard("vpn", "gateway-config", "--format", "json", site=site)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert [(p["hostname"], p["public_key"], p["allowed_ips"]) for p in data["peers"]] == [
        ("lt-a", key(1), ["10.77.0.2/32"]), ("lt-b", key(2), ["10.77.0.3/32"])]
    assert data["listen_port"] == 51999 and data["gateway_address"] == "10.77.0.1"
    out = site / "gw" / "wg0.conf"
    proc = deskguard("vpn", "gateway-config", "--output", str(out), site=site)
    assert proc.returncode == 0 and "2 peer(s)" in proc.stderr
    text = out.read_text()
    assert text.count("[Peer]") == 2 and key(3) not in text and "PrivateKey =" not in text
    # Deterministic: an unchanged fleet exports the same bytes (so a gateway push is a no-op).
    assert deskguard("vpn", "gateway-config", site=site).stdout == text


def test_list_shows_addresses_and_revoked_with_all(site):
    proc = deskguard("vpn", "list", site=site)
    assert proc.returncode == 0 and "lt-a" in proc.stdout and "lt-gone" not in proc.stdout
    rows = json.loads(deskguard("vpn", "list", "--all", "--json", site=site).stdout)
    assert {r["hostname"]: r["state"] for r in rows} == {"lt-a": "active", "lt-b": "active", "lt-gone": "revoked"}


def test_bad_policy_and_unknown_host_are_one_line_errors(site):
    bad = site / "bad.yml"
    bad.write_text("vpn_pool: 10.77.0.0/24\nvpn_endpoint: nowhere\nvpn_gateway_public_key: x\n")
    one_line_error(deskguard("vpn", "gateway-config", "--policy", str(bad), site=site), 2)
    bad.write_text(f"vpn_pool: 10.77.0.0/24\nvpn_endpoint: gw:51820\nvpn_gateway_public_key: '{GW}'\nvpn_mtu: 9000\n")
    proc = deskguard("vpn", "gateway-config", "--policy", str(bad), site=site)
    one_line_error(proc, 2)
    assert "vpn_mtu 9000 is out of range" in proc.stderr
    one_line_error(deskguard("vpn", "rotate", "nosuch", site=site), 2)


def test_the_limit_names_the_gateways_only_when_the_inventory_has_them(site):
    from deskguard.site.inventory import add_host
    from deskguard.vpn.gateway import limit_with_gateways

    assert limit_with_gateways(site, "lt-a") == "lt-a"      # no group: no "could not match" warning
    add_host(site, "gw-1", {"ansible_host": "192.0.2.10"}, group="vpn_gateways")
    assert limit_with_gateways(site, "lt-a") == "lt-a,vpn_gateways"


def test_removing_an_enrolled_device_says_the_peer_is_revoked_and_what_to_run(site):
    proc = deskguard("devices", "remove", "lt-a", "--yes", site=site)
    assert proc.returncode == 0, proc.stderr
    assert "VPN peer 10.77.0.2 revoked" in proc.stdout and "deskguard vpn push-gateway" in proc.stdout
    peers = json.loads(deskguard("vpn", "gateway-config", "--format", "json", site=site).stdout)["peers"]
    assert [p["hostname"] for p in peers] == ["lt-b"]
