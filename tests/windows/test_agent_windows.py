"""The endpoint_agent role's Windows path against the loopback responder: the same controller step as Linux
(configuration with the pinned order key and device UUID, key made on the laptop, only the public key back and
registered in the store), and the PowerShell agent's protocol pieces pinned by golden files. Whether Windows
runs them is not verified here (docs/agent.md)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_golden import assert_golden

pytestmark = pytest.mark.windows
REPO = Path(__file__).resolve().parents[2]
AGENT = {"endpoint_agent_enabled": True, "endpoint_agent_orders_url": "https://orders.example.com/o",
         "endpoint_agent_server_url": "https://deskguard.example.com", "endpoint_agent_interval_minutes": 30}


def _device_pem():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


@dataclass
class _Pinned:
    """A recorded call with file contents replaced by their digest: the golden file pins which files go where
    and the task settings, the syntax gate and the script's own golden digest pin the content."""
    module: str
    args: dict
    check_mode: bool = False
    no_log: bool = False


def _pinned(calls):
    out = []
    for c in calls:
        args = json.loads(json.dumps(c.args))
        for f in args.get("files", []):
            text = f.pop("content")
            if f["path"].endswith("agent.json"):
                f["content"] = json.loads(text)
                f["content"]["device_uuid"] = "<device uuid>"
                f["content"]["installed_at"] = "<enrolment time>"
                f["content"]["order_public_key"] = "<order public key>"
            else:
                f["sha256"] = hashlib.sha256(text.encode()).hexdigest()
        out.append(_Pinned(c.module, args, c.check_mode, c.no_log))
    return out


def test_windows_agent_matches_golden_and_registers_the_device_key(responder, play, enc_site):
    from deskguard.store import Store

    pem = _device_pem()
    responder.answers["deskguard_agent_install_windows"] = {"changed": True, "key_created": True, "files": [],
                                                     "public_key": pem}
    play("role.yml", deskguard_test_role="endpoint_agent", deskguard_device_uuid=enc_site[1], **AGENT)
    (call,) = [c for c in responder.calls if c.short == "deskguard_agent_install_windows"]
    files = {f["path"]: f for f in call.args["files"]}
    script = files["C:\\ProgramData\\deskguard\\agent\\deskguard-agent.ps1"]["content"]
    assert script == (REPO / "roles/endpoint_agent/files/deskguard-agent.ps1").read_text()
    cfg = json.loads(files["C:\\ProgramData\\deskguard\\agent\\agent.json"]["content"])
    assert cfg["device_uuid"] == enc_site[1] and cfg["device_key"] == "deskguard-agent-device"
    from deskguard.agent import order_public_pem

    assert cfg["order_public_key"] == order_public_pem(enc_site[0])
    assert call.args["windows_task"] == {"agent_path": "C:\\ProgramData\\deskguard\\agent\\deskguard-agent.ps1",
                                         "interval_minutes": 30, "boot_delay_seconds": 90, "jitter_seconds": 300}
    assert not any("private" in k for k in call.args)       # the laptop makes its own key
    assert_golden("endpoint_agent", _pinned(responder.calls))
    with Store.open(enc_site[0]) as store:
        assert store.get_agent_public_key(enc_site[1]).strip() == pem.strip()


def test_a_bad_device_key_from_windows_fails_the_play_and_is_not_registered(responder, play, enc_site):
    from deskguard.store import Store

    responder.answers["deskguard_agent_install_windows"] = {"changed": True, "public_key": "-----BEGIN nonsense"}
    proc = play("role.yml", expect_rc=2, deskguard_test_role="endpoint_agent", deskguard_device_uuid=enc_site[1],
                **AGENT)
    assert "no valid device public key" in proc.stdout
    with Store.open(enc_site[0]) as store:
        assert store.get_agent_public_key(enc_site[1]) is None


def test_the_agent_refuses_to_install_without_urls(responder, play, enc_site):
    proc = play("role.yml", expect_rc=2, deskguard_test_role="endpoint_agent", deskguard_device_uuid=enc_site[1],
                endpoint_agent_enabled=True)
    assert "endpoint_agent needs endpoint_agent_orders_url" in proc.stdout
    assert responder.calls == []


def test_the_powershell_agent_speaks_the_protocol():
    """What can be checked without Windows: the script uses the P1363 form .NET produces (SignData/VerifyData
    on ECDsaCng with SHA-256), the protocol's key id, its size limits and refusal words, and the WMI bridge call
    the design names."""
    import sys

    sys.path.insert(0, str(REPO / "plugins" / "module_utils"))
    import deskguard_protocol as proto

    text = (REPO / "roles/endpoint_agent/files/deskguard-agent.ps1").read_text()
    for needle in ("ECDsaCng", "CngAlgorithm]::Sha256", ".VerifyData($payloadBytes, $signature)", ".SignData($body)",
                   "Substring(0, 16)", "root\\cimv2\\mdm\\dmmap", "'MDM_RemoteWipe'", "'doWipeProtectedMethod'",
                   "manage-bde.exe -forcerecovery C:", "$OrderLimit = %d" % proto.LIMITS["order"],
                   "$SkewSeconds = %d" % proto.CLOCK_SKEW_SECONDS, "'deskguard/1'"):
        assert needle in text, needle
    words = {w for w in proto.REASONS if "'%s'" % w in text}
    assert words >= {"oversized", "malformed", "unknown_key", "bad_signature", "foreign_device", "foreign_volumes",
                     "expired", "not_yet_valid", "replayed", "unsupported"}
