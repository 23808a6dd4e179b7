"""What the server does with an acknowledgement or a check-in body: verify it, store it, say how it went.

Plain synchronous code over the Store, so the whole decision is testable without a socket; the HTTP layer
(server.py) verifies on its event loop, reads the store in a thread, and waits for the writer's future. A check-in and the refusals it reports are stored together or not at all (one
savepoint); check-ins arriving together share one commit (group commit, see CheckinWriter), since on SQLite the
commit's fsync is most of a check-in's cost. Answers follow docs/agent-protocol.md, "Server answers".
"""

from __future__ import annotations

import datetime as dt
import queue
import threading
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Callable

from ..site import module_utils
from ..store import CheckinReplayed, DeviceNotFound, OrderStateError, Store, StoreError

P = module_utils("deskguard_protocol")
KEY_CACHE = 100_000       # parsed agent keys kept in memory (~1 KiB each)
MAX_BATCH = 256           # check-ins per commit at most


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict

    @classmethod
    def error(cls, status: int, error: str, detail: str | None = None) -> "Answer":
        return cls(status, {"error": error, **({"detail": detail} if detail else {})})


OK = Answer(200, {"ok": True})
_NOT_CACHED = object()
_PROTOCOL_STATUS = {"oversized": 413, "malformed": 400, "unsupported": 400}


class CheckinWriter:
    """One thread that writes the check-ins waiting at that moment in one transaction (Store.run_batch): while a
    commit runs, the next ones queue up and share the following commit. Each caller gets its own outcome."""

    def __init__(self, store: Store, max_batch: int = MAX_BATCH):
        self.store, self.max_batch = store, max_batch
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="deskguard-checkin-writer", daemon=True)
        self._thread.start()

    def submit(self, step) -> Future:
        future: Future = Future()
        self._queue.put((step, future))
        return future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(30)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # finish this batch, then stop
                    break
                batch.append(item)
            try:
                results = self.store.run_batch([step for step, _f in batch])
            except Exception as exc:  # StoreError (commit failed) or worse: nobody's check-in was stored
                results = [exc] * len(batch)
            for (_step, future), result in zip(batch, results):
                future.set_result(result)


