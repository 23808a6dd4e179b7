"""The store's orders: signed wipe/lock orders and their states (docs/agent-protocol.md, "Order states").

Mixed into ``Store``. Every transition is audited in its own transaction, together with what it implies for the
device: a queued wipe marks it wipe-pending, an accepted wipe acknowledgement marks it wiping *and destroys its
escrowed secrets* (the header backup plus an escrowed key would otherwise bring the disk back), a cancel, a
refusal or an expiry gives it back the state it had. Nothing is ever "done" without an accepted acknowledgement.
"""

from __future__ import annotations

import datetime as dt
import json

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..errors import UsageError
from .models import OPEN_ORDER_STATES, ORDER_STATES, Checkin, Device, Order, Secret, utcnow

ACTIONS = ("wipe", "lock")
# Device states that mean a wipe already ran or is running: a new order for such a device is refused.
WIPED_STATES = ("wiping", "wiped")


class OrderNotFound(UsageError):
    """No order with this id (or id prefix): exit 2."""


class OrderStateError(UsageError):
    """The order is not in a state that allows this transition (the server answers 409): exit 2."""


def _naive(t: dt.datetime) -> dt.datetime:
    return t if t.tzinfo is None else t.astimezone(dt.timezone.utc).replace(tzinfo=None)


class OrdersMixin:
    def create_order(self, device_uuid: str, payload: dict, envelope: str, *, reason: str,
                     ticket: str | None = None, actor: str | None = None) -> Order:
        """Record a signed order (``payload`` as built by deskguard_protocol.build_order, ``envelope`` the file
        that is published) as queued. Refused for a device that is removed, wiped or wiping, or that has an
        open order already (cancel it first)."""
        from . import common

        reason = common._clean(reason, "reason", max_len=1000)
        ticket = common._clean(ticket, "ticket", required=False, max_len=64)
        if payload.get("action") not in ACTIONS or payload.get("device_uuid") != device_uuid:
            raise UsageError("the order payload does not match the device or names an unknown action")
        from ..site import module_utils

        proto = module_utils("deskguard_protocol")
        with self._session(write=True) as s:
            device = s.get(Device, device_uuid)
            if device is None or device.state == "removed":
                raise common.DeviceNotFound(f"no live device with uuid {device_uuid!r} in the store")
            if device.state in WIPED_STATES:
                raise OrderStateError(f"{device.hostname} is already {device.state}: nothing left to "
                                      f"{payload['action']}")
            open_order = self._open_order(s, device_uuid)
            if open_order is not None:
                raise OrderStateError(f"{device.hostname} already has {open_order.state} {open_order.action} order "
                                      f"{open_order.id}; cancel it first (`deskguard orders cancel {open_order.id}`)"
                                      if open_order.state == "queued" else
                                      f"{device.hostname} already acknowledged {open_order.action} order "
                                      f"{open_order.id}: it is being carried out")
            order = Order(id=payload["order_id"], device_uuid=device_uuid, action=payload["action"],
                          volumes=json.dumps(payload["volumes"]), nonce=payload["nonce"], envelope=envelope,
                          state="queued", prior_device_state=device.state, actor=actor or common.default_actor(),
                          reason=reason, ticket=ticket,
                          issued_at=_naive(proto.parse_time(payload["issued_at"])),
                          expires_at=_naive(proto.parse_time(payload["expires_at"])), created_at=utcnow())
            s.add(order)
            s.flush()
            if order.action == "wipe":
                self._device_state(s, device, "wipe-pending", actor, order)
            self._append_audit(s, actor, f"order.{order.action}", device.hostname,
                               {"uuid": device_uuid, "order_id": order.id, "volumes": payload["volumes"],
                                "keep_keyslots": payload.get("keep_keyslots"), "reason": reason, "ticket": ticket,
                                "expires_at": payload["expires_at"]})
            return order

    def acknowledge_order(self, order_id: str, *, device_uuid: str, nonce: str, status: str,
                          reason: str | None = None, actor: str | None = None) -> tuple[Order, bool]:
        """Apply a verified acknowledgement: (order, changed). queued → acknowledged (accepted; a wipe also
        destroys the device's escrowed secrets) or refused (with the agent's reason). A repeated accepted ack of
        an acknowledged order changes nothing (the agent retries when it missed our answer). Anything else,
        an unknown order, another device's or another nonce: OrderStateError."""
        if status not in ("accepted", "refused"):
            raise UsageError(f"unknown acknowledgement status {status!r}")
        with self._session(write=True) as s:
            order = s.get(Order, order_id, with_for_update=True)
            if order is None or order.device_uuid != device_uuid or order.nonce != nonce:
                raise OrderStateError(f"no order {order_id} with this nonce for device {device_uuid}")
            if order.state == "acknowledged" and status == "accepted":
                return order, False
            if order.state != "queued":
                raise OrderStateError(f"order {order_id} is {order.state}, not queued")
            device = s.get(Device, device_uuid)
            now = utcnow()
            if status == "refused":
                self._close(s, order, "refused", reason or "unspecified", now)
                self._device_state(s, device, order.prior_device_state, actor, order)
                self._append_audit(s, actor, "order.refused", device.hostname,
                                   {"uuid": device_uuid, "order_id": order.id, "reason": order.state_reason})
                return order, True
            order.state = "acknowledged"
            order.acknowledged_at = now
            s.flush()
            self._append_audit(s, actor, "order.acknowledged", device.hostname,
                               {"uuid": device_uuid, "order_id": order.id, "action": order.action})
            if order.action == "wipe":
                self._device_state(s, device, "wiping", actor, order)
                self.destroy_secrets(device_uuid, actor=actor, reason=f"wipe order {order.id} acknowledged")
            else:
                self._device_state(s, device, "locked", actor, order)
            return order, True

    def cancel_order(self, order_id: str, cancel_envelope: str, *, actor: str | None = None) -> Order:
        """queued → cancelled, recording the signed cancel that replaces the published order. An acknowledged
        order cannot be cancelled: the laptop has started."""
        with self._session(write=True) as s:
            order = self._require_order(s, order_id)
            if order.state != "queued":
                raise OrderStateError(f"order {order.id} is {order.state}: only a queued order can be cancelled"
                                      + (" (the laptop acknowledged it and has started)"
                                         if order.state == "acknowledged" else ""))
            device = s.get(Device, order.device_uuid)
            order.cancel_envelope = cancel_envelope
            self._close(s, order, "cancelled", f"cancelled by {actor or _actor()}", utcnow())
            self._device_state(s, device, order.prior_device_state, actor, order)
            self._append_audit(s, actor, "order.cancel", device.hostname,
                               {"uuid": order.device_uuid, "order_id": order.id, "action": order.action})
            return order

    def complete_order(self, order_id: str, why: str, *, actor: str | None = None) -> Order:
        """acknowledged → done (never from any other state). A wiped device becomes "wiped"."""
        with self._session(write=True) as s:
            order = self._require_order(s, order_id)
            if order.state != "acknowledged":
                raise OrderStateError(f"order {order.id} is {order.state}: only an acknowledged order can be done")
            device = s.get(Device, order.device_uuid)
            self._close(s, order, "done", why, utcnow())
            if order.action == "wipe":
                self._device_state(s, device, "wiped", actor, order)
            self._append_audit(s, actor, "order.done", device.hostname,
                               {"uuid": order.device_uuid, "order_id": order.id, "why": why})
            return order

    def expire_orders(self, *, now: dt.datetime | None = None, actor: str | None = None) -> list[Order]:
        """Queued orders past expires_at → expired (each audited); the devices get their prior state back."""
        now = _naive(now or utcnow())
        with self._session(write=True) as s:
            due = list(s.scalars(select(Order).where(Order.state == "queued", Order.expires_at < now)))
            for order in due:
                device = s.get(Device, order.device_uuid)
                self._close(s, order, "expired", "not acknowledged before it expired", now)
                self._device_state(s, device, order.prior_device_state, actor, order)
                self._append_audit(s, actor, "order.expired", device.hostname,
                                   {"uuid": order.device_uuid, "order_id": order.id})
            return due

    def settle_orders(self, grace: dt.timedelta, *, now: dt.datetime | None = None,
                      actor: str | None = None) -> list[Order]:
        """Acknowledged orders that are now done: a wipe whose device re-enrolled with other volumes (a live
        secret escrowed after the ack for a volume the order did not name), or that stayed silent (no check-in
        received after the ack) for ``grace``; a lock once ``grace`` has passed since the ack."""
        now = _naive(now or utcnow())
        settled = []
        with self._session(write=False) as s:
            candidates = list(s.scalars(select(Order).where(Order.state == "acknowledged")))
            why = {}
            for order in candidates:
                silent_since = now - order.acknowledged_at >= grace
                if order.action == "lock":
                    if silent_since:
                        why[order.id] = f"lock acknowledged {_period(grace)} ago"
                    continue
                if self._reenrolled(s, order):
                    why[order.id] = "re-enrolled with new volumes after the wipe"
                    continue
                checkin = s.get(Checkin, order.device_uuid)
                heard = checkin is not None and checkin.received_at > order.acknowledged_at
                if silent_since and not heard:
                    why[order.id] = f"no check-in for {_period(grace)} after the acknowledged wipe"
        for order_id, text in why.items():
            try:
                settled.append(self.complete_order(order_id, text, actor=actor))
            except OrderStateError:  # another process settled or changed it meanwhile
                continue
        return settled

    def close_lock_on_return(self, hostname: str, *, actor: str | None = None) -> Order | None:
        """The way back from a lock is onboarding the laptop again (docs/agent.md): once that succeeded, the
        device's acknowledged lock order is done. Left open it would refuse every new order for the device
        (a wipe of the same laptop stolen later) until `orders settle` after the grace period. Returns it."""
        device = self.require_device(hostname)
        current = self.open_order(device.uuid)
        if current is None or current.action != "lock" or current.state != "acknowledged":
            return None
        try:
            return self.complete_order(current.id, "the laptop was onboarded again after the lock", actor=actor)
        except OrderStateError:  # settled or changed by another process meanwhile
            return None

    def get_order(self, order_id: str) -> Order:
        """The order with this id, or the one whose id starts with it (at least 8 characters, unambiguous)."""
        with self._session(write=False) as s:
            return self._require_order(s, order_id)

    def list_orders(self, *, device_uuid: str | None = None, states: tuple[str, ...] | None = None) -> list[Order]:
        with self._session(write=False) as s:
            q = select(Order).order_by(Order.created_at)
            if device_uuid:
                q = q.where(Order.device_uuid == device_uuid)
            if states:
                unknown = set(states) - set(ORDER_STATES)
                if unknown:
                    raise UsageError(f"unknown order state {sorted(unknown)[0]!r} (one of {', '.join(ORDER_STATES)})")
                q = q.where(Order.state.in_(states))
            return list(s.scalars(q))

    def open_order(self, device_uuid: str) -> Order | None:
        """The device's queued or acknowledged order, if any (there is at most one)."""
        with self._session(write=False) as s:
            return self._open_order(s, device_uuid)

    # -- helpers --------------------------------------------------------------------------------------------

    @staticmethod
    def _open_order(s: Session, device_uuid: str) -> Order | None:
        return s.scalars(select(Order).where(Order.device_uuid == device_uuid,
                                             Order.state.in_(OPEN_ORDER_STATES))).first()

    @staticmethod
    def _require_order(s: Session, order_id: str) -> Order:
        order = s.get(Order, order_id) if isinstance(order_id, str) and len(order_id) == 36 else None
        if order is None and isinstance(order_id, str) and len(order_id) >= 8:
            found = list(s.scalars(select(Order).where(Order.id.startswith(order_id, autoescape=True)).limit(2)))
            if len(found) == 2:
                raise OrderNotFound(f"order id {order_id!r} is ambiguous: give more characters")
            order = found[0] if found else None
        if order is None:
            raise OrderNotFound(f"no order {str(order_id)[:40]!r} in the store (see `deskguard orders list`)")
        return order

    @staticmethod
    def _close(s: Session, order: Order, state: str, why: str, now: dt.datetime) -> None:
        order.state = state
        order.state_reason = why
        order.closed_at = now
        s.flush()

    def _device_state(self, s: Session, device: Device, state: str, actor: str | None, order: Order) -> None:
        if device.state == state or device.state == "removed":
            return
        old = device.state
        device.state = state
        device.updated_at = utcnow()
        s.flush()
        self._append_audit(s, actor, "device.state", device.hostname,
                           {"uuid": device.uuid, "old": old, "new": state, "order_id": order.id})

    @staticmethod
    def _reenrolled(s: Session, order: Order) -> bool:
        named = set(order.volume_list)
        newer = s.scalars(select(Secret.key_id).where(
            Secret.device_uuid == order.device_uuid, Secret.created_at > order.acknowledged_at,
            Secret.state.in_(("pending", "active"))))
        return any(volume_of(k) not in named for k in newer)


def volume_of(key_id: str) -> str | None:
    """The volume an escrowed secret belongs to, from its key id: "luks:<LUKS UUID>:<slot>" gives the LUKS UUID,
    "bitlocker:<mount>:<tag>" the mount point ("C:"), which is what escrow records of a BitLocker volume."""
    kind, sep, rest = key_id.partition(":")
    if not sep or ":" not in rest:
        return None
    return rest.rsplit(":", 1)[0]


def _period(grace: dt.timedelta) -> str:
    """3 days, 12 hours, 90 minutes, 30 seconds: the unit that reads best (`orders settle --grace` can be short)."""
    seconds = grace.total_seconds()
    size, unit = next((s, u) for s, u in ((86400, "day"), (3600, "hour"), (60, "minute"), (1, "second"))
                      if seconds >= s or s == 1)
    amount = seconds / size
    return f"{amount:g} {unit}" + ("" if amount == 1 else "s")


def _actor() -> str:
    from .common import default_actor

    return default_actor()
