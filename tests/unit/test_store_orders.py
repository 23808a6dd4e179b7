"""Orders, agent keys and check-ins in the store (revision 0005): every order transition audited in its own
transaction, secrets destroyed when a wipe is acknowledged, never "done" without an ack, check-ins replaced
atomically and never by an older one, and the 0004 -> 0005 upgrade."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sitetools import downgrade_store

from deskguard.errors import UsageError
from deskguard.site import module_utils
from deskguard.store import (CheckinReplayed, DeviceNotFound, OrderNotFound, OrderStateError, Store, VerifiedCheckin,
                             volume_of)
from deskguard.store.core import SCHEMA_HEAD, StoreError, current_revision

pytestmark = pytest.mark.unit
P = module_utils("deskguard_protocol")
LUKS = "3b2e8d4a-1c5f-4e7a-9b0d-6f8e2a4c1d3b"


@pytest.fixture
def device(store):
    dev = store.register_device("lt-1", "debian", "10.0.0.1", 22, "dgadmin", "tanaka")
    store.set_device_state("lt-1", "onboarded")
    store.add_secret(dev.uuid, "luks-recovery", f"luks:{LUKS}:1", b"sealed", state="active")
    return dev


@pytest.fixture(scope="module")
def order_key():
    return P.generate_private_key()


def _queue(store, device, order_key, action="wipe", **kw):
    keep = {LUKS: ["a" * 64]} if action == "lock" else None
    payload = P.build_order(device.uuid, action, [LUKS], keep_keyslots=keep, **kw)
    env = P.sign(payload, order_key).decode()
    return store.create_order(device.uuid, payload, env, reason="lost on the train", ticket="INC-1"), payload


def _actions(store, since=0):
    return [e.action for e in store.list_audit()[since:]]


def test_wipe_order_queued_acknowledged_destroys_secrets_then_done(store, device, order_key):
    before = len(store.list_audit())
    order, payload = _queue(store, device, order_key)
    assert order.state == "queued" and store.get_device("lt-1").state == "wipe-pending"
    assert _actions(store, before) == ["device.state", "order.wipe"]

    with pytest.raises(OrderStateError):  # never done without an ack
        store.complete_order(order.id, "impatient")

    mark = len(store.list_audit())
    got, changed = store.acknowledge_order(order.id, device_uuid=device.uuid, nonce=payload["nonce"],
                                           status="accepted", actor="agent:lt-1")
    assert changed and got.state == "acknowledged" and got.acknowledged_at is not None
    assert store.get_device("lt-1").state == "wiping"
    assert [s.state for s in store.list_secrets(device.uuid)] == ["destroyed"]
    assert store.list_secrets(device.uuid)[0].ciphertext is None
    assert _actions(store, mark) == ["order.acknowledged", "device.state", "secret.destroy"]

    # The agent retries when it missed our 200: nothing changes, nothing is audited.
    mark = len(store.list_audit())
    assert store.acknowledge_order(order.id, device_uuid=device.uuid, nonce=payload["nonce"],
                                   status="accepted")[1] is False
    assert len(store.list_audit()) == mark

    done = store.complete_order(order.id[:8], "silent after the wipe")
    assert done.state == "done" and store.get_device("lt-1").state == "wiped"
    assert store.verify_audit() == (True, None)


def test_refused_ack_restores_the_device_and_keeps_secrets(store, device, order_key):
    order, payload = _queue(store, device, order_key)
    got, _ = store.acknowledge_order(order.id, device_uuid=device.uuid, nonce=payload["nonce"], status="refused",
                                     reason="foreign_volumes")
    assert got.state == "refused" and got.state_reason == "foreign_volumes"
    assert store.get_device("lt-1").state == "onboarded"
    assert [s.state for s in store.list_secrets(device.uuid)] == ["active"]
    with pytest.raises(OrderStateError):  # a refused order cannot be acknowledged later
        store.acknowledge_order(order.id, device_uuid=device.uuid, nonce=payload["nonce"], status="accepted")


@pytest.mark.parametrize("wrong", ["nonce", "device", "order"])
def test_ack_with_wrong_nonce_device_or_order_changes_nothing(store, device, order_key, wrong):
    order, payload = _queue(store, device, order_key)
    other = store.register_device("lt-2", "debian", "10.0.0.2", 22, "dgadmin", None)
    args = {"order_id": order.id, "device_uuid": device.uuid, "nonce": payload["nonce"]}
    args.update({"nonce": {"nonce": "f" * 64}, "device": {"device_uuid": other.uuid},
                 "order": {"order_id": other.uuid}}[wrong])
    mark = len(store.list_audit())
    with pytest.raises(OrderStateError):
        store.acknowledge_order(args.pop("order_id"), status="accepted", **args)
    assert store.get_order(order.id).state == "queued" and len(store.list_audit()) == mark
    assert [s.state for s in store.list_secrets(device.uuid)] == ["active"]


def test_cancel_only_while_queued(store, device, order_key):
    order, _ = _queue(store, device, order_key)
    cancelled = store.cancel_order(order.id, "signed-cancel")
    assert cancelled.state == "cancelled" and cancelled.cancel_envelope == "signed-cancel"
    assert store.get_device("lt-1").state == "onboarded"
    order2, payload2 = _queue(store, device, order_key)
    store.acknowledge_order(order2.id, device_uuid=device.uuid, nonce=payload2["nonce"], status="accepted")
    with pytest.raises(OrderStateError, match="acknowledged"):
        store.cancel_order(order2.id, "too-late")


def test_one_open_order_per_device_and_none_for_a_wiped_one(store, device, order_key):
    order, payload = _queue(store, device, order_key)
    with pytest.raises(OrderStateError, match="cancel it first"):
        _queue(store, device, order_key, action="lock")
    store.acknowledge_order(order.id, device_uuid=device.uuid, nonce=payload["nonce"], status="accepted")
    store.complete_order(order.id, "silent")
    with pytest.raises(OrderStateError, match="already wiped"):
        _queue(store, device, order_key)
    assert len(store.list_orders(device_uuid=device.uuid)) == 1


def test_lock_ack_marks_locked_and_keeps_secrets(store, device, order_key):
    order, payload = _queue(store, device, order_key, action="lock")
    assert store.get_device("lt-1").state == "onboarded"  # a queued lock changes nothing yet
    store.acknowledge_order(order.id, device_uuid=device.uuid, nonce=payload["nonce"], status="accepted")
    assert store.get_device("lt-1").state == "locked"
    assert [s.state for s in store.list_secrets(device.uuid)] == ["active"]


def test_onboarding_again_closes_an_acknowledged_lock_so_a_wipe_can_follow(store, device, order_key):
    """Issue 21 item 5, found on the TPM lab VM: after a lock and re-onboarding (the way back) the acknowledged
    lock stayed open and `deskguard wipe` of the same laptop was refused ("the laptop is carrying it out")."""
    lock, payload = _queue(store, device, order_key, action="lock")
    assert store.close_lock_on_return("lt-1") is None          # queued: not carried out, nothing to close
    store.acknowledge_order(lock.id, device_uuid=device.uuid, nonce=payload["nonce"], status="accepted")
    with pytest.raises(OrderStateError, match="acknowledged lock order"):
        _queue(store, device, order_key)
    store.set_device_state("lt-1", "onboarded")
    done = store.close_lock_on_return("lt-1")
    assert done is not None and done.id == lock.id and store.get_order(lock.id).state == "done"
    assert store.list_audit()[-1].action == "order.done"
    wipe, payload = _queue(store, device, order_key)            # a wipe of the laptop, stolen later, is accepted
    store.acknowledge_order(wipe.id, device_uuid=device.uuid, nonce=payload["nonce"], status="accepted")
    assert store.close_lock_on_return("lt-1") is None          # an acknowledged wipe is never closed this way
    assert store.get_order(wipe.id).state == "acknowledged"


def test_expire_moves_only_overdue_queued_orders(store, device, order_key):
    old = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=40)
    order, _ = _queue(store, device, order_key, now=old)
    assert [o.id for o in store.expire_orders()] == [order.id]
    assert store.get_order(order.id).state == "expired" and store.get_device("lt-1").state == "onboarded"
    assert store.expire_orders() == []


def test_settle_after_grace_only_when_silent(store, device, order_key):
    order, payload = _queue(store, device, order_key)
    assert store.settle_orders(dt.timedelta(hours=1)) == []  # queued: never done
    store.acknowledge_order(order.id, device_uuid=device.uuid, nonce=payload["nonce"], status="accepted")
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=2)
    # The laptop checked in after acknowledging the wipe: the wipe did not finish, so it is not done.
    store.record_checkin(device.uuid, {"type": "checkin"}, sent_at=dt.datetime.now(dt.timezone.utc))
    assert store.settle_orders(dt.timedelta(hours=1), now=later) == []
    assert store.get_order(order.id).state == "acknowledged"


def test_settle_when_silent_or_reenrolled(store, device, order_key):
    order, payload = _queue(store, device, order_key)
    store.acknowledge_order(order.id, device_uuid=device.uuid, nonce=payload["nonce"], status="accepted")
    assert store.settle_orders(dt.timedelta(hours=1)) == []  # grace not over yet
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=2)
    [done] = store.settle_orders(dt.timedelta(hours=1), now=later)
    assert done.id == order.id and "no check-in" in done.state_reason


def test_settle_reenrolled_with_new_volume(store, device, order_key):
    order, payload = _queue(store, device, order_key)
    store.acknowledge_order(order.id, device_uuid=device.uuid, nonce=payload["nonce"], status="accepted")
    store.add_secret(device.uuid, "luks-recovery", "luks:11111111-2222-4333-8444-555555555555:1", b"new",
                     state="active")
    [done] = store.settle_orders(dt.timedelta(days=3))
    assert "re-enrolled" in done.state_reason


def test_order_lookup_errors(store, device):
    with pytest.raises(OrderNotFound):
        store.get_order("nope")
    with pytest.raises(OrderNotFound):
        store.get_order("0" * 36)
    with pytest.raises(UsageError):
        store.list_orders(states=("bogus",))


def test_create_order_needs_a_reason_and_a_matching_payload(store, device, order_key):
    payload = P.build_order(device.uuid, "wipe", [LUKS])
    with pytest.raises(UsageError, match="reason"):
        store.create_order(device.uuid, payload, "env", reason="")
    other = store.register_device("lt-2", "debian", "10.0.0.2", 22, "dgadmin", None)
    with pytest.raises(UsageError):
        store.create_order(other.uuid, payload, "env", reason="lost")
    assert store.list_orders() == []


def test_volume_of_reads_escrow_key_ids():
    assert volume_of(f"luks:{LUKS}:3") == LUKS
    assert volume_of("bitlocker:C::ab12cd34") == "C:"
    assert volume_of("garbage") is None


# -- agent keys and check-ins -------------------------------------------------------------------------------

def test_agent_key_set_audited_and_validated(store, device):
    key = P.generate_private_key()
    pem = P.public_key_pem(key).decode()
    store.set_agent_public_key(device.uuid, pem)
    assert store.get_agent_public_key(device.uuid) == pem
    entry = store.list_audit()[-1]
    assert entry.action == "agent.key" and entry.detail_obj["key_id"] == P.key_id(key)
    with pytest.raises(UsageError):
        store.set_agent_public_key(device.uuid, "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    assert store.get_agent_public_key(device.uuid) == pem
    store.remove_device("lt-1")
    assert store.get_agent_public_key(device.uuid) is None  # a removed laptop is not heard any more


def test_checkin_upsert_latest_only_and_last_seen(store, device):
    t0 = dt.datetime(2026, 11, 29, 1, 0, 0, tzinfo=dt.timezone.utc)
    updated = store.get_device("lt-1").updated_at
    audit_rows = len(store.list_audit())
    store.record_checkin(device.uuid, {"n": 1, "agent_version": "1.0"}, t0)
    store.record_checkin(device.uuid, {"n": 2, "agent_version": "1.1"}, t0 + dt.timedelta(minutes=15))
    with pytest.raises(CheckinReplayed):
        store.record_checkin(device.uuid, {"n": 3}, t0 + dt.timedelta(minutes=15))
    with pytest.raises(CheckinReplayed):
        store.record_checkin(device.uuid, {"n": 0}, t0)
    latest = store.latest_checkins()
    assert list(latest) == [device.uuid]
    assert latest[device.uuid].payload_obj == {"n": 2, "agent_version": "1.1"}
    assert latest[device.uuid].agent_version == "1.1"
    dev = store.get_device("lt-1")
    assert dev.last_seen_via == "checkin" and dev.last_seen_at is not None
    assert dev.updated_at == updated  # being seen is not a change to the record
    assert len(store.list_audit()) == audit_rows  # check-ins are not audited


def test_live_seen_never_moves_last_seen_back(store, device):
    store.record_checkin(device.uuid, {}, dt.datetime.now(dt.timezone.utc))
    seen = store.get_device("lt-1").last_seen_at
    store.mark_seen([device.uuid], via="live", at=dt.datetime(2020, 1, 1))
    assert store.get_device("lt-1").last_seen_at == seen
    store.mark_seen([device.uuid], via="live")
    assert store.get_device("lt-1").last_seen_via == "live"
    with pytest.raises(UsageError):
        store.mark_seen([device.uuid], via="carrier-pigeon")


def test_checkin_for_unknown_or_removed_device(store, device):
    with pytest.raises(DeviceNotFound):
        store.record_checkin("00000000-0000-4000-8000-000000000000", {}, dt.datetime.now(dt.timezone.utc))
    store.remove_device("lt-1")
    with pytest.raises(DeviceNotFound):
        store.record_checkin(device.uuid, {}, dt.datetime.now(dt.timezone.utc))
    assert store.latest_checkins() == {}


def test_checkin_in_a_failed_transaction_leaves_nothing(store, device):
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.record_checkin(device.uuid, {"n": 1}, dt.datetime.now(dt.timezone.utc))
            raise RuntimeError("the server died mid-request")
    assert store.latest_checkins() == {} and store.get_device("lt-1").last_seen_at is None


@pytest.fixture
def sqlite_device(sqlite_site):
    """SQLite's read-only URI mode is the tool here (it works as root too, unlike file modes)."""
    with Store.open(sqlite_site, create=True) as store:
        dev = store.register_device("lt-1", "debian", "10.0.0.1", 22, "dgadmin", "tanaka")
        yield sqlite_site, store, dev


