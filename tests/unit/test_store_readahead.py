"""Store.reading_ahead (deskguard.store.readahead): judging many laptops at once answers exactly what the
per-laptop queries answer, and defers the escrow records' verified_at stamps to one transaction at the end.
On SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.unit


def answers(store, uuids):
    return {u: ([(s.id, s.kind, s.state) for s in store.live_secrets(u)],
                [(s.id, s.kind) for s in store.live_secrets(u, "luks")],
                store.keyslot_baselines(u),
                (lambda p: p and (p.id, p.address))(store.vpn_peer(u))) for u in uuids}


def test_read_ahead_answers_exactly_as_the_store_and_defers_the_stamps(store):
    a = store.register_device("lt-a", "debian", "10.0.0.1", 22, "dgadmin", None)
    b = store.register_device("lt-b", "debian", "10.0.0.2", 22, "dgadmin", None)
    c = store.register_device("lt-c", "debian", "10.0.0.3", 22, "dgadmin", None)   # nothing recorded
    first = store.add_secret(a.uuid, "luks", "k1", b"sealed-1")
    store.add_secret(a.uuid, "bitlocker", "k2", b"sealed-2", state="pending")
    retired = store.add_secret(b.uuid, "luks", "k3", b"sealed-3")
    store.set_secret_state(retired.id, "retired")
    store.record_keyslot_baseline(a.uuid, "luks-a", {"fp1", "fp2"}, reason="first escrow")
    store.allocate_vpn_address(b.uuid, "10.99.0.0/24")
    uuids = [a.uuid, b.uuid, c.uuid]
    expected = answers(store, uuids)
    with store.reading_ahead(uuids):
        assert answers(store, uuids) == expected
        store.mark_secret_verified(first.id)
        assert [s.verified_at for s in store.list_secrets(a.uuid) if s.id == first.id] == [None]   # not yet
    stamped = [s.verified_at for s in store.list_secrets(a.uuid) if s.id == first.id]
    assert stamped[0] is not None
    # Outside the block, and for a device it did not cover, the store answers as before.
    d = store.register_device("lt-d", "debian", "10.0.0.4", 22, "dgadmin", None)
    with store.reading_ahead([a.uuid]):
        store.add_secret(d.uuid, "luks", "k4", b"sealed-4")
        assert [s.key_id for s in store.live_secrets(d.uuid)] == ["k4"]
