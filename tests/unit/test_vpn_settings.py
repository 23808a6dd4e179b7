"""Bad VPN policy values are refused with one clear message before anything changes."""

from __future__ import annotations

import base64

import pytest

from deskguard.vpn.settings import VpnSettingsError, check_endpoint, check_public_key, from_policy

pytestmark = pytest.mark.unit
GW = base64.b64encode(bytes(range(32))).decode()
GOOD = {"vpn_pool": "10.77.0.0/24", "vpn_endpoint": "vpn.example.com:51820", "vpn_gateway_public_key": GW,
        "vpn_management_networks": ["10.8.0.0/16"]}


def test_good_policy_defaults_gateway_to_first_address_and_split_tunnel():
    s = from_policy(GOOD)
    assert s.gateway_address == "10.77.0.1" and s.laptop_allowed_ips() == ["10.77.0.0/24"]
    full = from_policy({**GOOD, "vpn_tunnel": "full"})
    assert full.laptop_allowed_ips() == ["0.0.0.0/0", "::/0"]
    split = from_policy({**GOOD, "vpn_allowed_ips": ["192.168.50.0/24"]})
    assert split.laptop_allowed_ips() == ["10.77.0.0/24", "192.168.50.0/24"]


@pytest.mark.parametrize("change, message", [
    ({"vpn_pool": "10.77.0.0/31"}, "too small"),
    ({"vpn_pool": "10.77.0.0/30", "vpn_gateway_address": ""}, None),   # 2 hosts: gateway + one laptop is allowed
    ({"vpn_pool": "10.77.0.5/24"}, "invalid vpn_pool"),                  # host bits set: a typo, not a pool
    ({"vpn_pool": "10.8.4.0/24"}, "overlaps the management network 10.8.0.0/16"),
    ({"vpn_endpoint": "vpn.example.com"}, "invalid VPN endpoint"),
    ({"vpn_endpoint": "vpn.example.com:70000"}, "port must be 1..65535"),
    ({"vpn_endpoint": "bad host:51820"}, "invalid VPN endpoint"),
    ({"vpn_endpoint": "[2001:db8::zz]:51820"}, "invalid VPN endpoint"),
    ({"vpn_gateway_public_key": "abc"}, "32 bytes in base64"),
    ({"vpn_gateway_public_key": base64.b64encode(bytes(31)).decode() + "AAA="}, "32 bytes in base64"),
    ({"vpn_mtu": 1500}, "vpn_mtu 1500 is out of range: 1280..1420"),
    ({"vpn_mtu": 1000}, "out of range"),
    ({"vpn_mtu": "big"}, "must be a number"),
    ({"vpn_gateway_address": "10.99.0.1"}, "not in vpn_pool"),
    ({"vpn_interface": "a-very-long-interface"}, "invalid vpn_interface"),
    ({"vpn_tunnel": "half"}, "split or full"),
    ({"vpn_keepalive": -1}, "out of range"),
])
def test_bad_values_are_refused_clearly(change, message):
    if message is None:
        assert from_policy({**GOOD, **change}).pool == change["vpn_pool"]
        return
    with pytest.raises(VpnSettingsError, match=message):
        from_policy({**GOOD, **change})


def test_public_key_must_be_32_bytes_of_base64():
    assert check_public_key(GW) == GW
    for bad in ["", GW[:-1], GW + "A", "!" * 44, base64.b64encode(bytes(33)).decode()[:44]]:
        with pytest.raises(VpnSettingsError):
            check_public_key(bad)


def test_endpoints():
    assert check_endpoint("203.0.113.5:51820") == ("203.0.113.5", 51820)
    assert check_endpoint("[2001:db8::5]:51820") == ("2001:db8::5", 51820)
    assert check_endpoint("vpn.example.com:443") == ("vpn.example.com", 443)
