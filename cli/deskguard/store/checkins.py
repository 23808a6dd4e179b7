"""The store's agent side: each device's agent public key, its latest check-in and when it was last seen.

Mixed into ``Store``. A check-in is not audited (one per laptop every few minutes would drown the log; the
audit log is for admin actions and order transitions); registering or changing an agent key is.
"""

from __future__ import annotations

import datetime as dt

from dataclasses import dataclass
from typing import Callable

from sqlalchemy import DateTime, String, bindparam, select, update
from sqlalchemy.exc import DBAPIError

from ..errors import UsageError
from .auditchain import canonical_json
from .models import Checkin, Device, utcnow

SEEN_VIA = ("checkin", "live")


class CheckinReplayed(UsageError):
    """The check-in is not newer than the last one stored for the device (the server answers 409)."""


class AgentKeyChanged(UsageError):
    """The device's agent key is not the one the check-in was verified with (re-enrolled or revoked since)."""


@dataclass(frozen=True)
class VerifiedCheckin:
    """A check-in whose signature the caller checked with ``agent_public_key`` (the PEM it read; None: the
    caller vouches for it some other way, e.g. a test or a tool), ready for Store.store_checkins."""

    device_uuid: str
    agent_public_key: str | None
    payload: str                     # the verified payload, JSON text
    sent_at: dt.datetime
    received_at: dt.datetime
    agent_version: str | None
    then: Callable[[], None] | None = None   # more store work that must commit with it, or not at all

    def values(self) -> dict:
        return {"device": self.device_uuid, "payload": self.payload, "sent_at": _naive(self.sent_at),
                "received_at": _naive(self.received_at), "agent_version": self.agent_version}


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
        from .common import DeviceNotFound

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
        CheckinReplayed if sent_at is not after the stored one; DeviceNotFound for no live device."""
        version = payload.get("agent_version") if isinstance(payload.get("agent_version"), str) else None
        [failure] = self.store_checkins([VerifiedCheckin(device_uuid, None, canonical_json(payload), sent_at,
                                                         received_at or utcnow(), version)])
        if failure is not None:
            raise failure

    def store_checkins(self, checkins: list["VerifiedCheckin"]) -> list[BaseException | None]:
        """The server's group commit: verified check-ins (from many laptops) stored in one write transaction
        and one commit, each accepted or refused on its own; the outcome of each, in order (None = stored).

        Everything that decides is read inside the transaction, under the devices' row locks (SQLite: the
        write lock), so no other writer can slip in between: a device removed, or whose agent key is no longer
        the one the check-in was verified with, is refused (DeviceNotFound, AgentKeyChanged) however recently
        that changed; a check-in not newer than the stored one is CheckinReplayed, across server processes.
        Accepted check-ins are written with one statement each for all of them (executemany); one with a
        ``then`` step (an order refusal it reports) is written with that step in its own savepoint, so the two
        are stored together or not at all. StoreError if the transaction fails: then nothing was stored."""
        from .common import DeviceNotFound

        results: list[BaseException | None] = [None] * len(checkins)
        with self._session(write=True) as s:
            conn = s.connection()
            uuids = sorted({c.device_uuid for c in checkins})
            # Row locks in one order (uuid) so two servers' batches never deadlock (PostgreSQL; SQLite ignores
            # FOR UPDATE: BEGIN IMMEDIATE already made this the only writer).
            live = {r.uuid: r for r in conn.execute(_HOT.lock_devices, {"uuids": uuids})}
            # A second statement, after the locks: on PostgreSQL it sees every check-in committed before them.
            latest = dict(conn.execute(_HOT.latest_sent, {"uuids": uuids}).all())
            pending: dict[str, dict] = {}
            for i, c in enumerate(checkins):
                row = live.get(c.device_uuid)
                sent_at = _naive(c.sent_at)
                if row is None or row.state == "removed":
                    results[i] = DeviceNotFound(f"no live device with uuid {c.device_uuid!r} in the store")
                elif c.agent_public_key is not None and row.agent_public_key != c.agent_public_key:
                    results[i] = AgentKeyChanged(f"the agent key of {c.device_uuid} changed since the check-in "
                                                 "was verified")
                elif latest.get(c.device_uuid) is not None and sent_at <= latest[c.device_uuid]:
                    results[i] = CheckinReplayed(
                        f"check-in of {c.device_uuid} sent at {sent_at:%Y-%m-%dT%H:%M:%SZ} is not after the stored "
                        f"one ({latest[c.device_uuid]:%Y-%m-%dT%H:%M:%SZ})")
                elif c.then is None:
                    pending[c.device_uuid] = c.values()  # a later one of the same device in the batch wins
                    latest[c.device_uuid] = sent_at
                else:
                    self._write_checkins(conn, pending)  # keep the order: what came before is written first
                    pending = {}
                    try:
                        with s.begin_nested():  # s.connection() is what emits the SAVEPOINT
                            self._write_checkins(s.connection(), {c.device_uuid: c.values()})
                            c.then()
                        latest[c.device_uuid] = sent_at
                    except DBAPIError:
                        raise
                    except Exception as exc:
                        results[i] = exc
            self._write_checkins(conn, pending)
        return results

    @staticmethod
    def _write_checkins(conn, values: dict[str, dict]) -> None:
        if not values:
            return
        rows = list(values.values())
        upsert = _HOT.upsert_postgresql if conn.dialect.name == "postgresql" else _HOT.upsert_sqlite
        conn.execute(upsert, rows)
        conn.execute(_HOT.seen_one, rows)

    def agent_key(self, device_uuid: str) -> tuple[str, str] | None:
        """(agent public key PEM, hostname) of a live device that has one."""
        return self.agent_keys([device_uuid]).get(device_uuid)

    def agent_keys(self, device_uuids) -> dict[str, tuple[str, str]]:
        """{uuid: (agent public key PEM, hostname)} of the live devices among ``device_uuids`` that have one:
        the server asks this for the laptops of a batch whose keys it does not hold in memory, in one query."""
        params = {"uuids": list(device_uuids)}
        current = getattr(self._local, "session", None)
        if current is not None:
            rows = current.connection().execute(_HOT.agent_keys, params).all()
        else:
            with self.engine.connect() as conn:
                rows = conn.execute(_HOT.agent_keys, params).all()
        return {r.uuid: (r.agent_public_key, r.hostname) for r in rows}

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
        from sqlalchemy.dialects import postgresql, sqlite

        devices, checkins = Device.__table__, Checkin.__table__
        uuids = bindparam("uuids", expanding=True)
        device = bindparam("device", type_=String)  # in a row of VerifiedCheckin.values()
        self.lock_devices = (select(devices.c.uuid, devices.c.state, devices.c.agent_public_key)
                             .where(devices.c.uuid.in_(uuids)).order_by(devices.c.uuid).with_for_update())
        self.latest_sent = select(checkins.c.device_uuid, checkins.c.sent_at).where(checkins.c.device_uuid.in_(uuids))
        self.agent_keys = select(devices.c.uuid, devices.c.agent_public_key, devices.c.hostname).where(
            devices.c.uuid.in_(uuids), devices.c.state != "removed", devices.c.agent_public_key.is_not(None))
        columns = {c: bindparam(c) for c in ("payload", "sent_at", "received_at", "agent_version")}
        # Insert or replace, and only ever by a newer check-in: the WHERE is the store's own guard against a
        # replay, on top of the check made under the row lock.
        for name, dialect in (("sqlite", sqlite), ("postgresql", postgresql)):
            ins = dialect.insert(checkins).values(device_uuid=device, **columns)
            setattr(self, f"upsert_{name}", ins.on_conflict_do_update(
                index_elements=[checkins.c.device_uuid], where=checkins.c.sent_at < ins.excluded.sent_at,
                set_={c: ins.excluded[c] for c in columns}))
        # Being seen is not a change to the device's record (updated_at kept), and only ever moves last_seen_at
        # forward (a late live run never hides a newer check-in).
        def seen(where, at: str, via):
            at = bindparam(at, type_=DateTime)
            return (update(devices).where(where, devices.c.last_seen_at.is_(None) | (devices.c.last_seen_at < at))
                    .values(last_seen_at=at, last_seen_via=via, updated_at=devices.c.updated_at))

        self.seen = seen(devices.c.uuid.in_(uuids), "at", bindparam("via"))
        self.seen_one = seen(devices.c.uuid == device, "received_at", "checkin")  # a row of _write_checkins


_HOT = _HotStatements()
