"""The store's enrolment part: tokens a laptop enrols itself with, and the enrolment itself (docs/enrolment.md).

Mixed into ``Store``. A token is shown once, when it is made; the store keeps only its SHA-256 (a token is 256
random bits, so a plain hash is as good as a slow one and lets the server find it by index). Everything an
enrolment decides — the token's uses, expiry and revocation, the hostname, the device key — is read and written
in one write transaction (SQLite: BEGIN IMMEDIATE; PostgreSQL: the token's row locked), so two laptops racing
for a token's last use, or for one hostname, cannot both win.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import hashlib
import re
import secrets
import uuid as uuidlib
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ..errors import UsageError
from ..hostnames import validate_hostname
from .common import DeviceNotFound, _clean
from .models import Device, EnrolmentToken, VpnPeer, utcnow

TOKEN_PREFIX = "dgenrol-"
TOKEN_RE = re.compile(r"dgenrol-[A-Za-z0-9_-]{43}\Z")
MAX_USES = 10_000
MAX_LIFETIME = dt.timedelta(days=365)
PATTERN_RE = re.compile(r"[a-z0-9*?\[\]!.-]{1,253}\Z")
# Placeholder address of a device row between its insert and its VPN allocation (same transaction).
_NO_ADDRESS = "unallocated"


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


class EnrolmentRefused(UsageError):
    """An enrolment the store refuses; ``code`` is the word the server answers and logs (docs/enrolment.md)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class EnrolmentRequest:
    """What a laptop asks with, already checked for shape and signature by the caller (deskguard.enrolment)."""

    token: str
    hostname: str
    serial: str | None
    operator: str | None
    os: str
    os_version: str | None
    agent_public_key: str       # PEM, ECDSA P-256 (proved by the request's signature)
    wg_public_key: str          # base64, 32 bytes
    ssh_user: str               # the management account the enrolment package made
    pool: str                   # the policy's VPN pool
    reserved: tuple[str, ...]   # the gateway's address
    requires_approval: bool


@dataclass(frozen=True)
class Enrolled:
    device: Device
    peer: VpnPeer
    again: bool                 # the same laptop asked again (its answer was lost): nothing new was written


