"""The `Store`: devices, escrowed secrets and the audit log, behind a small explicit API.

Every public write runs in one transaction, and the audit row that records a change is written in that same
transaction. Calls made inside ``with store.transaction():`` join it, so a caller can make a store change and
a file change (the inventory) succeed or fail together: see ``deskguard.site.inventory.register_and_add``.
"""

from __future__ import annotations

import contextlib
import os
import threading
import uuid as uuidlib
from collections import OrderedDict
from pathlib import Path
from typing import Iterator

from sqlalchemy import Engine, create_engine, event, func, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from ..errors import UsageError
from ..hostnames import validate_hostname
from .auditchain import GENESIS, canonical_json, row_hash
from .common import DeviceExists, DeviceNotFound, StoreError, _clean, default_actor
from .models import DEVICE_STATES, SECRET_STATES, AuditEntry, Device, Secret, utcnow
from .baselines import KeyslotBaselinesMixin
from .checkins import CheckinsMixin
from .enrolments import EnrolmentsMixin
from .orders import OrdersMixin
from .readahead import ReadAheadMixin
from .vpnpeers import VpnPeersMixin

DB_URL_ENV = "DESKGUARD_DB_URL"
# How long a command waits for another writer to let go of a SQLite store before it gives up (seconds).
BUSY_TIMEOUT_ENV = "DESKGUARD_STORE_BUSY_TIMEOUT"
DEFAULT_BUSY_TIMEOUT = 30.0
STATE_DIR = ".deskguard"
DB_NAME = "deskguard.db"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# The newest revision in migrations/versions. A store already there is opened without loading Alembic
# (a test checks this matches Alembic's head: bump it with every new revision).
SCHEMA_HEAD = "0008"
_PG_MIGRATION_LOCK = 0x6465736B  # "desk": serialises concurrent `deskguard` processes migrating one database


def state_dir(site: Path) -> Path:
    return Path(site) / STATE_DIR


def default_db_path(site: Path) -> Path:
    return state_dir(site) / DB_NAME


def db_url_for(site: Path) -> str:
    """DESKGUARD_DB_URL if set (e.g. postgresql+psycopg://...), else the SQLite file under the site."""
    return os.environ.get(DB_URL_ENV) or f"sqlite:///{default_db_path(site)}"


def busy_timeout() -> float:
    """Seconds a SQLite writer waits for the lock: DESKGUARD_STORE_BUSY_TIMEOUT, else 30."""
    raw = os.environ.get(BUSY_TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_BUSY_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= 3600:
        raise UsageError(f"{BUSY_TIMEOUT_ENV}={raw!r} is not a number of seconds between 0 and 3600")
    return value


# One engine per database and busy timeout, kept for the process. In the nightly run ansible-playbook forks a
# worker per laptop: each inherits its main process's engine with the compiled queries of judging a laptop
# (deskguard.compliance.preload), where a new engine per laptop compiled each query again: ~50 ms of the
# controller's CPU a laptop before, ~15 ms after, in a forked child (docs/compliance.md, "Performance"). A forked child lets go of the parent's
# pooled connections without closing them (SQLAlchemy's rule for fork); Store.close() still closes the
# idle connections it pooled.
_ENGINES: OrderedDict[tuple[str, float | None], Engine] = OrderedDict()
_ENGINES_KEPT = 8
_ENGINES_LOCK = threading.Lock()


def _engine(url: str) -> Engine:
    key = (url, busy_timeout() if url.startswith("sqlite") else None)
    with _ENGINES_LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            engine = _ENGINES[key] = _make_engine(url, key[1])
            while len(_ENGINES) > _ENGINES_KEPT:
                _ENGINES.popitem(last=False)[1].dispose()
        else:
            _ENGINES.move_to_end(key)
        return engine


def _forget_parent_connections() -> None:
    global _ENGINES_LOCK
    _ENGINES_LOCK = threading.Lock()   # another thread of the parent may have held it at the fork
    for engine in _ENGINES.values():
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_forget_parent_connections)


