"""What the server does with an acknowledgement or a check-in body: verify it, store it, say how it went.

Plain synchronous code over the Store, so the whole decision is testable without a socket; the HTTP layer
(server.py) parses a check-in on its event loop and waits for the writer's future. Check-ins arriving together
are verified together and share one commit (group commit, see CheckinWriter): on SQLite the commit's fsync is
most of a check-in's cost. Whether the device is live, whether its key is still the one that verified the
report, and whether the report is newer than the stored one are decided by the store inside that transaction
(Store.store_checkins), so a removed laptop or a replaced key is refused at once, whatever this process keeps
in memory, and across server processes. Answers follow docs/agent-protocol.md, "Server answers".
"""

from __future__ import annotations

import datetime as dt
import queue
import threading
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass
from functools import lru_cache

from ..site import module_utils
from ..store import (AgentKeyChanged, CheckinReplayed, DeviceNotFound, OrderStateError, Store, StoreError,
                     VerifiedCheckin)
from .nonces import NonceMemory

P = module_utils("deskguard_protocol")
KEY_CACHE = 100_000       # devices whose parsed agent key is kept in memory (~1 KiB each)
MAX_BATCH = 256           # check-ins per commit at most


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict

    @classmethod
    def error(cls, status: int, error: str, detail: str | None = None) -> "Answer":
        return cls(status, {"error": error, **({"detail": detail} if detail else {})})


OK = Answer(200, {"ok": True})
_PROTOCOL_STATUS = {"oversized": 413, "malformed": 400, "unsupported": 400}


class Refused(Exception):
    """A check-in refused before the store was asked (bad signature, bad fields, clock skew)."""

    def __init__(self, answer: Answer):
        super().__init__(answer.body.get("error"))
        self.answer = answer


@dataclass(frozen=True)
class ParsedCheckin:
    """A check-in whose envelope parsed (size, JSON, base64): not verified yet."""

    envelope: object
    device_uuid: str
    received_at: dt.datetime


class CheckinWriter:
    """One thread that takes the check-ins waiting at that moment (up to max_batch), verifies them, and stores
    the good ones in one transaction: while a commit runs, the next ones queue up and share the following one.
    Verifying happens before the transaction, so another server process can write meanwhile. Each caller gets
    its own outcome (None = stored, else the exception that refused it)."""

    def __init__(self, ingest: "Ingest", max_batch: int = MAX_BATCH):
        self.ingest, self.max_batch = ingest, max_batch
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="deskguard-checkin-writer", daemon=True)
        self._thread.start()

    def submit(self, parsed: ParsedCheckin) -> Future:
        future: Future = Future()
        self._queue.put((parsed, future))
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
                results = self.ingest.store_checkins([parsed for parsed, _f in batch])
            except Exception as exc:  # StoreError (commit failed) or worse: nobody's check-in was stored
                results = [exc] * len(batch)
            for (_parsed, future), result in zip(batch, results):
                future.set_result(result)