class EnrolmentsMixin:
    def create_enrolment_token(self, *, uses: int = 1, lifetime: dt.timedelta = dt.timedelta(days=7),
                               operator: str | None = None, hostname_pattern: str | None = None,
                               actor: str | None = None) -> tuple[EnrolmentToken, str]:
        """(the stored token, the token text): the text exists only in this answer. Audited (never the text)."""
        if isinstance(uses, bool) or not isinstance(uses, int) or not 1 <= uses <= MAX_USES:
            raise UsageError(f"an enrolment token allows 1..{MAX_USES} enrolments, not {uses!r}")
        if not dt.timedelta(minutes=1) <= lifetime <= MAX_LIFETIME:
            raise UsageError("an enrolment token lives from 1 minute to 365 days")
        operator = _clean(operator, "operator", required=False, max_len=128)
        if hostname_pattern is not None:
            hostname_pattern = hostname_pattern.strip().lower()
            if not PATTERN_RE.fullmatch(hostname_pattern):
                raise UsageError(f"invalid hostname pattern {hostname_pattern[:60]!r}: letters, digits, '.', '-' "
                                 "and the wildcards * ? [...] (e.g. tokyo-*)")
        from .common import default_actor

        text = new_token()
        now = utcnow()
        with self._session(write=True) as s:
            row = EnrolmentToken(id=str(uuidlib.uuid4()), token_hash=token_hash(text), uses_allowed=uses, uses=0,
                                 operator=operator, hostname_pattern=hostname_pattern,
                                 created_by=actor or default_actor(), created_at=now, expires_at=now + lifetime)
            s.add(row)
            s.flush()
            self._append_audit(s, actor, "enrolment.create", f"enrolment:{row.id}",
                               {"token_id": row.id, "uses_allowed": uses, "expires_at": row.to_dict()["expires_at"],
                                "operator": operator, "hostname_pattern": hostname_pattern})
            return row, text

    def list_enrolment_tokens(self, *, include_closed: bool = False) -> list[EnrolmentToken]:
        """Tokens, newest first; without include_closed only those that can still enrol a laptop."""
        with self._session(write=False) as s:
            rows = list(s.scalars(select(EnrolmentToken).order_by(EnrolmentToken.created_at.desc())))
        now = utcnow()
        return rows if include_closed else [r for r in rows if r.state(now) == "active"]

    def get_enrolment_token(self, token_id: str) -> EnrolmentToken:
        with self._session(write=False) as s:
            row = s.get(EnrolmentToken, str(token_id))
            if row is None:
                raise UsageError(f"no enrolment token {str(token_id)[:40]!r} (see `deskguard enrolment list --all`)")
            return row

    def find_enrolment_token(self, token: str) -> EnrolmentToken | None:
        """The stored token whose hash is this token text's, if any."""
        with self._session(write=False) as s:
            return s.scalars(select(EnrolmentToken).where(EnrolmentToken.token_hash == token_hash(token))).first()

    def revoke_enrolment_token(self, token_id: str, *, reason: str | None = None,
                               actor: str | None = None) -> tuple[EnrolmentToken, bool]:
        """(the token, whether this call revoked it). Laptops already enrolled with it stay enrolled."""
        reason = _clean(reason, "reason", required=False, max_len=500)
        with self._session(write=True) as s:
            row = s.get(EnrolmentToken, str(token_id))
            if row is None:
                raise UsageError(f"no enrolment token {str(token_id)[:40]!r} (see `deskguard enrolment list --all`)")
            if row.revoked_at is not None:
                return row, False
            row.revoked_at = utcnow()
            row.revoked_reason = reason
            s.flush()
            self._append_audit(s, actor, "enrolment.revoke", f"enrolment:{row.id}",
                               {"token_id": row.id, "uses": row.uses, "reason": reason})
            return row, True

    def enrol_device(self, req: EnrolmentRequest, *, actor: str = "deskguard-serve") -> Enrolled:
        """Check the token and register the laptop, its agent key, its VPN address and key, in one transaction.
        EnrolmentRefused(code) for unknown_token, revoked, expired, used_up, hostname_not_allowed,
        hostname_taken, key_in_use. The same laptop (same device key, same hostname, same token) asking again
        gets its enrolment back without spending a use: an answer lost on the way must not strand it."""
        hostname = validate_hostname(req.hostname)
        now = utcnow()
        with self._session(write=True) as s:
            q = select(EnrolmentToken).where(EnrolmentToken.token_hash == token_hash(req.token))
            if s.get_bind().dialect.name == "postgresql":
                q = q.with_for_update()
            token = s.scalars(q).first()
            if token is None:
                raise EnrolmentRefused("unknown_token", "no such enrolment token")
            if token.revoked_at is not None:
                raise EnrolmentRefused("revoked", f"enrolment token {token.id} was revoked")
            if token.expires_at <= now:
                raise EnrolmentRefused("expired", f"enrolment token {token.id} expired")
            holder = s.scalars(select(Device).where(Device.agent_public_key == req.agent_public_key,
                                                    Device.state != "removed")).first()
            if holder is not None:
                if holder.hostname == hostname and holder.enrolment_token_id == token.id:
                    peer = s.scalars(select(VpnPeer).where(VpnPeer.device_uuid == holder.uuid,
                                                           VpnPeer.state == "active")).first()
                    if peer is not None and peer.public_key == req.wg_public_key:
                        return Enrolled(holder, peer, again=True)
                raise EnrolmentRefused("key_in_use", "this device key is already enrolled as another laptop")
            if token.uses >= token.uses_allowed:
                raise EnrolmentRefused("used_up", f"enrolment token {token.id} has no use left "
                                                  f"({token.uses} of {token.uses_allowed})")
            if token.hostname_pattern and not fnmatch.fnmatchcase(hostname, token.hostname_pattern):
                raise EnrolmentRefused("hostname_not_allowed", f"hostname {hostname} does not match the token's "
                                                               f"pattern {token.hostname_pattern}")
            if self._live(s, hostname) is not None:
                raise EnrolmentRefused("hostname_taken", f"hostname {hostname} belongs to another device")
            operator = token.operator or _clean(req.operator, "operator", required=False, max_len=128)
            fields = _fields(req, operator)
            serial = _clean(req.serial, "serial", required=False, max_len=128)
            device = Device(uuid=str(uuidlib.uuid4()), hostname=hostname,
                            state="pending" if req.requires_approval else "enrolled", serial=serial,
                            enrolment_token_id=token.id, **fields)
            try:
                with s.begin_nested():   # PostgreSQL: another laptop took the name a moment ago
                    s.add(device)
                    s.flush()
            except IntegrityError:
                raise EnrolmentRefused("hostname_taken", f"hostname {hostname} belongs to another device") from None
            peer = self.allocate_vpn_address(device.uuid, req.pool, reserved=req.reserved, actor=actor)
            device.address = peer.address
            s.flush()
            self._append_audit(s, actor, "device.register", hostname,
                               {"uuid": device.uuid, **fields, "address": peer.address, "serial": serial,
                                "enrolment_token_id": token.id, "state": device.state})
            self.set_agent_public_key(device.uuid, req.agent_public_key, actor=actor)
            self.set_vpn_public_key(peer.id, req.wg_public_key, actor=actor, reason="enrolment")
            token.uses += 1
            token.last_used_at = now
            s.flush()
            self._append_audit(s, actor, "enrolment.use", f"enrolment:{token.id}",
                               {"token_id": token.id, "uuid": device.uuid, "hostname": hostname,
                                "uses": token.uses, "uses_allowed": token.uses_allowed})
            return Enrolled(device, peer, again=False)

    def approve_device(self, hostname: str, *, actor: str | None = None) -> tuple[Device, bool]:
        """A pending (self-enrolled) device becomes enrolled: `enrolment process` and the gateway take it.
        (device, whether it changed); a device in another state is refused, one that is enrolled already is not."""
        with self._session(write=True) as s:
            device = self._live(s, hostname)
            if device is None:
                raise DeviceNotFound(f"no device named {hostname!r} in the store (see `deskguard devices list`)")
            if device.state == "enrolled":
                return device, False
            if device.state != "pending":
                raise UsageError(f"{hostname} is {device.state}, not waiting for approval: only a laptop that "
                                 "enrolled itself is approved")
            device.state = "enrolled"
            device.updated_at = utcnow()
            s.flush()
            self._append_audit(s, actor, "device.approve", hostname,
                               {"uuid": device.uuid, "old": "pending", "new": "enrolled"})
            return device, True


def _fields(req: EnrolmentRequest, operator: str | None) -> dict:
    """The device columns of an enrolment, checked as register_device checks them (store.core._device_fields,
    not imported: core is built from this mixin)."""
    if not re.fullmatch(r"[a-z][a-z0-9._-]{0,31}", req.os or ""):
        raise EnrolmentRefused("malformed", f"invalid os {str(req.os)[:40]!r}")
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,31}", req.ssh_user or ""):
        raise UsageError(f"invalid management account {str(req.ssh_user)[:40]!r}")
    return {"os": req.os, "os_version": _clean(req.os_version, "os version", required=False, max_len=64),
            "address": _NO_ADDRESS, "port": 22, "ssh_user": req.ssh_user, "operator": operator}
