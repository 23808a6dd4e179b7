"""The store's tables, as typed SQLAlchemy 2 ORM classes.

Keep column types portable (SQLite today, PostgreSQL later): no dialect-only types, naive UTC timestamps,
JSON kept as canonical text. Every change here needs an Alembic revision in ``migrations/versions``.
"""

from __future__ import annotations

import datetime as dt
import json

from sqlalchemy import Boolean, DateTime, Float, ForeignKey, Index, Integer, LargeBinary, MetaData, String, Text, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Stable constraint names so migrations (and SQLite batch mode) can refer to them.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Lifecycle of a device. Other parts of the kit (wipe, lock) add to this tuple; the column is a plain string
# so a new state needs no migration.
DEVICE_STATES = (
    "registered",   # in the store and the inventory, not provisioned yet
    "pending",      # enrolled itself with a token; waits for `deskguard devices approve` (enrolment_requires_approval)
    "enrolled",     # enrolled itself (approved if the policy asks); waits for `deskguard enrolment process`
    "onboarded",    # the onboarding playbook succeeded
    "wipe-pending", "wiping", "wiped", "locked",
    "removed",      # no longer managed; the row and its escrowed secrets are kept until destroyed
)


def utcnow() -> dt.datetime:
    """Naive UTC, microseconds: what both SQLite and PostgreSQL `timestamp` store without loss."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def iso(t: dt.datetime | None) -> str | None:
    return None if t is None else t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Device(Base):
    __tablename__ = "devices"

    uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(253))
    os: Mapped[str] = mapped_column(String(32))
    os_version: Mapped[str | None] = mapped_column(String(64))
    address: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    ssh_user: Mapped[str] = mapped_column(String(64))
    operator: Mapped[str | None] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(32), default="registered")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    # The on-device agent's ECDSA P-256 public key (PEM), registered at enrolment (revision 0005).
    agent_public_key: Mapped[str | None] = mapped_column(Text)
    # When the kit last heard from the laptop, and how: "checkin" (agent) or "live" (an SSH/WinRM run).
    last_seen_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    last_seen_via: Mapped[str | None] = mapped_column(String(16))
    # Self-enrolment (revision 0008): the serial number the laptop reported, and the token it enrolled with.
    serial: Mapped[str | None] = mapped_column(String(128))
    enrolment_token_id: Mapped[str | None] = mapped_column(String(36))

    # A hostname is unique among devices that are not removed: a replaced laptop may reuse its name and gets a
    # new UUID, while the removed row (and its escrowed secrets) stays for the record.
    __table_args__ = (
        Index("uq_devices_hostname_live", "hostname", unique=True,
              sqlite_where=text("state <> 'removed'"), postgresql_where=text("state <> 'removed'")),
    )

    def to_dict(self) -> dict:
        return {
            "uuid": self.uuid, "hostname": self.hostname, "os": self.os, "os_version": self.os_version,
            "address": self.address, "port": self.port, "ssh_user": self.ssh_user, "operator": self.operator,
            "state": self.state, "created_at": iso(self.created_at), "updated_at": iso(self.updated_at),
            "agent_key": self.agent_public_key is not None, "last_seen_at": iso(self.last_seen_at),
            "last_seen_via": self.last_seen_via, "serial": self.serial,
            "enrolment_token_id": self.enrolment_token_id,
        }

    def __repr__(self) -> str:
        return f"Device({self.hostname!r}, uuid={self.uuid!r}, state={self.state!r})"


# Lifecycle of an escrowed secret. Only pending and active ones may be the way into a device, so only
# retired/abandoned/destroyed ones may lose their ciphertext.
SECRET_STATES = (
    "pending",     # sealed and stored, about to be (or maybe) put on the device: never deleted unconfirmed
    "active",      # the device proved it opens (verified in its keyslot / read back as a protector)
    "mismatch",    # was active; the device no longer has it as escrowed (changed behind the kit's back)
    "retired",     # replaced by a newer active secret and removed from the device
    "abandoned",   # pending, and the device never got it (its keyslot was never written)
    "destroyed",   # ciphertext erased (device wiped or secrets destroyed on purpose)
)


class Secret(Base):
    """An escrowed secret: ciphertext only (see deskguard.recovery.keys.seal), never the clear value."""

    __tablename__ = "secrets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_uuid: Mapped[str] = mapped_column(ForeignKey("devices.uuid"), index=True)
    kind: Mapped[str] = mapped_column(String(64))          # e.g. "luks-recovery", "bitlocker-recovery"
    key_id: Mapped[str] = mapped_column(String(128))       # which secret on the device (LUKS UUID + slot, ...)
    escrow_key_id: Mapped[str | None] = mapped_column(String(64))  # fingerprint of the escrow key it is sealed to
    ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)  # NULL once destroyed
    state: Mapped[str] = mapped_column(String(16), default="active", index=True)  # see SECRET_STATES
    fingerprint: Mapped[str | None] = mapped_column(String(64))  # the keyslot/protector it was verified in
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    verified_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    destroyed_at: Mapped[dt.datetime | None] = mapped_column(DateTime)

    def to_dict(self) -> dict:
        """Metadata only: the ciphertext never goes into listings or reports."""
        return {"id": self.id, "device_uuid": self.device_uuid, "kind": self.kind, "key_id": self.key_id,
                "escrow_key_id": self.escrow_key_id, "state": self.state, "fingerprint": self.fingerprint,
                "created_at": iso(self.created_at), "verified_at": iso(self.verified_at),
                "destroyed_at": iso(self.destroyed_at)}


class AuditEntry(Base):
    """Append-only, hash-chained. ``hash`` = sha256(canonical JSON of the row, including prev_hash)."""

    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[dt.datetime] = mapped_column(DateTime)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(255), index=True)
    detail: Mapped[str] = mapped_column(Text)  # canonical JSON text
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)

    @property
    def detail_obj(self):
        return json.loads(self.detail)

    def to_dict(self) -> dict:
        return {"id": self.id, "at": iso(self.at), "actor": self.actor, "action": self.action,
                "target": self.target, "detail": self.detail_obj, "prev_hash": self.prev_hash,
                "hash": self.hash}


class ComplianceRun(Base):
    """One compliance run (the CLI's, or a playbook run from AWX recorded by the callback plugin)."""

    __tablename__ = "compliance_runs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime)
    finished_at: Mapped[dt.datetime] = mapped_column(DateTime, index=True)
    source: Mapped[str] = mapped_column(String(32))
    hosts: Mapped[int] = mapped_column(Integer)
    score: Mapped[float | None] = mapped_column(Float)

    def to_dict(self) -> dict:
        return {"id": self.id, "started_at": iso(self.started_at), "finished_at": iso(self.finished_at),
                "source": self.source, "hosts": self.hosts, "score": self.score}


class ComplianceHost(Base):
    """A host's outcome in a run: state ok | unreachable | failed (collection failed) | stale (unreachable, and
    its latest check-in older than the policy allows), its score, and where the evidence came from."""

    __tablename__ = "compliance_hosts"

    run_id: Mapped[str] = mapped_column(ForeignKey("compliance_runs.id"), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(253), primary_key=True)
    device_uuid: Mapped[str | None] = mapped_column(String(36))
    state: Mapped[str] = mapped_column(String(16))
    score: Mapped[float | None] = mapped_column(Float)
    compliant: Mapped[bool] = mapped_column(Boolean)
    message: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str | None] = mapped_column(String(16))            # live | checkin
    evidence_at: Mapped[dt.datetime | None] = mapped_column(DateTime)  # when the posture was collected