class Ingest:
    def __init__(self, store: Store, *, now=None):
        self.store = store
        self._now = now or (lambda: dt.datetime.now(dt.timezone.utc))
        self._keys: OrderedDict[str, tuple[str, object, str]] = OrderedDict()
        self._lock = threading.Lock()
        self.writer = CheckinWriter(store)

    def close(self) -> None:
        self.writer.close()

    # -- the two POSTs -------------------------------------------------------------------------------------

    def checkin(self, body: bytes) -> Answer:
        """The whole check-in, blocking (tests, tools). The server runs the same steps without blocking its
        event loop: open_checkin, then the writer's future, then checkin_answer."""
        got = self.open_checkin(body, fetch=True)
        if isinstance(got, Answer):
            return got
        return self.checkin_answer(self.writer.submit(got).result())

    def open_checkin(self, body: bytes, *, fetch: bool) -> Answer | Callable | None:
        """The refusing Answer, or the store step (for the writer) of a verified check-in. With fetch=False
        nothing touches the store: None means the device's key is not in memory (fetch it in a thread)."""
        got = self._open(body, "checkin", P.check_checkin, fetch=fetch)
        if got is None or isinstance(got, Answer):
            return got
        payload, hostname = got
        sent_at, received_at = P.parse_time(payload["sent_at"]), dt.datetime.now(dt.timezone.utc)

        def step():
            self.store.record_checkin(payload["device_uuid"], payload, sent_at, received_at=received_at)
            self._apply_refusals(payload, hostname)

        # record_checkin refuses before it writes; only reported refusals add writes after it (then a savepoint
        # keeps the check-in and the order change together).
        step.single_write = not any(r.get("order_id") for r in payload["refused"])
        return step

    @staticmethod
    def checkin_answer(failure: BaseException | None) -> Answer:
        if failure is None:
            return OK
        if isinstance(failure, CheckinReplayed):
            return Answer.error(409, "replayed", "sent_at is not after the last check-in")
        if isinstance(failure, DeviceNotFound):
            return Answer.error(401, "unknown_device")
        return Answer.error(503, "store_unavailable")

    def ack(self, body: bytes) -> Answer:
        got = self._open(body, "ack", P.check_ack)
        if isinstance(got, Answer):
            return got
        payload, hostname = got
        try:
            self.store.acknowledge_order(payload["order_id"], device_uuid=payload["device_uuid"],
                                         nonce=payload["nonce"], status=payload["status"], reason=payload["reason"],
                                         actor=f"agent:{hostname}")
        except OrderStateError:
            return Answer.error(409, "replayed", "no queued or acknowledged order matches this acknowledgement")
        except StoreError:
            return Answer.error(503, "store_unavailable")
        return OK

    def healthy(self) -> bool:
        try:
            self.store.list_orders(states=("queued",))
        except StoreError:
            return False
        return True

    # -- helpers --------------------------------------------------------------------------------------------

    def _open(self, body: bytes, kind: str, check, *, fetch: bool = True):
        """(verified payload, hostname), the Answer that refuses it, or None (fetch=False and the device's key
        is not in memory)."""
        try:
            envelope = P.parse_envelope(body, P.LIMITS[kind])
            claimed = envelope.unverified_payload()
        except P.ProtocolError as exc:
            return Answer.error(_PROTOCOL_STATUS.get(exc.reason, 400), exc.reason, exc.detail)
        device_uuid = claimed.get("device_uuid")
        if not isinstance(device_uuid, str) or len(device_uuid) != 36:
            return Answer.error(400, "malformed", "no device_uuid")
        try:
            known = self._key(device_uuid, envelope.key_id, fetch=fetch)
        except StoreError:
            return Answer.error(503, "store_unavailable")
        if known is _NOT_CACHED:
            return None
        if known is None:
            return Answer.error(401, "unknown_device")
        key, hostname = known
        try:
            payload = P.verify(envelope, key)
            skew = check(payload, self._now())
        except P.ProtocolError as exc:
            if exc.reason in ("unknown_key", "bad_signature"):
                return Answer.error(401, "bad_signature")
            return Answer.error(_PROTOCOL_STATUS.get(exc.reason, 400), exc.reason, exc.detail)
        if skew:
            return Answer.error(422, "clock_skew", "sent_at is more than 300 s away from the server's clock")
        return payload, hostname

    def _key(self, device_uuid: str, key_id: str, *, fetch: bool = True):
        """(public key, hostname) of a live device with an agent key. Parsed keys are kept (LRU, KEY_CACHE
        entries): a laptop reports every few minutes and a key changes only at enrolment. A cached key whose
        key_id is not the envelope's is looked up again, so a re-enrolled laptop's new key counts at once; a
        removed laptop is refused when its check-in is stored (record_checkin)."""
        with self._lock:
            hit = self._keys.get(device_uuid)
            if hit is not None and hit[0] == key_id:
                self._keys.move_to_end(device_uuid)
                return hit[1], hit[2]
        if not fetch:
            return _NOT_CACHED
        row = self.store.agent_key(device_uuid)
        if row is None:
            return None
        try:
            key = P.load_public_key(row[0])
        except ValueError:
            return None
        with self._lock:
            self._keys[device_uuid] = (P.key_id(key), key, row[1])
            if len(self._keys) > KEY_CACHE:
                self._keys.popitem(last=False)
        return key, row[1]

    def _apply_refusals(self, payload: dict, hostname: str) -> None:
        """A refusal the agent reports again in a check-in (its ack may never have arrived) closes the order."""
        order_ids = {r["order_id"]: r["reason"] for r in payload["refused"] if r.get("order_id")}
        if not order_ids:
            return
        order = self.store.open_order(payload["device_uuid"])
        if order is not None and order.state == "queued" and order.id in order_ids:
            self.store.acknowledge_order(order.id, device_uuid=order.device_uuid, nonce=order.nonce,
                                         status="refused", reason=order_ids[order.id], actor=f"agent:{hostname}")
