"""VPN peers in the store: addresses from a pool, unique even with two admins at once, released on removal,
and the 0002 -> 0003 migration that added them."""

from __future__ import annotations

import multiprocessing
import pytest
from sitetools import downgrade_store
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from deskguard.errors import UsageError
from deskguard.store import Store, VpnPoolExhausted
from deskguard.store.core import SCHEMA_HEAD, current_revision

pytestmark = pytest.mark.unit
KEY = "A" * 43 + "="


def _devices(store, n, prefix="lt"):
    return [store.register_device(f"{prefix}-{i}", "debian", f"10.0.{i // 250}.{i % 250 + 1}", 22, "dgadmin", None)
            for i in range(n)]


def test_hundred_devices_get_hundred_distinct_addresses_and_the_gateway_none(store):
    devs = _devices(store, 100)
    addrs = [store.allocate_vpn_address(d.uuid, "10.77.0.0/24", reserved=["10.77.0.1"]).address for d in devs]
    assert len(set(addrs)) == 100
    assert "10.77.0.1" not in addrs and "10.77.0.0" not in addrs and "10.77.0.255" not in addrs
    assert addrs[0] == "10.77.0.2" and addrs[-1] == "10.77.0.101"
    # Re-running an enrolment keeps the address (idempotent) and writes no audit row.
    before = len(store.list_audit())
    assert store.allocate_vpn_address(devs[5].uuid, "10.77.0.0/24", reserved=["10.77.0.1"]).address == addrs[5]
    assert len(store.list_audit()) == before


def test_pool_exhaustion_is_a_clear_error(store):
    devs = _devices(store, 2)   # a /30 holds .1 (the gateway's) and .2
    store.allocate_vpn_address(devs[0].uuid, "10.77.0.0/30", reserved=["10.77.0.1"])
    with pytest.raises(VpnPoolExhausted, match=r"VPN pool 10.77.0.0/30 is exhausted: all 2 host addresses.*widen vpn_pool"):
        store.allocate_vpn_address(devs[1].uuid, "10.77.0.0/30", reserved=["10.77.0.1"])
    assert store.vpn_peer(devs[1].uuid) is None   # nothing half-written


def test_removing_a_device_revokes_its_peer_and_frees_the_address(store):
    a, b = _devices(store, 2)
    pa = store.allocate_vpn_address(a.uuid, "10.77.0.0/24", reserved=["10.77.0.1"])
    store.set_vpn_public_key(pa.id, KEY)
    store.remove_device(a.hostname)
    assert store.vpn_peer(a.uuid) is None
    assert [p.state for p, _d in store.list_vpn_peers(include_revoked=True)] == ["revoked"]
    assert store.allocate_vpn_address(b.uuid, "10.77.0.0/24", reserved=["10.77.0.1"]).address == pa.address
    actions = [e.action for e in store.list_audit(target=a.hostname)]
    assert actions[-2:] == ["device.remove", "vpn.revoke"]
    assert store.verify_audit() == (True, None)


def test_a_second_active_address_for_one_device_or_one_address_twice_is_refused_by_the_database(store):
    """The unique indexes, not only the code, keep addresses unique."""
    a, b = _devices(store, 2)
    store.allocate_vpn_address(a.uuid, "10.77.0.0/24")
    insert = text("INSERT INTO vpn_peers (device_uuid, pool, address, state, created_at) "
                  "VALUES (:u, '10.77.0.0/24', :addr, 'active', '2026-01-01')")
    for uuid, addr in ((b.uuid, "10.77.0.1"), (a.uuid, "10.77.0.9")):
        with pytest.raises(IntegrityError):
            with store.engine.begin() as conn:
                conn.execute(insert, {"u": uuid, "addr": addr})
    assert [p.address for p, _d in store.list_vpn_peers()] == ["10.77.0.1"]


def test_pool_change_moves_the_device_and_removed_device_cannot_allocate(store):
    a, = _devices(store, 1)
    first = store.allocate_vpn_address(a.uuid, "10.77.0.0/24")
    moved = store.allocate_vpn_address(a.uuid, "10.78.0.0/24")
    assert moved.pool == "10.78.0.0/24" and moved.id != first.id
    store.remove_device(a.hostname)
    with pytest.raises(UsageError, match="no live device"):
        store.allocate_vpn_address(a.uuid, "10.77.0.0/24")


def _admin(site, names, queue):
    """One admin process enrolling its share of devices at the same time as the other."""
    try:
        with Store.open(site) as s:
            for name in names:
                dev = s.get_device(name)
                queue.put(s.allocate_vpn_address(dev.uuid, "10.77.0.0/26", reserved=["10.77.0.1"]).address)
    except Exception as exc:  # reported to the parent, which fails the test with it
        queue.put(f"error: {exc}")
    finally:
        queue.put(None)  # this admin is done: the parent stops waiting for it


def test_two_admins_enrolling_at_once_never_share_an_address(site):
    with Store.open(site, create=True) as s:
        _devices(s, 60)
    names = [f"lt-{i}" for i in range(60)]
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_admin, args=(site, names[i::2], queue)) for i in range(2)]
    for p in procs:
        p.start()
    got, running = [], len(procs)
    while running:
        item = queue.get(timeout=120)
        if item is None:
            running -= 1
        else:
            got.append(item)
    for p in procs:
        p.join(60)
    errors = [g for g in got if g.startswith("error")]
    assert not errors, errors
    assert len(set(got)) == 60
    with Store.open(site) as s:
        assert len({p.address for p, _ in s.list_vpn_peers()}) == 60
        # A /26 has 62 hosts, one is the gateway's: one address is left, then the pool is exhausted.
        extra = _devices(s, 2, prefix="late")
        s.allocate_vpn_address(extra[0].uuid, "10.77.0.0/26", reserved=["10.77.0.1"])
        with pytest.raises(VpnPoolExhausted):
            s.allocate_vpn_address(extra[1].uuid, "10.77.0.0/26", reserved=["10.77.0.1"])


def test_store_made_by_revision_0002_upgrades_without_loss(site):
    with Store.open(site, create=True) as s:
        dev = s.register_device("lt-1", "debian", "10.0.0.1", 22, "dgadmin", None)
        s.add_secret(dev.uuid, "luks-recovery", "luks:u:1", b"\x01\x02", state="active")
        downgrade_store(s, "0002")
        assert current_revision(s.engine) == "0002"
        audit_rows = len(s.list_audit())
    with Store.open(site) as s:
        assert current_revision(s.engine) == SCHEMA_HEAD   # through 0003 (compliance), 0004 (vpn) and later ones
        assert s.get_device("lt-1").uuid == dev.uuid
        assert [x.ciphertext for x in s.list_secrets(dev.uuid)] == [b"\x01\x02"]
        assert len(s.list_audit()) == audit_rows and s.verify_audit() == (True, None)
        assert s.allocate_vpn_address(dev.uuid, "10.77.0.0/24").address == "10.77.0.1"