class Ingest:
    def __init__(self, store: Store, *, now=None):
        self.store = store
        self._now = now or (lambda: dt.datetime.now(dt.timezone.utc))
        # device uuid -> (PEM, hostname): which key verified the device's last report. Only a hint: the store
        # checks, in the transaction that stores a report, that the PEM is still the device's key.
        self._keys: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._lock = threading.Lock()
        self.writer = CheckinWriter(self)
        self.fetch_nonces = NonceMemory(2 * P.CLOCK_SKEW_SECONDS)

    def close(self) -> None:
        self.writer.close()

    # -- check-ins ------------------------------------------------------------------------------------------

    def checkin(self, body: bytes) -> Answer:
        """The whole check-in, blocking (tests, tools). The server runs the same steps without blocking its
        event loop: open_checkin, then the writer's future, then checkin_answer."""
        got = self.open_checkin(body)
        if isinstance(got, Answer):
            return got
        return self.checkin_answer(self.writer.submit(got).result())

    def open_checkin(self, body: bytes) -> Answer | ParsedCheckin:
        """The refusing Answer, or the parsed (not yet verified) check-in for the writer. CPU only."""
        parsed = _parse(body, "checkin")
        if isinstance(parsed, Answer):
            return parsed
        envelope, device_uuid = parsed
        return ParsedCheckin(envelope, device_uuid, self._now())

    def store_checkins(self, batch: list[ParsedCheckin]) -> list[BaseException | None]:
        """Verify a batch of check-ins, then store the good ones together (Store.store_checkins)."""
        results: list[BaseException | None] = [None] * len(batch)
        keys = self._keys_for(batch)
        verified, where = [], []
        for i, parsed in enumerate(batch):
            try:
                verified.append(self._verify_checkin(parsed, keys.get(parsed.device_uuid)))
                where.append(i)
            except (Refused, DeviceNotFound) as exc:
                results[i] = exc
        for i, outcome in zip(where, self.store.store_checkins(verified) if verified else []):
            results[i] = outcome
            if isinstance(outcome, (AgentKeyChanged, DeviceNotFound)):
                with self._lock:
                    self._keys.pop(batch[i].device_uuid, None)
        return results

    @staticmethod
    def checkin_answer(failure: BaseException | None) -> Answer:
        if failure is None:
            return OK
        if isinstance(failure, Refused):
            return failure.answer
        if isinstance(failure, CheckinReplayed):
            return Answer.error(409, "replayed", "sent_at is not after the last check-in")
        if isinstance(failure, DeviceNotFound):
            return Answer.error(401, "unknown_device")
        if isinstance(failure, AgentKeyChanged):
            return Answer.error(401, "bad_signature")
        return Answer.error(503, "store_unavailable")

    # -- acknowledgements -----------------------------------------------------------------------------------

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

    # -- order fetches --------------------------------------------------------------------------------------

    def fetch(self, body: bytes, device_uuid: str) -> Answer | None:
        """None if ``body`` is a fresh fetch signed by ``device_uuid``'s key (the order may be served), else the
        Answer that refuses it. Decided before the order is looked at, so a refusal says nothing about it."""
        got = self._open(body, "fetch", P.check_fetch)
        if isinstance(got, Answer):
            return got
        payload, _hostname = got
        if payload["device_uuid"] != device_uuid:
            return Answer.error(400, "malformed", "the fetch is for another device than the URL")
        first = self.fetch_nonces.first_use(payload["nonce"])
        if first is None:
            return Answer.error(503, "busy", "too many fetches in the replay window")
        if not first:
            return Answer.error(409, "replayed", "this fetch was used already")
        return None

    def healthy(self) -> bool:
        try:
            self.store.list_orders(states=("queued",))
        except StoreError:
            return False
        return True

    # -- helpers --------------------------------------------------------------------------------------------

    def _keys_for(self, batch: list[ParsedCheckin]) -> dict[str, tuple[str, str]]:
        """{device uuid: (PEM, hostname)} for the batch: from memory when the envelope names the key that
        verified the device's last report, the others in one query (a new laptop, a new key, a forgery)."""
        keys, missing = {}, set()
        with self._lock:
            for parsed in batch:
                hit = self._keys.get(parsed.device_uuid)
                if hit is not None and _key_id(hit[0]) == parsed.envelope.key_id:
                    self._keys.move_to_end(parsed.device_uuid)
                    keys[parsed.device_uuid] = hit
                else:
                    missing.add(parsed.device_uuid)
        if missing:
            fetched = self.store.agent_keys(missing)
            keys.update(fetched)
            with self._lock:
                self._keys.update(fetched)
                while len(self._keys) > KEY_CACHE:
                    self._keys.popitem(last=False)
        return keys

    def _verify_checkin(self, parsed: ParsedCheckin, known: tuple[str, str] | None) -> VerifiedCheckin:
        if known is None:
            raise DeviceNotFound(parsed.device_uuid)
        pem, hostname = known
        payload = self._verified(parsed.envelope, pem, P.check_checkin)
        then = None
        if any(r.get("order_id") for r in payload["refused"]):
            def then():
                self._apply_refusals(payload, hostname)
        return VerifiedCheckin(parsed.device_uuid, pem, parsed.envelope.payload_bytes.decode("utf-8"),
                               P.parse_time(payload["sent_at"]), parsed.received_at, payload["agent_version"],
                               then)

    def _verified(self, envelope, pem: str, check) -> dict:
        """The payload of ``envelope`` verified with ``pem`` and passed through ``check``; Refused if not."""
        try:
            key, key_id = _public_key(pem)
        except ValueError:
            raise Refused(Answer.error(401, "unknown_device")) from None
        try:
            payload = P.verify(envelope, key, key_id)
            skew = check(payload, self._now())
        except P.ProtocolError as exc:
            if exc.reason in ("unknown_key", "bad_signature"):
                raise Refused(Answer.error(401, "bad_signature")) from None
            raise Refused(_protocol_answer(exc)) from None
        if skew:
            raise Refused(Answer.error(422, "clock_skew", "sent_at is more than 300 s away from the server's clock"))
        return payload

    def _open(self, body: bytes, kind: str, check):
        """(verified payload, hostname), or the Answer that refuses it. The key is read from the store each time
        (acknowledgements are rare, and one must never be accepted with a key the store no longer holds)."""
        parsed = _parse(body, kind)
        if isinstance(parsed, Answer):
            return parsed
        envelope, device_uuid = parsed
        try:
            known = self.store.agent_key(device_uuid)
        except StoreError:
            return Answer.error(503, "store_unavailable")
        if known is None:
            return Answer.error(401, "unknown_device")
        try:
            return self._verified(envelope, known[0], check), known[1]
        except Refused as refused:
            return refused.answer

    def _apply_refusals(self, payload: dict, hostname: str) -> None:
        """A refusal the agent reports again in a check-in (its ack may never have arrived) closes the order."""
        order_ids = {r["order_id"]: r["reason"] for r in payload["refused"] if r.get("order_id")}
        if not order_ids:
            return
        order = self.store.open_order(payload["device_uuid"])
        if order is not None and order.state == "queued" and order.id in order_ids:
            self.store.acknowledge_order(order.id, device_uuid=order.device_uuid, nonce=order.nonce,
                                         status="refused", reason=order_ids[order.id], actor=f"agent:{hostname}")