def test_read_only_store_refuses_a_checkin_cleanly(sqlite_device):
    # A read-only connection: the write fails as StoreError, the check-in is not stored and the device's last
    # seen is untouched.
    site, store, device = sqlite_device
    db = site / ".deskguard" / "deskguard.db"
    with Store(f"sqlite:///file:{db}?mode=ro&uri=true") as ro:
        with pytest.raises(StoreError):
            ro.record_checkin(device.uuid, {}, dt.datetime.now(dt.timezone.utc))
    assert store.latest_checkins() == {} and store.get_device("lt-1").last_seen_at is None


def test_store_made_by_revision_0004_upgrades_without_loss(site):
    with Store.open(site, create=True) as s:
        dev = s.register_device("lt-1", "debian", "10.0.0.1", 22, "dgadmin", None)
        downgrade_store(s, "0004")
        assert current_revision(s.engine) == "0004"
        audit_rows = len(s.list_audit())
    with Store.open(site) as s:
        assert current_revision(s.engine) == SCHEMA_HEAD
        got = s.get_device("lt-1")
        assert got.uuid == dev.uuid and got.agent_public_key is None and got.last_seen_at is None
        assert len(s.list_audit()) == audit_rows and s.verify_audit() == (True, None)
        # The hostname index is still partial: a removed name can be reused.
        s.remove_device("lt-1")
        s.register_device("lt-1", "debian", "10.0.0.9", 22, "dgadmin", None)