class ComplianceResult(Base):
    """One control on one host in one run; observed/expected/evidence as canonical JSON text."""

    __tablename__ = "compliance_results"

    run_id: Mapped[str] = mapped_column(ForeignKey("compliance_runs.id"), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(253), primary_key=True)
    control: Mapped[str] = mapped_column(String(16), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    severity: Mapped[str] = mapped_column(String(8))
    observed: Mapped[str] = mapped_column(Text)
    expected: Mapped[str] = mapped_column(Text)
    evidence: Mapped[str] = mapped_column(Text)


# Lifecycle of a VPN peer. An *active* row holds its address: the partial unique indexes below make two active
# peers with one address (or one device with two active peers) impossible, whatever the admins do at once.
VPN_PEER_STATES = (
    "active",    # the address is the device's; public_key is NULL until the laptop has reported its key
    "revoked",   # device removed or re-enrolled: the address is free again, the gateway drops the peer
)


class VpnPeer(Base):
    """A laptop's WireGuard peer: its tunnel address from the policy's pool and its *public* key only."""

    __tablename__ = "vpn_peers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_uuid: Mapped[str] = mapped_column(ForeignKey("devices.uuid"), index=True)
    pool: Mapped[str] = mapped_column(String(64))        # the pool's CIDR when the address was allocated
    address: Mapped[str] = mapped_column(String(45))     # one host address of the pool, without prefix
    public_key: Mapped[str | None] = mapped_column(String(44))
    state: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    key_changed_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime)

    __table_args__ = (
        Index("uq_vpn_peers_address_active", "pool", "address", unique=True,
              sqlite_where=text("state = 'active'"), postgresql_where=text("state = 'active'")),
        Index("uq_vpn_peers_device_active", "device_uuid", unique=True,
              sqlite_where=text("state = 'active'"), postgresql_where=text("state = 'active'")),
    )

    def to_dict(self) -> dict:
        return {"id": self.id, "device_uuid": self.device_uuid, "pool": self.pool, "address": self.address,
                "public_key": self.public_key, "state": self.state, "created_at": iso(self.created_at),
                "key_changed_at": iso(self.key_changed_at), "revoked_at": iso(self.revoked_at)}