def _parse(body: bytes, kind: str):
    """(envelope, claimed device uuid) of a signed body, not yet verified; or the Answer that refuses it."""
    try:
        envelope = P.parse_envelope(body, P.LIMITS[kind])
        claimed = envelope.unverified_payload()
    except P.ProtocolError as exc:
        return _protocol_answer(exc)
    device_uuid = claimed.get("device_uuid")
    if not isinstance(device_uuid, str) or len(device_uuid) != 36:
        return Answer.error(400, "malformed", "no device_uuid")
    return envelope, device_uuid


def claimed_device(body: bytes, kind: str) -> str | None:
    """The device UUID a body claims (not verified), for the refusal log; None if it names none."""
    parsed = _parse(body, kind) if body else None
    return None if parsed is None or isinstance(parsed, Answer) else parsed[1]


def _protocol_answer(exc) -> Answer:
    return Answer.error(_PROTOCOL_STATUS.get(exc.reason, 400), exc.reason, exc.detail)


def _key_id(pem: str) -> str | None:
    try:
        return _public_key(pem)[1]
    except ValueError:  # not a key: looked up again, then refused as unknown_device
        return None


@lru_cache(maxsize=KEY_CACHE)
def _public_key(pem: str):
    """(parsed key, key_id) of a PEM: parsing and hashing it for every report would be a tenth of its cost."""
    key = P.load_public_key(pem)
    return key, P.key_id(key)
