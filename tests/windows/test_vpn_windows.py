"""The vpn role's Windows path against the loopback responder: WireGuard for Windows through the same
controller step as Linux (address from the store, key made on the laptop, only the public key back), and the
IKEv2 alternative. Golden files pin the invocations; whether Windows does it is not verified here."""

from __future__ import annotations

import base64
import json

import pytest
from test_golden import assert_golden

pytestmark = pytest.mark.windows
GW = base64.b64encode(bytes(range(32))).decode()
LAPTOP = base64.b64encode(bytes([7]) * 32).decode()
VPN = {"vpn_enabled": True, "vpn_endpoint": "vpn.example.com:51820", "vpn_gateway_public_key": GW,
       "vpn_pool": "10.77.0.0/24", "vpn_kill_switch": True, "vpn_tunnel": "full"}
ANSWER = {"changed": True, "public_key": LAPTOP, "files": ["C:\\ProgramData\\deskguard\\wireguard\\wg0.conf"],
          "controls": {"VPN-001": {"state": "compliant", "findings": []},
                       "VPN-003": {"state": "compliant", "findings": []}}}


def test_wireguard_for_windows_matches_golden_and_records_the_public_key(responder, play, enc_site):
    from deskguard.store import Store

    responder.answers["deskguard_wireguard"] = ANSWER
    play("role.yml", deskguard_test_role="vpn", deskguard_device_uuid=enc_site[1], **VPN)
    assert_golden("vpn", responder.calls)
    (call,) = [c for c in responder.calls if c.short == "deskguard_wireguard"]
    assert call.args["address"] == "10.77.0.2" and call.args["allowed_ips"] == ["0.0.0.0/0", "::/0"]
    assert not any("private" in k for k in call.args)   # nothing secret goes to the laptop, it makes its own
    with Store.open(enc_site[0]) as store:
        assert store.vpn_peer(enc_site[1]).public_key == LAPTOP


def test_a_bad_key_from_windows_fails_the_play_and_is_not_recorded(responder, play, enc_site):
    from deskguard.store import Store

    responder.answers["deskguard_wireguard"] = {**ANSWER, "public_key": "garbage"}
    proc = play("role.yml", expect_rc=2, deskguard_test_role="vpn", deskguard_device_uuid=enc_site[1], **VPN)
    assert "32 bytes in base64" in proc.stdout
    with Store.open(enc_site[0]) as store:
        assert store.vpn_peer(enc_site[1]).public_key is None


def test_ikev2_uses_the_builtin_client_and_matches_golden(responder, play, enc_site):
    play("role.yml", deskguard_test_role="vpn", vpn_windows_client="ikev2",
         vpn_windows_ikev2_server="vpn.example.com", **VPN)
    assert_golden("vpn_ikev2", responder.calls)
    (call,) = responder.calls
    assert call.short == "win_powershell" and "Add-VpnConnection" in call.args["script"]
    assert json.dumps(call.args["parameters"]) == json.dumps({"Name": "deskguard-wg0", "Server": "vpn.example.com",
                                                              "Split": False})