# Lifecycle of a wipe/lock order (docs/agent-protocol.md). Never "done" without an accepted acknowledgement.
ORDER_STATES = (
    "queued",        # signed and published; the laptop has not acknowledged it
    "acknowledged",  # the agent accepted it (signed ack): the wipe/lock started
    "done",          # acknowledged, then silent for the grace period or re-enrolled with new volumes
    "refused",       # the agent refused it, with a reason (docs/agent-protocol.md)
    "expired",       # never acknowledged before expires_at
    "cancelled",     # an admin cancelled it before any acknowledgement; a signed cancel replaced it
)
OPEN_ORDER_STATES = ("queued", "acknowledged")


class Order(Base):
    """A signed wipe or lock order and what became of it. ``envelope`` is the exact published file."""

    __tablename__ = "orders"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)            # the payload's order_id
    device_uuid: Mapped[str] = mapped_column(ForeignKey("devices.uuid"), index=True)
    action: Mapped[str] = mapped_column(String(8))                           # wipe | lock
    volumes: Mapped[str] = mapped_column(Text)                               # canonical JSON list
    nonce: Mapped[str] = mapped_column(String(64), unique=True)
    envelope: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), index=True)               # see ORDER_STATES
    state_reason: Mapped[str | None] = mapped_column(Text)                   # refusal reason, why done/cancelled
    prior_device_state: Mapped[str] = mapped_column(String(32))              # restored on cancel
    actor: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(Text)                                # the admin's reason ("lost on train")
    ticket: Mapped[str | None] = mapped_column(String(64))
    issued_at: Mapped[dt.datetime] = mapped_column(DateTime)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    acknowledged_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    closed_at: Mapped[dt.datetime | None] = mapped_column(DateTime)          # done/refused/expired/cancelled
    cancel_envelope: Mapped[str | None] = mapped_column(Text)

    @property
    def volume_list(self) -> list[str]:
        return json.loads(self.volumes)

    def to_dict(self) -> dict:
        """Everything but the envelopes (they are public, but long)."""
        return {"id": self.id, "device_uuid": self.device_uuid, "action": self.action, "volumes": self.volume_list,
                "nonce": self.nonce, "state": self.state, "state_reason": self.state_reason, "actor": self.actor,
                "reason": self.reason, "ticket": self.ticket, "issued_at": iso(self.issued_at),
                "expires_at": iso(self.expires_at), "created_at": iso(self.created_at),
                "acknowledged_at": iso(self.acknowledged_at), "closed_at": iso(self.closed_at)}


