"""The server's check-in decisions without a socket (deskguard.orders.ingest), on both store backends: the key a
server process keeps in memory never outlives the store's record (a replaced key or a removed laptop is refused
at the very next report), and a report is stored once even when two server processes receive it."""

from __future__ import annotations

import datetime as dt

import pytest

from deskguard.orders.ingest import Ingest
from deskguard.site import module_utils

pytestmark = pytest.mark.unit
P = module_utils("deskguard_protocol")


@pytest.fixture
def laptop(store):
    key = P.generate_private_key()
    dev = store.register_device("lt-1", "debian", "10.0.0.1", 22, "dgadmin", None)
    store.set_agent_public_key(dev.uuid, P.public_key_pem(key).decode())
    return dev, key


@pytest.fixture
def ingest(store):
    ing = Ingest(store)
    yield ing
    ing.close()


START = {}


@pytest.fixture(autouse=True)
def start():
    """Each test's reports are sent at fixed offsets from its start, well inside the server's clock skew."""
    START["t"] = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(seconds=100)


def report(dev, key, seconds):
    return P.sign(P.build_checkin(dev.uuid, {"n": seconds}, "1.0", now=START["t"] + dt.timedelta(seconds=seconds)),
                  key)


def status(ingest, body):
    answer = ingest.checkin(body)
    return answer.status, answer.body.get("error")


def test_a_replaced_key_is_refused_at_the_next_report(store, ingest, laptop):
    dev, old = laptop
    assert status(ingest, report(dev, old, 1)) == (200, None)  # the old key is now in the server's memory
    new = P.generate_private_key()
    store.set_agent_public_key(dev.uuid, P.public_key_pem(new).decode())  # e.g. the laptop was re-enrolled
    assert status(ingest, report(dev, old, 2)) == (401, "bad_signature")
    assert status(ingest, report(dev, new, 3)) == (200, None)
    assert status(ingest, report(dev, old, 4)) == (401, "bad_signature")
    assert store.latest_checkins()[dev.uuid].payload_obj["posture"] == {"n": 3}


def test_a_removed_laptop_is_refused_at_the_next_report(store, ingest, laptop):
    dev, key = laptop
    assert status(ingest, report(dev, key, 1)) == (200, None)
    store.remove_device("lt-1")
    assert status(ingest, report(dev, key, 2)) == (401, "unknown_device")
    assert store.latest_checkins()[dev.uuid].payload_obj["posture"] == {"n": 1}


def test_one_report_received_by_two_server_processes_is_stored_once(store, laptop):
    dev, key = laptop
    body = report(dev, key, 1)
    first, second = Ingest(store), Ingest(store)  # two processes: two writers, two key caches
    try:
        assert status(first, report(dev, key, 0)) == (200, None)
        assert status(second, report(dev, key, 0)) == (409, "replayed")  # nothing in memory helps it
        outcomes = sorted([status(first, body), status(second, body)])
    finally:
        first.close()
        second.close()
    assert outcomes == [(200, None), (409, "replayed")]


def test_a_batch_judges_each_report_on_its_own(store, ingest, laptop):
    """One writer batch holding good, forged, replayed and foreign reports: only the good ones are stored."""
    dev, key = laptop
    stranger = P.generate_private_key()
    bodies = [report(dev, key, 5), report(dev, stranger, 6), report(dev, key, 5), report(dev, key, 7),
              report(dev, key, 3)]
    results = ingest.store_checkins([ingest.open_checkin(b) for b in bodies])
    answers = [Ingest.checkin_answer(r) for r in results]
    assert [(a.status, a.body.get("error")) for a in answers] == [
        (200, None), (401, "bad_signature"), (409, "replayed"), (200, None), (409, "replayed")]
    assert store.latest_checkins()[dev.uuid].payload_obj["posture"] == {"n": 7}
