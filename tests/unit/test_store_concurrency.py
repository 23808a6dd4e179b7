"""Several processes writing one store at once, on SQLite and PostgreSQL: two nightly compliance recordings
(as two callback plugins would, e.g. two AWX jobs) and an onboarding (device + inventory, escrowed secret, VPN
address) interleave, and each lands whole, the audit chain intact. Also: two admins registering the same
hostname at once get one device and one clear refusal."""

from __future__ import annotations

import multiprocessing
import traceback

import pytest

from deskguard.store import DeviceExists, Store

pytestmark = pytest.mark.unit

RUNS_PER_RECORDER = 4
HOSTS_PER_RUN = 25
CONTROLS = ("ENC-001", "FW-001", "LCK-001", "UPD-001", "USB-001")
ONBOARDED = 12


def _result(cid, i):
    status = "pass" if (i + len(cid)) % 3 else "fail"
    return {"id": cid, "status": status, "severity": "high", "observed": {"i": i}, "expected": {"ok": True},
            "evidence": [f"host {i}"]}


def _recorder(site, name, barrier, queue):
    """One `deskguard_record` callback's worth of writes, RUNS_PER_RECORDER times."""
    try:
        from deskguard.compliance.runs import HostRecord, record
        from deskguard.store.models import utcnow

        with Store.open(site) as store:
            barrier.wait(30)
            for n in range(RUNS_PER_RECORDER):
                hosts = {f"fleet-{i:03d}": HostRecord("ok", [_result(c, i) for c in CONTROLS],
                                                      {"score": 80.0, "compliant": False})
                         for i in range(HOSTS_PER_RUN)}
                hosts["fleet-gone"] = HostRecord("unreachable", message="ssh: timed out")
                record(store, f"{name}-{n}", utcnow(), name, hosts)
        queue.put((name, "ok"))
    except Exception:
        queue.put((name, traceback.format_exc()))


def _onboarder(site, barrier, queue):
    """The store and inventory half of `deskguard onboard` for ONBOARDED laptops."""
    try:
        from deskguard.site.inventory import register_and_add

        with Store.open(site) as store:
            barrier.wait(30)
            for i in range(ONBOARDED):
                device, created = register_and_add(site, store, f"lt-{i:02d}", os="debian",
                                                   address=f"10.8.0.{i + 10}", port=22, ssh_user="dgadmin")
                assert created
                secret = store.add_secret(device.uuid, "luks-recovery", f"luks:{i}:1", b"sealed", state="pending")
                store.set_secret_state(secret.id, "active", fingerprint=f"{i:064x}", verified=True)
                store.allocate_vpn_address(device.uuid, "10.77.0.0/24", reserved=["10.77.0.1"])
                store.set_device_state(device.hostname, "onboarded")
        queue.put(("onboard", "ok"))
    except Exception:
        queue.put(("onboard", traceback.format_exc()))


def _run_all(workers, timeout=240):
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    barrier = ctx.Barrier(len(workers))
    procs = [ctx.Process(target=fn, args=(*args, barrier, queue)) for fn, args in workers]
    for p in procs:
        p.start()
    outcomes = dict(queue.get(timeout=timeout) for _ in procs)
    for p in procs:
        p.join(30)
    return outcomes


def test_two_comply_recordings_and_an_onboard_at_once_all_land_whole(site):
    from deskguard.compliance import runs
    from deskguard.site.inventory import ensure_hosts_file, list_hosts

    ensure_hosts_file(site)
    Store.open(site, create=True).close()
    outcomes = _run_all([(_recorder, (site, "awx-a")), (_recorder, (site, "awx-b")), (_onboarder, (site,))])
    assert outcomes == {"awx-a": "ok", "awx-b": "ok", "onboard": "ok"}, outcomes

    with Store.open(site) as store:
        history = runs.history(store, limit=100)
        assert sorted(h["id"] for h in history) == sorted(f"{n}-{i}" for n in ("awx-a", "awx-b")
                                                           for i in range(RUNS_PER_RECORDER))
        for h in history:
            run = runs.load(store, h["id"])
            assert len(run.hosts) == HOSTS_PER_RUN + 1
            assert sum(len(x["results"]) for x in run.hosts.values()) == HOSTS_PER_RUN * len(CONTROLS)
            assert run.hosts["fleet-gone"]["state"] == "unreachable"
        devices = store.list_devices()
        assert [d.hostname for d in devices] == [f"lt-{i:02d}" for i in range(ONBOARDED)]
        assert all(d.state == "onboarded" for d in devices)
        assert len({p.address for p, _d in store.list_vpn_peers()}) == ONBOARDED
        assert all([s.state for s in store.list_secrets(d.uuid)] == ["active"] for d in devices)
        # Every write left exactly its audit row, in one unbroken chain.
        actions = [e.action for e in store.list_audit()]
        assert actions.count("compliance.run") == 2 * RUNS_PER_RECORDER
        assert actions.count("device.register") == ONBOARDED and actions.count("vpn.allocate") == ONBOARDED
        assert store.verify_audit() == (True, None)
    assert sorted(list_hosts(site)) == [f"lt-{i:02d}" for i in range(ONBOARDED)]


def _register_same(site, barrier, queue):
    try:
        with Store.open(site) as store:
            barrier.wait(30)
            store.register_device("lt-race", "debian", "10.8.0.9", 22, "dgadmin", None)
        queue.put((multiprocessing.current_process().name, "registered"))
    except DeviceExists as exc:
        queue.put((multiprocessing.current_process().name, f"exists: {exc}"))
    except Exception:
        queue.put((multiprocessing.current_process().name, traceback.format_exc()))


def test_two_admins_registering_one_hostname_get_one_device_and_one_refusal(site):
    Store.open(site, create=True).close()
    exists, registered = sorted(_run_all([(_register_same, (site,)), (_register_same, (site,))]).values())
    assert registered == "registered" and exists.startswith("exists: device 'lt-race' is already"), exists
    with Store.open(site) as store:
        assert [d.hostname for d in store.list_devices()] == ["lt-race"]
        assert [e.action for e in store.list_audit()] == ["device.register"]