class Checkin(Base):
    """The latest verified check-in of a device (one row per device, replaced by each newer one)."""

    __tablename__ = "checkins"

    device_uuid: Mapped[str] = mapped_column(ForeignKey("devices.uuid"), primary_key=True)
    payload: Mapped[str] = mapped_column(Text)          # the verified payload: the signed JSON text as received
    sent_at: Mapped[dt.datetime] = mapped_column(DateTime)      # the device's clock
    received_at: Mapped[dt.datetime] = mapped_column(DateTime)  # the server's clock
    agent_version: Mapped[str | None] = mapped_column(String(64))

    @property
    def payload_obj(self) -> dict:
        return json.loads(self.payload)

    def to_dict(self) -> dict:
        return {"device_uuid": self.device_uuid, "sent_at": iso(self.sent_at), "received_at": iso(self.received_at),
                "agent_version": self.agent_version, "payload": self.payload_obj}


class KeyslotBaseline(Base):
    """The keyslots (fingerprints, see deskguard_luks.slot_fingerprint) a LUKS volume had when deskguard
    escrowed its key, kept current by every escrow change. A keyslot outside it and outside the active escrowed
    secrets was added behind the kit's back: ENC-003."""

    __tablename__ = "keyslot_baselines"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_uuid: Mapped[str] = mapped_column(ForeignKey("devices.uuid"), index=True)
    luks_uuid: Mapped[str] = mapped_column(String(36))
    fingerprints: Mapped[str] = mapped_column(Text)          # JSON list, sorted
    recorded_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)

    __table_args__ = (Index("uq_keyslot_baselines_volume", "device_uuid", "luks_uuid", unique=True),)

    def prints(self) -> set[str]:
        return set(json.loads(self.fingerprints))


class EnrolmentToken(Base):
    """A token a laptop enrols itself with (docs/enrolment.md). Only its SHA-256 is stored: the token is shown
    once, at creation. It allows ``uses_allowed`` enrolments until ``expires_at``, unless revoked first."""

    __tablename__ = "enrolment_tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)   # sha256 hex of the token text
    uses_allowed: Mapped[int] = mapped_column(Integer)
    uses: Mapped[int] = mapped_column(Integer, default=0)
    operator: Mapped[str | None] = mapped_column(String(128))          # given to every laptop enrolled with it
    hostname_pattern: Mapped[str | None] = mapped_column(String(253))  # shell pattern the hostname must match
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    revoked_reason: Mapped[str | None] = mapped_column(Text)

    def state(self, now: dt.datetime | None = None) -> str:
        """revoked | expired | used | active, in that order of precedence."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at <= (now or utcnow()):
            return "expired"
        if self.uses >= self.uses_allowed:
            return "used"
        return "active"

    def to_dict(self, now: dt.datetime | None = None) -> dict:
        """Everything but the hash (it is not the token, but it need not leave the store either)."""
        return {"id": self.id, "state": self.state(now), "uses": self.uses, "uses_allowed": self.uses_allowed,
                "operator": self.operator, "hostname_pattern": self.hostname_pattern, "created_by": self.created_by,
                "created_at": iso(self.created_at), "expires_at": iso(self.expires_at),
                "last_used_at": iso(self.last_used_at), "revoked_at": iso(self.revoked_at),
                "revoked_reason": self.revoked_reason}
