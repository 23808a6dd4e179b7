"""Controller side of the agent (cli/deskguard/orders/agent.py): the agent's configuration, the device key registered,
and an acknowledgement given through playbooks/wipe.yml recorded exactly as the server would - or refused."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from deskguard.orders import agent
from deskguard.errors import UsageError
from deskguard.site import module_utils

pytestmark = pytest.mark.unit
P = module_utils("deskguard_protocol")
LUKS = "3b2e8d4a-1c5f-4e7a-9b0d-6f8e2a4c1d3b"


@pytest.fixture
def device(store):
    dev = store.register_device("lt-1", "debian", "10.0.0.1", 22, "dgadmin", "tanaka")
    store.set_device_state("lt-1", "onboarded")
    secret = store.add_secret(dev.uuid, "luks-recovery", f"luks:{LUKS}:2", b"sealed", state="pending")
    store.set_secret_state(secret.id, "active", fingerprint="f" * 64, verified=True)
    return dev


@pytest.fixture
def device_key(store, device):
    key = P.generate_private_key()
    assert agent.register_public_key(store, device.uuid, P.public_key_pem(key).decode()) is True
    assert agent.register_public_key(store, device.uuid, P.public_key_pem(key).decode()) is False
    return key


def _queued(store, device, action="wipe"):
    keep = {LUKS: ["f" * 64]} if action == "lock" else None
    payload = P.build_order(device.uuid, action, [LUKS], keep_keyslots=keep)
    store.create_order(device.uuid, payload, P.sign(payload, P.generate_private_key()).decode(), reason="lost")
    return payload


def test_config_pins_the_device_and_the_escrowed_slots(store, device):
    text = agent.config(device_uuid=device.uuid, installed_at="2026-11-29T00:00:00Z", orders_url="https://o/x",
                        server_url="https://s", order_public_key="PEM", escrowed=agent.escrowed_keyslots(store, device.uuid),
                        deadman_days=5)
    cfg = json.loads(text)
    assert cfg["escrowed_keyslots"] == {LUKS: ["f" * 64]} and cfg["deadman_days"] == 5
    assert cfg["device_key"] == "/etc/deskguard-agent/device.key" and "private" not in text.lower()
    with pytest.raises(UsageError, match="endpoint_agent_server_url"):
        agent.config(device_uuid="u", installed_at="t", orders_url="https://o", server_url="ftp://s",
                     order_public_key="P", escrowed={})
    assert cfg["order_fetch"] == "signed" and cfg["allow_http"] is False


def test_plain_http_and_unknown_fetch_modes_are_refused_unless_a_lab_says_so():
    args = dict(device_uuid="u", installed_at="t", server_url="https://s", order_public_key="P", escrowed={})
    with pytest.raises(UsageError, match="plain HTTP.*lab only"):
        agent.config(orders_url="http://o", **args)
    assert json.loads(agent.config(orders_url="http://o", allow_http=True, **args))["allow_http"] is True
    with pytest.raises(UsageError, match="signed or static"):
        agent.config(orders_url="https://o", order_fetch="anyone", **args)


def test_no_escrow_means_no_dead_man_keep_set(store):
    dev = store.register_device("lt-2", "debian", "10.0.0.2", 22, "dgadmin", None)
    assert agent.escrowed_keyslots(store, dev.uuid) == {}


def test_only_a_p256_public_key_is_accepted_from_the_laptop():
    pem = P.public_key_pem(P.generate_private_key()).decode()
    assert agent.check_device_public_key(pem) == pem
    for bad in (None, "", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"):
        with pytest.raises(UsageError):
            agent.check_device_public_key(bad)


def test_an_acknowledgement_from_the_playbook_is_recorded_like_the_servers(store, device, device_key):
    payload = _queued(store, device)
    ack = P.sign(P.build_ack(payload, "accepted"), device_key)
    out = agent.record_ack(store, device.uuid, ack.decode())
    assert out == {"order_id": payload["order_id"], "status": "accepted", "reason": None, "changed": True,
                   "order_state": "acknowledged"}
    assert store.get_device("lt-1").state == "wiping" and store.live_secrets(device.uuid) == []


def test_a_refusal_from_the_playbook_closes_the_order(store, device, device_key):
    payload = _queued(store, device, "lock")
    out = agent.record_ack(store, device.uuid, P.sign(P.build_ack(payload, "refused", "foreign_volumes"), device_key))
    assert out["status"] == "refused" and out["order_state"] == "refused"
    assert len(store.live_secrets(device.uuid)) == 1


@pytest.mark.parametrize("case", ["other_key", "no_key", "late", "other_device"])
def test_a_bad_acknowledgement_changes_nothing(store, device, device_key, case):
    payload = _queued(store, device)
    signer, now, uuid = device_key, None, device.uuid
    if case == "other_key":
        signer = P.generate_private_key()
    if case == "late":
        now = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
    if case == "other_device":
        uuid = store.register_device("lt-3", "debian", "10.0.0.3", 22, "dgadmin", None).uuid
        store.set_agent_public_key(uuid, P.public_key_pem(device_key).decode())
    if case == "no_key":
        uuid = store.register_device("lt-4", "debian", "10.0.0.4", 22, "dgadmin", None).uuid
    with pytest.raises(UsageError):
        agent.record_ack(store, uuid, P.sign(P.build_ack(payload, "accepted"), signer), now=now)
    assert store.get_order(payload["order_id"]).state == "queued"
    assert len(store.live_secrets(device.uuid)) == 1
