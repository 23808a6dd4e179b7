"""What the server does with an acknowledgement or a check-in body: verify it, store it, say how it went.

Plain synchronous code over the Store (the HTTP layer runs it in a worker thread), so the whole decision is
testable without a socket. Each request is one store transaction: a check-in and the refusals it reports are
stored together or not at all. Answers follow docs/agent-protocol.md, "Server answers".
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from dataclasses import dataclass

from ..site import module_utils
from ..store import CheckinReplayed, DeviceNotFound, OrderStateError, Store, StoreError

P = module_utils("deskguard_protocol")
KEY_CACHE_SECONDS = 60.0  # a re-enrolled laptop's new key is picked up within this time


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict

    @classmethod
    def error(cls, status: int, error: str, detail: str | None = None) -> "Answer":
        return cls(status, {"error": error, **({"detail": detail} if detail else {})})


OK = Answer(200, {"ok": True})
_PROTOCOL_STATUS = {"oversized": 413, "malformed": 400, "unsupported": 400}


class Ingest:
    def __init__(self, store: Store, *, now=None):
        self.store = store
        self._now = now or (lambda: dt.datetime.now(dt.timezone.utc))
        self._keys: dict[str, tuple[float, object, str]] = {}
        self._lock = threading.Lock()

    # -- the two POSTs -------------------------------------------------------------------------------------

    def checkin(self, body: bytes) -> Answer:
        got = self._open(body, "checkin", P.check_checkin)
        if isinstance(got, Answer):
            return got
        payload, hostname = got
        sent_at = P.parse_time(payload["sent_at"])
        try:
            with self.store.transaction():
                self.store.record_checkin(payload["device_uuid"], payload, sent_at)
                self._apply_refusals(payload, hostname)
        except CheckinReplayed:
            return Answer.error(409, "replayed", "sent_at is not after the last check-in")
        except DeviceNotFound:
            return Answer.error(401, "unknown_device")
        except StoreError:
            return Answer.error(503, "store_unavailable")
        return OK

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

    def _open(self, body: bytes, kind: str, check):
        """(verified payload, hostname) or the Answer that refuses it."""
        try:
            envelope = P.parse_envelope(body, P.LIMITS[kind])
            claimed = envelope.unverified_payload()
        except P.ProtocolError as exc:
            return Answer.error(_PROTOCOL_STATUS.get(exc.reason, 400), exc.reason, exc.detail)
        device_uuid = claimed.get("device_uuid")
        if not isinstance(device_uuid, str) or len(device_uuid) != 36:
            return Answer.error(400, "malformed", "no device_uuid")
        try:
            known = self._key(device_uuid)
        except StoreError:
            return Answer.error(503, "store_unavailable")
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

    def _key(self, device_uuid: str):
        """(public key, hostname) of a live device with an agent key, cached briefly: verifying is per request,
        the key changes only at enrolment."""
        now = time.monotonic()
        with self._lock:
            hit = self._keys.get(device_uuid)
        if hit and now - hit[0] < KEY_CACHE_SECONDS:
            return hit[1], hit[2]
        device = self.store.device_by_uuid(device_uuid)
        if device is None or device.state == "removed" or not device.agent_public_key:
            return None
        try:
            key = P.load_public_key(device.agent_public_key)
        except ValueError:
            return None
        with self._lock:
            self._keys[device_uuid] = (now, key, device.hostname)
        return key, device.hostname

    def _apply_refusals(self, payload: dict, hostname: str) -> None:
        """A refusal the agent reports again in a check-in (its ack may never have arrived) closes the order."""
        order_ids = {r["order_id"]: r["reason"] for r in payload["refused"] if r.get("order_id")}
        if not order_ids:
            return
        order = self.store.open_order(payload["device_uuid"])
        if order is not None and order.state == "queued" and order.id in order_ids:
            self.store.acknowledge_order(order.id, device_uuid=order.device_uuid, nonce=order.nonce,
                                         status="refused", reason=order_ids[order.id], actor=f"agent:{hostname}")