def _make_engine(url: str, wait: float | None) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": wait})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            # Let SQLAlchemy's "begin" hook below issue BEGIN itself, so writers can take the lock up front.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={int(wait * 1000)}")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):
            # Writers take SQLite's write lock at BEGIN: the audit chain head they read stays the head until
            # they commit, and two admins never interleave. Readers do not block anyone (WAL).
            write = conn.get_execution_options().get("deskguard_write")
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        return engine
    return create_engine(url, pool_pre_ping=True)


def current_revision(engine: Engine) -> str | None:
    """The schema revision recorded in the database, None if it has none yet."""
    with engine.connect() as conn:
        if not conn.dialect.has_table(conn, "alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def migrate(engine: Engine) -> str | None:
    """Bring the schema to the newest revision (no-op when current). Returns the revision now in place."""
    if current_revision(engine) == SCHEMA_HEAD:
        return SCHEMA_HEAD
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("path_separator", "os")
    with engine.connect() as conn:
        conn.execution_options(deskguard_write=True)
        with conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            return MigrationContext.configure(conn).get_current_revision()


class Store(VpnPeersMixin, OrdersMixin, CheckinsMixin, KeyslotBaselinesMixin, EnrolmentsMixin, ReadAheadMixin):
    """Open with ``Store.open(site)`` (or ``Store(url)``); the schema is migrated on open."""

    def __init__(self, url: str, *, run_migrations: bool = True):
        self.url = url
        self.engine = _engine(url)
        self._local = threading.local()
        if run_migrations:
            try:
                self.revision = migrate(self.engine)
            except DBAPIError as exc:
                self.engine.dispose()
                raise StoreError(f"cannot open the store {self.safe_url}: {_one_line(exc)}") from None

    @classmethod
    def open(cls, site: Path, *, create: bool = False) -> "Store":
        """The site's store. ``create=False`` refuses a missing SQLite file (run `deskguard init` first)."""
        url = db_url_for(site)
        if not os.environ.get(DB_URL_ENV):
            path = default_db_path(site)
            if not path.exists():
                if not create:
                    raise StoreError(f"no store at {path}; run `deskguard init` first")
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))  # 0600 before SQLite creates it
        return cls(url)

    @property
    def safe_url(self) -> str:
        """The URL without a password, for messages."""
        from sqlalchemy.engine import make_url

        return make_url(self.url).render_as_string(hide_password=True)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- transactions ------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Session]:
        """One write transaction; store calls made inside join it. Commits at the end, rolls back on any
        exception (KeyboardInterrupt included)."""
        with self._session(write=True) as session:
            yield session

    @contextlib.contextmanager
    def reading(self) -> Iterator[Session]:
        """A read-only session (joins the current transaction if there is one)."""
        with self._session(write=False) as session:
            yield session

    @contextlib.contextmanager
    def _session(self, *, write: bool) -> Iterator[Session]:
        current = getattr(self._local, "session", None)
        if current is not None:
            yield current
            return
        session = Session(self.engine, expire_on_commit=False, autoflush=True)
        try:
            session.connection(execution_options={"deskguard_write": write})
        except DBAPIError as exc:
            session.close()
            raise StoreError(f"cannot use the store {self.safe_url}: {_one_line(exc)}") from None
        self._local.session = session
        try:
            yield session
            session.commit()
        except DBAPIError as exc:
            session.rollback()
            raise StoreError(f"store {self.safe_url}: {_one_line(exc)}; nothing was changed") from None
        except BaseException:
            session.rollback()
            raise
        finally:
            self._local.session = None
            session.close()

    # -- devices -----------------------------------------------------------------------------------------

    def register_device(self, hostname: str, os: str, address: str, port: int, ssh_user: str,
                        operator: str | None, *, os_version: str | None = None,
                        actor: str | None = None) -> Device:
        """A new device in state "registered", with a fresh UUID. DeviceExists if the hostname is live."""
        hostname = validate_hostname(hostname)
        fields = _device_fields(os=os, address=address, port=port, ssh_user=ssh_user, operator=operator,
                                os_version=os_version)
        with self._session(write=True) as s:
            existing = self._live(s, hostname)
            if existing is not None:
                raise _exists(existing)
            device = Device(uuid=str(uuidlib.uuid4()), hostname=hostname, state="registered", **fields)
            try:
                # Added inside the savepoint: if another admin won the race (PostgreSQL; SQLite serialises
                # writers), only this row is rolled back and the session can still say who has the name.
                with s.begin_nested():
                    s.add(device)
                    s.flush()
            except IntegrityError:
                raise _exists(self._live(s, hostname) or device) from None
            self._append_audit(s, actor, "device.register", hostname, {"uuid": device.uuid, **fields})
            return device

    def get_device(self, hostname: str, *, include_removed: bool = False) -> Device | None:
        """The live device with this hostname; with include_removed, else the most recently removed one."""
        with self._session(write=False) as s:
            device = self._live(s, hostname)
            if device is None and include_removed:
                device = s.scalars(select(Device).where(Device.hostname == hostname)
                                   .order_by(Device.updated_at.desc())).first()
            return device

    def require_device(self, hostname: str, *, include_removed: bool = False) -> Device:
        device = self.get_device(hostname, include_removed=include_removed)
        if device is None:
            raise DeviceNotFound(f"no device named {hostname!r} in the store (see `deskguard devices list`)")
        return device

    def list_devices(self, *, include_removed: bool = False) -> list[Device]:
        with self._session(write=False) as s:
            q = select(Device).order_by(Device.hostname, Device.created_at)
            if not include_removed:
                q = q.where(Device.state != "removed")
            return list(s.scalars(q))

    def update_device(self, hostname: str, *, actor: str | None = None, **changes) -> Device:
        """Change connection details (os, os_version, address, port, ssh_user, operator); audited with the
        old and new values. No-op (and no audit row) when nothing changes."""
        allowed = {"os", "os_version", "address", "port", "ssh_user", "operator"}
        unknown = set(changes) - allowed
        if unknown:
            raise UsageError(f"cannot change {', '.join(sorted(unknown))} with update_device")
        with self._session(write=True) as s:
            device = self._require_live(s, hostname)
            current = {k: getattr(device, k) for k in allowed}
            fields = _device_fields(**{**current, **changes})
            diff = {k: {"old": current[k], "new": v} for k, v in fields.items() if current[k] != v}
            if diff:
                for k, v in fields.items():
                    setattr(device, k, v)
                device.updated_at = utcnow()
                s.flush()
                self._append_audit(s, actor, "device.update", device.hostname, {"uuid": device.uuid, **diff})
            return device

    def set_device_state(self, hostname: str, state: str, *, actor: str | None = None,
                         detail: dict | None = None) -> Device:
        if state not in DEVICE_STATES:
            raise UsageError(f"unknown device state {state!r} (one of: {', '.join(DEVICE_STATES)})")
        if state == "removed":
            return self.remove_device(hostname, actor=actor)
        with self._session(write=True) as s:
            device = self._require_live(s, hostname)
            old = device.state
            if old != state:
                device.state = state
                device.updated_at = utcnow()
                s.flush()
                self._append_audit(s, actor, "device.state", device.hostname,
                                   {"uuid": device.uuid, "old": old, "new": state, **(detail or {})})
            return device

    def remove_device(self, hostname: str, actor: str | None = None) -> Device:
        """Mark removed (the row stays; its escrowed secrets stay until destroy_secrets), audited."""
        with self._session(write=True) as s:
            device = self._require_live(s, hostname)
            old = device.state
            device.state = "removed"
            device.updated_at = utcnow()
            s.flush()
            kept = s.scalar(select(func.count()).select_from(Secret).where(
                Secret.device_uuid == device.uuid, Secret.destroyed_at.is_(None)))
            self._append_audit(s, actor, "device.remove", device.hostname,
                               {"uuid": device.uuid, "old_state": old, "secrets_kept": kept})
            # A removed laptop must not keep a way into the company network: its peer is revoked (the gateway
            # drops it at the next `vpn_gateway.yml`) and its address returns to the pool, in this transaction.
            self.revoke_vpn_peer(device.uuid, reason="device removed", actor=actor)
            return device

    # -- escrowed secrets (ciphertext only) ---------------------------------------------------------------

    def add_secret(self, device_uuid: str, kind: str, key_id: str, ciphertext: bytes, *,
                   escrow_key_id: str | None = None, state: str = "active", actor: str | None = None) -> Secret:
        """Store a sealed secret (deskguard.recovery.keys.seal output). The audit row names it, never its value.

        Escrow stores a secret *pending* (committed before the device is touched) and activates it once the
        device proves it works (set_secret_state)."""
        if not isinstance(ciphertext, (bytes, bytearray)) or not ciphertext:
            raise UsageError("a secret must be stored sealed (bytes from deskguard.recovery.keys.seal)")
        if state not in ("pending", "active"):
            raise UsageError(f"a new secret is pending or active, not {state!r}")
        with self._session(write=True) as s:
            device = s.get(Device, device_uuid)
            if device is None:
                raise DeviceNotFound(f"no device with uuid {device_uuid!r} in the store")
            secret = Secret(device_uuid=device_uuid, kind=_clean(kind, "secret kind", max_len=64),
                            key_id=_clean(key_id, "key id", max_len=128), escrow_key_id=escrow_key_id,
                            ciphertext=bytes(ciphertext), state=state)
            s.add(secret)
            s.flush()
            self._append_audit(s, actor, "secret.escrow", device.hostname,
                               {"uuid": device_uuid, "secret_id": secret.id, "kind": kind, "key_id": key_id,
                                "escrow_key_id": escrow_key_id, "state": state})
            return secret

    def set_secret_state(self, secret_id: int, state: str, *, fingerprint: str | None = None,
                         verified: bool = False, actor: str | None = None, detail: dict | None = None) -> Secret:
        """Move a secret along its lifecycle (audited). Retired/abandoned/destroyed ones lose their ciphertext:
        they open nothing any more, and a ciphertext kept is one more thing to steal."""
        if state not in SECRET_STATES:
            raise UsageError(f"unknown secret state {state!r} (one of {', '.join(SECRET_STATES)})")
        with self._session(write=True) as s:
            secret = s.get(Secret, secret_id)
            if secret is None:
                raise UsageError(f"no secret #{secret_id} in the store")
            old = secret.state
            secret.state = state
            if fingerprint is not None:
                secret.fingerprint = fingerprint
            if verified:
                secret.verified_at = utcnow()
            if state in ("retired", "abandoned", "destroyed") and secret.destroyed_at is None:
                secret.ciphertext = None
                secret.destroyed_at = utcnow()
            s.flush()
            device = s.get(Device, secret.device_uuid)
            self._append_audit(s, actor, f"secret.{state}", device.hostname if device else secret.device_uuid,
                               {"uuid": secret.device_uuid, "secret_id": secret.id, "kind": secret.kind,
                                "key_id": secret.key_id, "old_state": old, **(detail or {})})
            return secret

    def mark_secret_verified(self, secret_id: int) -> None:
        """Stamp verified_at (not audited: the nightly check would flood the log; failures are audited)."""
        if self._read_ahead is not None:   # judging many laptops at once: written together at the end
            self._read_ahead.verified.append(secret_id)
            return
        with self._session(write=True) as s:
            secret = s.get(Secret, secret_id)
            if secret is not None:
                secret.verified_at = utcnow()

    def live_secrets(self, device_uuid: str, kind: str | None = None) -> list[Secret]:
        """Secrets that may still open the device (pending, active, mismatch), oldest first."""
        if ahead := self._ahead_for(device_uuid):
            return [sec for sec in ahead.secrets.get(device_uuid, []) if kind is None or sec.kind == kind]
        with self._session(write=False) as s:
            q = select(Secret).where(Secret.device_uuid == device_uuid,
                                     Secret.state.in_(("pending", "active", "mismatch")))
            if kind:
                q = q.where(Secret.kind == kind)
            return list(s.scalars(q.order_by(Secret.id)))

    def list_secrets(self, device_uuid: str, *, include_destroyed: bool = True) -> list[Secret]:
        with self._session(write=False) as s:
            q = select(Secret).where(Secret.device_uuid == device_uuid).order_by(Secret.id)
            if not include_destroyed:
                q = q.where(Secret.destroyed_at.is_(None))
            return list(s.scalars(q))

    def get_secret(self, secret_id: int) -> Secret | None:
        with self._session(write=False) as s:
            return s.get(Secret, secret_id)

    def destroy_secrets(self, device_uuid: str, *, kind: str | None = None, actor: str | None = None,
                        reason: str | None = None) -> int:
        """Erase the ciphertext of a device's live secrets (all, or of one kind) and stamp destroyed_at."""
        with self._session(write=True) as s:
            device = s.get(Device, device_uuid)
            if device is None:
                raise DeviceNotFound(f"no device with uuid {device_uuid!r} in the store")
            q = select(Secret).where(Secret.device_uuid == device_uuid, Secret.destroyed_at.is_(None))
            if kind:
                q = q.where(Secret.kind == kind)
            rows = list(s.scalars(q))
            now = utcnow()
            for row in rows:
                row.ciphertext = None
                row.destroyed_at = now
                row.state = "destroyed"
            s.flush()
            if rows:
                self._append_audit(s, actor, "secret.destroy", device.hostname,
                                   {"uuid": device_uuid, "secret_ids": [r.id for r in rows], "kind": kind,
                                    "reason": reason})
            return len(rows)

    # -- audit ----------------------------------------------------------------------------------------------

    def audit(self, actor: str | None, action: str, target: str, detail: dict | None = None) -> AuditEntry:
        """Append one entry (in the current transaction if there is one)."""
        with self._session(write=True) as s:
            return self._append_audit(s, actor, action, target, detail)

    def list_audit(self, *, target: str | None = None, limit: int | None = None,
                   since=None) -> list[AuditEntry]:
        """Entries oldest first; with since (naive UTC), those at or after it; with limit, the newest ones."""
        with self._session(write=False) as s:
            q = select(AuditEntry)
            if target:
                q = q.where(AuditEntry.target == target)
            if since is not None:
                q = q.where(AuditEntry.at >= since)
            q = q.order_by(AuditEntry.id.desc())
            if limit:
                q = q.limit(limit)
            return list(reversed(list(s.scalars(q))))

    def verify_audit(self) -> tuple[bool, int | None]:
        """Walk the chain: (True, None) if intact, else (False, id of the first bad row)."""
        ok, bad, _count, _head = self.verify_audit_detail()
        return ok, bad

    def verify_audit_detail(self) -> tuple[bool, int | None, int, str]:
        """(ok, first_bad_id, rows checked, head hash). Truncation needs a checkpoint (store.auditcheckpoint)."""
        prev, expected_id, count = GENESIS, None, 0
        with self._session(write=False) as s:
            rows = s.execute(select(AuditEntry.id, AuditEntry.at, AuditEntry.actor, AuditEntry.action,
                                    AuditEntry.target, AuditEntry.detail, AuditEntry.prev_hash,
                                    AuditEntry.hash).order_by(AuditEntry.id)).yield_per(1000)
            for row in rows:
                count += 1
                if expected_id is not None and row.id != expected_id:
                    return False, row.id, count, prev  # a row was deleted before this one
                try:
                    good = row.prev_hash == prev and row.hash == row_hash(
                        id=row.id, at=row.at, actor=row.actor, action=row.action, target=row.target,
                        detail=row.detail, prev_hash=row.prev_hash)
                except (ValueError, TypeError, AttributeError):
                    good = False
                if not good:
                    return False, row.id, count, prev
                prev, expected_id = row.hash, row.id + 1
        return True, None, count, prev

    def audit_hash(self, entry_id: int) -> str | None:
        """The stored hash of audit entry ``entry_id`` (None if there is none)."""
        with self._session(write=False) as s:
            return s.execute(select(AuditEntry.hash).where(AuditEntry.id == entry_id)).scalar_one_or_none()

    def _append_audit(self, s: Session, actor: str | None, action: str, target: str,
                      detail: dict | None) -> AuditEntry:
        if s.get_bind().dialect.name == "postgresql":
            # SQLite writers already hold the database lock (BEGIN IMMEDIATE); PostgreSQL needs it explicit.
            s.execute(text("LOCK TABLE audit IN SHARE ROW EXCLUSIVE MODE"))
        head = s.execute(select(AuditEntry.id, AuditEntry.hash).order_by(AuditEntry.id.desc()).limit(1)).first()
        new_id, prev = (head.id + 1, head.hash) if head else (1, GENESIS)
        detail_text = canonical_json(detail or {})
        entry = AuditEntry(id=new_id, at=utcnow(), actor=actor or default_actor(), action=action,
                           target=target, detail=detail_text, prev_hash=prev)
        entry.hash = row_hash(id=entry.id, at=entry.at, actor=entry.actor, action=action, target=target,
                              detail=detail_text, prev_hash=prev)
        s.add(entry)
        s.flush()
        return entry

    # -- helpers --------------------------------------------------------------------------------------------

    @staticmethod
    def _live(s: Session, hostname: str) -> Device | None:
        return s.scalars(select(Device).where(Device.hostname == hostname, Device.state != "removed")).first()

    def _require_live(self, s: Session, hostname: str) -> Device:
        device = self._live(s, hostname)
        if device is None:
            raise DeviceNotFound(f"no device named {hostname!r} in the store (see `deskguard devices list`)")
        return device