def _verified(device, sent_at, pem=None, then=None, n=None):
    return VerifiedCheckin(device.uuid, pem, json.dumps({"n": n}), sent_at, dt.datetime.now(dt.timezone.utc), "1.0",
                           then)


def test_store_checkins_judges_each_in_order_and_commits_the_rest_together(store, device):
    """Group commit: each check-in accepted or refused on its own, in order; one whose extra step fails leaves
    no trace (its savepoint); a key that is no longer the device's is refused in the storing transaction."""
    pem = P.public_key_pem(P.generate_private_key()).decode()
    store.set_agent_public_key(device.uuid, pem)
    other = store.register_device("lt-2", "debian", "10.0.0.2", 22, "dgadmin", None)
    gone = store.register_device("lt-3", "debian", "10.0.0.3", 22, "dgadmin", None)
    store.remove_device("lt-3")
    t = dt.datetime.now(dt.timezone.utc)

    def fails_after_the_write():
        raise RuntimeError("failed after the check-in was written")

    results = store.store_checkins([
        _verified(device, t, pem, n="first"),
        _verified(other, t, then=fails_after_the_write, n="half"),
        _verified(device, t - dt.timedelta(hours=1), pem, n="old"),      # not newer than "first"
        _verified(device, t + dt.timedelta(seconds=1), pem, n="newer"),  # newer than "first": wins
        _verified(device, t + dt.timedelta(seconds=2), "-----BEGIN PUBLIC KEY-----\nold\n", n="stale key"),
        _verified(gone, t, n="removed"),
        _verified(device, t + dt.timedelta(seconds=1), pem, n="same again"),
    ])
    assert [type(r).__name__ for r in results] == ["NoneType", "RuntimeError", "CheckinReplayed", "NoneType",
                                                   "AgentKeyChanged", "DeviceNotFound", "CheckinReplayed"]
    latest = store.latest_checkins()
    assert list(latest) == [device.uuid] and latest[device.uuid].payload_obj == {"n": "newer"}
    assert store.get_device("lt-2").last_seen_at is None


def test_store_checkins_on_a_read_only_store_stores_nothing(sqlite_device):
    site, store, device = sqlite_device
    db = site / ".deskguard" / "deskguard.db"
    with Store(f"sqlite:///file:{db}?mode=ro&uri=true") as ro:
        with pytest.raises(StoreError):
            ro.store_checkins([_verified(device, dt.datetime.now(dt.timezone.utc))])
    assert store.latest_checkins() == {}
