"""Enrolment tokens in the store (SQLite and PostgreSQL): hashed, counted, expiring, revocable, audited; an
enrolment registers the laptop, its keys and its VPN address in one transaction, or nothing."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from sitetools import downgrade_store
from sqlalchemy import text

from deskguard.errors import UsageError
from deskguard.store import EnrolmentRefused, EnrolmentRequest, Store
from deskguard.store.core import SCHEMA_HEAD, current_revision
from deskguard.store.models import EnrolmentToken

pytestmark = pytest.mark.unit
POOL = "10.77.0.0/24"
GW = ("10.77.0.1",)


def _agent_pem() -> str:
    from deskguard.site import module_utils

    proto = module_utils("deskguard_protocol")
    return proto.public_key_pem(proto.generate_private_key()).decode()


def _wg(i: int) -> str:
    import base64

    return base64.b64encode(bytes([i % 256]) * 32).decode()


def _req(token: str, hostname: str = "tokyo-001", *, pem: str | None = None, wg: str | None = None,
         approval: bool = False, operator: str | None = "tanaka", pool: str = POOL) -> EnrolmentRequest:
    return EnrolmentRequest(token=token, hostname=hostname, serial="PF3ABC12", operator=operator, os="debian",
                            os_version="13", agent_public_key=pem or _agent_pem(), wg_public_key=wg or _wg(7),
                            ssh_user="deskguard", pool=pool, reserved=GW, requires_approval=approval)


def test_the_token_is_shown_once_and_only_its_hash_is_stored(store, store_bytes):
    row, token = store.create_enrolment_token(uses=3, lifetime=dt.timedelta(days=7), operator="tanaka")
    assert token.startswith("dgenrol-") and len(token) == 51
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    held = store_bytes()
    assert token.encode() not in held and token[8:].encode() not in held
    assert row.to_dict()["state"] == "active" and "token_hash" not in row.to_dict()
    [entry] = [e for e in store.list_audit() if e.action == "enrolment.create"]
    assert token not in entry.detail and row.token_hash not in entry.detail
    assert entry.detail_obj["uses_allowed"] == 3 and entry.target == f"enrolment:{row.id}"


def test_an_enrolment_registers_the_laptop_its_keys_and_its_address_in_one_go(store):
    row, token = store.create_enrolment_token(uses=1)
    pem = _agent_pem()
    got = store.enrol_device(_req(token, pem=pem))
    assert not got.again
    d = store.require_device("tokyo-001")
    assert (d.state, d.serial, d.operator, d.ssh_user, d.address) == ("enrolled", "PF3ABC12", "tanaka", "deskguard",
                                                                      "10.77.0.2")
    assert d.agent_public_key == pem and d.enrolment_token_id == row.id
    assert store.vpn_peer(d.uuid).public_key == _wg(7)
    assert store.get_enrolment_token(row.id).uses == 1
    actions = [e.action for e in store.list_audit()]
    assert actions == ["enrolment.create", "vpn.allocate", "device.register", "agent.key", "vpn.key", "enrolment.use"]
    assert store.verify_audit() == (True, None)


def test_a_token_is_refused_past_its_count_expired_revoked_or_unknown(store):
    row, token = store.create_enrolment_token(uses=2)
    store.enrol_device(_req(token, "tokyo-001", wg=_wg(1)))
    store.enrol_device(_req(token, "tokyo-002", wg=_wg(2)))
    with pytest.raises(EnrolmentRefused) as e:
        store.enrol_device(_req(token, "tokyo-003", wg=_wg(3)))
    assert e.value.code == "used_up"
    assert store.get_device("tokyo-003") is None

    with pytest.raises(EnrolmentRefused) as e:
        store.enrol_device(_req("dgenrol-" + "x" * 43, "tokyo-004"))
    assert e.value.code == "unknown_token"

    row2, token2 = store.create_enrolment_token(uses=5)
    assert store.revoke_enrolment_token(row2.id, reason="lost in the post")[1] is True
    assert store.revoke_enrolment_token(row2.id)[1] is False          # once only, audited once
    with pytest.raises(EnrolmentRefused) as e:
        store.enrol_device(_req(token2, "tokyo-005"))
    assert e.value.code == "revoked"

    row3, token3 = store.create_enrolment_token(uses=5, lifetime=dt.timedelta(minutes=1))
    with store.transaction() as s:
        s.get(EnrolmentToken, row3.id).expires_at -= dt.timedelta(minutes=2)
    with pytest.raises(EnrolmentRefused) as e:
        store.enrol_device(_req(token3, "tokyo-006"))
    assert e.value.code == "expired"
    assert [d.hostname for d in store.list_devices()] == ["tokyo-001", "tokyo-002"]
    states = {r.id: r.state() for r in store.list_enrolment_tokens(include_closed=True)}
    assert states == {row.id: "used", row2.id: "revoked", row3.id: "expired"}
    assert store.list_enrolment_tokens() == []
    assert [e.action for e in store.list_audit()].count("enrolment.revoke") == 1


def test_the_same_laptop_asking_again_gets_its_enrolment_back_without_spending_a_use(store):
    row, token = store.create_enrolment_token(uses=1)
    pem = _agent_pem()
    first = store.enrol_device(_req(token, pem=pem))
    audit_before = len(store.list_audit())
    again = store.enrol_device(_req(token, pem=pem))
    assert again.again and again.device.uuid == first.device.uuid and again.peer.address == first.peer.address
    assert len(store.list_audit()) == audit_before and store.get_enrolment_token(row.id).uses == 1
    # The same device key under another name, or with another WireGuard key, is not "the same laptop".
    with pytest.raises(EnrolmentRefused) as e:
        store.enrol_device(_req(token, "tokyo-999", pem=pem))
    assert e.value.code == "key_in_use"
    with pytest.raises(EnrolmentRefused) as e:
        store.enrol_device(_req(token, pem=pem, wg=_wg(99)))
    assert e.value.code == "key_in_use"


def test_a_laptop_cannot_enrol_under_another_devices_hostname_or_outside_the_pattern(store):
    store.register_device("tokyo-001", "debian", "10.0.0.1", 22, "dgadmin", None)
    row, token = store.create_enrolment_token(uses=5, hostname_pattern="Tokyo-*")
    with pytest.raises(EnrolmentRefused) as e:
        store.enrol_device(_req(token, "tokyo-001"))
    assert e.value.code == "hostname_taken"
    with pytest.raises(EnrolmentRefused) as e:
        store.enrol_device(_req(token, "osaka-001"))
    assert e.value.code == "hostname_not_allowed"
    assert store.get_enrolment_token(row.id).uses == 0   # a refusal spends nothing
    assert store.vpn_peer(store.require_device("tokyo-001").uuid) is None


def test_the_tokens_operator_wins_and_a_bad_field_changes_nothing(store):
    _row, token = store.create_enrolment_token(uses=2, operator="sato")
    store.enrol_device(_req(token, "tokyo-001", operator="someone-else"))
    assert store.require_device("tokyo-001").operator == "sato"
    audit = len(store.list_audit())
    import dataclasses

    with pytest.raises(EnrolmentRefused):
        store.enrol_device(dataclasses.replace(_req(token, "tokyo-002", wg=_wg(3)), os="Not An OS"))
    assert store.get_device("tokyo-002") is None and len(store.list_audit()) == audit


def test_approval_keeps_the_laptop_pending_and_off_the_gateway_until_approved(store):
    from deskguard.vpn.gateway import peer_rows
    from deskguard.vpn.settings import VpnSettings

    _row, token = store.create_enrolment_token(uses=1)
    store.enrol_device(_req(token, approval=True))
    settings = VpnSettings(pool=POOL, gateway_address=GW[0], endpoint="vpn.example.com:51820",
                           gateway_public_key=_wg(1))
    assert store.require_device("tokyo-001").state == "pending"
    assert peer_rows(store, settings) == ([], ["tokyo-001"])
    device, changed = store.approve_device("tokyo-001")
    assert changed and device.state == "enrolled"
    assert store.approve_device("tokyo-001")[1] is False
    assert [p["hostname"] for p in peer_rows(store, settings)[0]] == ["tokyo-001"]
    store.register_device("lt-9", "debian", "10.0.0.9", 22, "dgadmin", None)
    with pytest.raises(UsageError, match="not waiting for approval"):
        store.approve_device("lt-9")
    assert [e.action for e in store.list_audit()].count("device.approve") == 1


def test_two_laptops_racing_for_the_last_use_one_wins(store):
    """Threads, one store object each: the token row is locked (PostgreSQL) or the write lock held (SQLite)."""
    import threading

    _row, token = store.create_enrolment_token(uses=1)
    outcomes = []

    def go(i):
        with Store(store.url, run_migrations=False) as other:
            try:
                other.enrol_device(_req(token, f"tokyo-{i:03d}", wg=_wg(i)))
                outcomes.append("ok")
            except EnrolmentRefused as exc:
                outcomes.append(exc.code)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["ok"] + ["used_up"] * 5
    assert len(store.list_devices()) == 1


def test_bad_token_parameters_are_refused(store):
    for kwargs in ({"uses": 0}, {"uses": 10_001}, {"lifetime": dt.timedelta(seconds=5)},
                   {"lifetime": dt.timedelta(days=400)}, {"hostname_pattern": "tokyo;rm"}):
        with pytest.raises(UsageError):
            store.create_enrolment_token(**kwargs)
    assert store.list_enrolment_tokens(include_closed=True) == []


def test_0007_to_head_keeps_devices_and_adds_the_token_table(site):
    with Store.open(site, create=True) as s:
        s.register_device("lt-1", "debian", "10.0.0.1", 22, "dgadmin", None)
        downgrade_store(s, "0007")
        assert current_revision(s.engine) == "0007"
    with Store.open(site) as s:
        assert current_revision(s.engine) == SCHEMA_HEAD
        d = s.require_device("lt-1")
        assert d.serial is None and d.enrolment_token_id is None
        with s.reading() as session:
            assert session.execute(text("SELECT count(*) FROM enrolment_tokens")).scalar() == 0