def _one_line(exc: DBAPIError) -> str:
    return " ".join(str(exc.orig if exc.orig is not None else exc).split())[:300]


def _exists(device: Device) -> DeviceExists:
    return DeviceExists(f"device {device.hostname!r} is already registered (uuid {device.uuid}, "
                        f"state {device.state}); see `deskguard devices show {device.hostname}`")


def _device_fields(*, os, address, port, ssh_user, operator, os_version=None) -> dict:
    import re

    if not isinstance(os, str) or not re.fullmatch(r"[a-z][a-z0-9._-]{0,31}", os or ""):
        raise UsageError(f"invalid os {str(os)[:40]!r}: a lower-case name such as ubuntu, debian or windows")
    try:
        port_i = int(port)
    except (TypeError, ValueError):
        raise UsageError(f"invalid port {str(port)[:20]!r}: a number from 1 to 65535") from None
    if isinstance(port, bool) or not 1 <= port_i <= 65535:
        raise UsageError(f"invalid port {str(port)[:20]!r}: a number from 1 to 65535")
    address = _clean(address, "address")
    if any(c.isspace() for c in address) or address.startswith("-"):
        raise UsageError(f"invalid address {address[:80]!r}: a host name or IP address")
    if not isinstance(ssh_user, str) or not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._@\\-]{0,63}", ssh_user or ""):
        raise UsageError(f"invalid user {str(ssh_user)[:40]!r}: letters, digits, '.', '_', '-', '@', '\\'")
    return {"os": os, "os_version": _clean(os_version, "os version", required=False, max_len=64),
            "address": address, "port": port_i, "ssh_user": ssh_user,
            "operator": _clean(operator, "operator", required=False, max_len=128)}
