"""The store's agent side: each device's agent public key, its latest check-in and when it was last seen.

Mixed into ``Store``. A check-in is not audited (one per laptop every few minutes would drown the log; the
audit log is for admin actions and order transitions); registering or changing an agent key is.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import DateTime, String, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from ..errors import UsageError
from .auditchain import canonical_json
from .models import Checkin, Device, utcnow

SEEN_VIA = ("checkin", "live")


class CheckinReplayed(UsageError):
    """The check-in is not newer than the last one stored for the device (the server answers 409)."""


def _naive(t: dt.datetime) -> dt.datetime:
    return t if t.tzinfo is None else t.astimezone(dt.timezone.utc).replace(tzinfo=None)


def _proto():
    from ..site import module_utils

    return module_utils("deskguard_protocol")


class CheckinsMixin:
    def device_by_uuid(self, device_uuid: str) -> Device | None:
        with self._session(write=False) as s:
            return s.get(Device, device_uuid)

    def set_agent_public_key(self, device_uuid: str, pem: str, *, actor: str | None = None) -> Device:
        """Register (or replace) the device's agent key: ECDSA P-256 PEM; audited with old and new key ids."""
        proto = _proto()
        try:
            new_id = proto.key_id(proto.load_public_key(pem))
        except (ValueError, TypeError):
            raise UsageError("the agent public key is not an ECDSA P-256 public key in PEM form") from None
        from .core import DeviceNotFound

        with self._session(write=True) as s:
            device = s.get(Device, device_uuid)
            if device is None or device.state == "removed":
                raise DeviceNotFound(f"no live device with uuid {device_uuid!r} in the store")
            old = device.agent_public_key
            if old == pem:
                return device
            device.agent_public_key = pem
            device.updated_at = utcnow()
            s.flush()
            self._append_audit(s, actor, "agent.key", device.hostname,
                               {"uuid": device_uuid, "key_id": new_id,
                                "old_key_id": proto.key_id(proto.load_public_key(old)) if old else None})
            return device

    def get_agent_public_key(self, device_uuid: str) -> str | None:
        """The device's agent key (PEM), None if it has none or is removed (a removed laptop is not heard)."""
        with self._session(write=False) as s:
            row = s.execute(select(Device.agent_public_key).where(
                Device.uuid == device_uuid, Device.state != "removed")).first()
            return row[0] if row else None

    def record_checkin(self, device_uuid: str, payload: dict, sent_at: dt.datetime, *,
                       received_at: dt.datetime | None = None) -> None:
        """Store a verified check-in as the device's latest, and stamp last seen, in one transaction.
        CheckinReplayed if sent_at is not after the stored one; DeviceNotFound for no live device.

        The server's hot path: three statements built once (_HOT), no ORM objects."""
        from .core import DeviceNotFound

        sent_at, received_at = _naive(sent_at), _naive(received_at or utcnow())
        version = payload.get("agent_version") if isinstance(payload.get("agent_version"), str) else None
        values = {"uuid": device_uuid, "payload": canonical_json(payload), "sent_at": sent_at,
                  "received_at": received_at, "agent_version": version}
        with self._session(write=True) as s:
            conn = s.connection()
            found = conn.execute(_HOT.lookup, values).first()
            if found is None or found.state == "removed":
                raise DeviceNotFound(f"no live device with uuid {device_uuid!r} in the store")
            if found.sent_at is not None and sent_at <= found.sent_at:
                raise CheckinReplayed(f"check-in of {device_uuid} sent at {sent_at:%Y-%m-%dT%H:%M:%SZ} is not after "
                                      f"the stored one ({found.sent_at:%Y-%m-%dT%H:%M:%SZ})")
            if found.sent_at is None:
                try:
                    with s.begin_nested():
                        conn.execute(_HOT.insert, values)
                except IntegrityError:  # PostgreSQL: a concurrent first check-in of the same device won
                    raise CheckinReplayed(f"a concurrent check-in of {device_uuid} was stored first") from None
            else:
                conn.execute(_HOT.update, values)
            conn.execute(_HOT.seen, {"uuids": [device_uuid], "at": received_at, "via": "checkin"})

    def agent_key(self, device_uuid: str) -> tuple[str, str] | None:
        """(agent public key PEM, hostname) of a live device that has one: the server asks this for every laptop
        whose key it does not hold in memory, so it is one prebuilt query on a plain connection."""
        current = getattr(self._local, "session", None)
        if current is not None:
            row = current.connection().execute(_HOT.agent_key, {"uuid": device_uuid}).first()
        else:
            with self.engine.connect() as conn:
                row = conn.execute(_HOT.agent_key, {"uuid": device_uuid}).first()
        return (row[0], row[1]) if row else None

    def mark_seen(self, device_uuids, *, via: str = "live", at: dt.datetime | None = None) -> None:
        """Stamp last seen for devices the kit reached (e.g. the hosts a compliance run collected from)."""
        if via not in SEEN_VIA:
            raise UsageError(f"unknown way of being seen {via!r} (one of {', '.join(SEEN_VIA)})")
        with self._session(write=True) as s:
            self._stamp_seen(s, list(device_uuids), _naive(at or utcnow()), via)

    def latest_checkins(self, device_uuids=None) -> dict[str, Checkin]:
        """{device uuid: its latest check-in}, for all devices or the given ones."""
        with self._session(write=False) as s:
            q = select(Checkin)
            if device_uuids is not None:
                q = q.where(Checkin.device_uuid.in_(list(device_uuids)))
            return {c.device_uuid: c for c in s.scalars(q)}

    @staticmethod
    def _stamp_seen(s, device_uuids, at: dt.datetime, via: str) -> None:
        s.connection().execute(_HOT.seen, {"uuids": list(device_uuids), "at": at, "via": via})


class _HotStatements:
    """The check-in path's statements, built once: building and cache-keying a statement per call was most of
    a check-in's CPU time (tests/bench/checkin.py)."""

    def __init__(self):
        devices, checkins = Device.__table__, Checkin.__table__
        uuid = bindparam("uuid", type_=String)
        self.lookup = (select(devices.c.state, checkins.c.sent_at)
                       .select_from(devices.outerjoin(checkins, checkins.c.device_uuid == devices.c.uuid))
                       .where(devices.c.uuid == uuid).with_for_update(of=devices))
        self.agent_key = select(devices.c.agent_public_key, devices.c.hostname).where(
            devices.c.uuid == uuid, devices.c.state != "removed", devices.c.agent_public_key.is_not(None))
        columns = {c: bindparam(c) for c in ("payload", "sent_at", "received_at", "agent_version")}
        self.insert = insert(checkins).values(device_uuid=uuid, **columns)
        self.update = update(checkins).where(checkins.c.device_uuid == uuid).values(**columns)
        # Being seen is not a change to the device's record (updated_at kept), and only ever moves last_seen_at
        # forward (a late live run never hides a newer check-in).
        at = bindparam("at", type_=DateTime)
        self.seen = (update(devices)
                     .where(devices.c.uuid.in_(bindparam("uuids", expanding=True)),
                            (devices.c.last_seen_at.is_(None)) | (devices.c.last_seen_at < at))
                     .values(last_seen_at=at, last_seen_via=bindparam("via"), updated_at=devices.c.updated_at))


_HOT = _HotStatements()
