"""The store's agent side: each device's agent public key, its latest check-in and when it was last seen.

Mixed into ``Store``. A check-in is not audited (one per laptop every few minutes would drown the log; the
audit log is for admin actions and order transitions); registering or changing an agent key is.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select, update
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
                       received_at: dt.datetime | None = None) -> Checkin:
        """Store a verified check-in as the device's latest, and stamp last seen, in one transaction.
        CheckinReplayed if sent_at is not after the stored one; DeviceNotFound for no live device."""
        from .core import DeviceNotFound

        sent_at, received_at = _naive(sent_at), _naive(received_at or utcnow())
        text = canonical_json(payload)
        version = payload.get("agent_version") if isinstance(payload.get("agent_version"), str) else None
        with self._session(write=True) as s:
            state = s.execute(select(Device.state).where(Device.uuid == device_uuid)).scalar()
            if state is None or state == "removed":
                raise DeviceNotFound(f"no live device with uuid {device_uuid!r} in the store")
            row = s.get(Checkin, device_uuid, with_for_update=True)
            if row is not None and sent_at <= row.sent_at:
                raise CheckinReplayed(f"check-in of {device_uuid} sent at {sent_at:%Y-%m-%dT%H:%M:%SZ} is not after "
                                      f"the stored one ({row.sent_at:%Y-%m-%dT%H:%M:%SZ})")
            if row is None:
                row = Checkin(device_uuid=device_uuid, payload=text, sent_at=sent_at, received_at=received_at,
                              agent_version=version)
                s.add(row)
                try:
                    with s.begin_nested():
                        s.flush()
                except IntegrityError:  # PostgreSQL: a concurrent first check-in of the same device won
                    raise CheckinReplayed(f"a concurrent check-in of {device_uuid} was stored first") from None
            else:
                row.payload, row.sent_at, row.received_at, row.agent_version = text, sent_at, received_at, version
            self._stamp_seen(s, [device_uuid], received_at, "checkin")
            return row

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
        # Core UPDATE, and updated_at kept as it is: being seen is not a change to the device's record. Only
        # ever moves last_seen_at forward (a late live run never hides a newer check-in).
        s.execute(update(Device).where(Device.uuid.in_(device_uuids),
                                       (Device.last_seen_at.is_(None)) | (Device.last_seen_at < at))
                  .values(last_seen_at=at, last_seen_via=via, updated_at=Device.updated_at)
                  .execution_options(synchronize_session=False))
