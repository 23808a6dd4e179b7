# -*- coding: utf-8 -*-
"""The agent protocol (docs/agent-protocol.md): signed envelopes, canonical JSON, the checks an order must pass,
and the payload builders for orders, cancels, acknowledgements and check-ins.

One implementation for both sides: the on-device agent (deployed by role endpoint_agent) and the controller
(`deskguard wipe`, `deskguard serve`, imported through ``deskguard.site.module_utils``). Python 3.9+, stdlib and
``cryptography`` only, no Ansible import, because the agent runs outside Ansible.

Every refusal is a short reason word from REASONS, never an exception text: the agent reports it to the server
and the server records it, so the words are part of the contract.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import re
import secrets
import uuid as uuidlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

FORMAT = "deskguard/1"
VERSION = 1
ACCEPT = "accept"
ACTIONS = ("wipe", "lock")
ACK_STATUSES = ("accepted", "refused")
# Bytes of the whole envelope, checked before any parsing.
LIMITS = {"order": 8 * 1024, "cancel": 8 * 1024, "ack": 8 * 1024, "checkin": 256 * 1024, "fetch": 2 * 1024}
# How far issued_at may be in the future (an order) or sent_at away from the server's clock (ack, check-in).
CLOCK_SKEW_SECONDS = 300
DEFAULT_ORDER_TTL_DAYS = 30
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

REASONS = (
    "oversized",        # the envelope is above the size limit
    "malformed",        # not JSON, wrong fields, bad base64
    "unknown_key",      # key_id is not the pinned / registered key
    "bad_signature",    # the signature does not verify
    "foreign_device",   # the order is for another device
    "foreign_volumes",  # a listed volume (or a kept keyslot) is not on this laptop, or the list is empty
    "expired",          # now > expires_at
    "not_yet_valid",    # issued_at > now + CLOCK_SKEW_SECONDS
    "replayed",         # nonce already executed/refused, or the order id was cancelled
    "unsupported",      # unknown format, v, type or action
)

_SIG_LEN = 64  # P-256: r and s, 32 bytes each (IEEE P1363)
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z\Z")
# A kept "keyslot": a LUKS slot fingerprint (deskguard_luks.slot_fingerprint) or a BitLocker protector id.
_KEYSLOT = re.compile(r"[0-9a-f]{64}\Z|\{[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\}\Z")
_VOLUME_ID = re.compile(r"[A-Za-z0-9{}._:-]{1,128}\Z")  # LUKS UUID or BitLocker volume id ({GUID}, \\?\Volume{…})


class ProtocolError(Exception):
    """A message is refused: ``reason`` is one of REASONS, ``detail`` a short text for logs (never a secret)."""

    def __init__(self, reason, detail=""):
        if reason not in REASONS:
            raise ValueError("unknown protocol reason %r" % (reason,))
        super().__init__("%s: %s" % (reason, detail) if detail else reason)
        self.reason = reason
        self.detail = detail


# -- canonical JSON, times -----------------------------------------------------------------------------------

def canonical_json(obj):
    """The bytes that get signed: sorted keys, no whitespace, UTF-8 as is, no NaN."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def utc_now():
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def format_time(t):
    return _aware(t).strftime(TIME_FORMAT)


def parse_time(text):
    """A protocol time (``YYYY-MM-DDTHH:MM:SSZ``) as an aware UTC datetime; ValueError if it is not one."""
    if not isinstance(text, str) or not _TIME.match(text):
        raise ValueError("not a UTC time of the form YYYY-MM-DDTHH:MM:SSZ: %r" % (str(text)[:40],))
    # By position, not strptime: the shape is fixed, and strptime was a tenth of a check-in's CPU time.
    return dt.datetime(int(text[0:4]), int(text[5:7]), int(text[8:10]), int(text[11:13]), int(text[14:16]),
                       int(text[17:19]), tzinfo=dt.timezone.utc)


def _aware(t):
    """Naive datetimes are taken as UTC (the store keeps naive UTC)."""
    return t.replace(tzinfo=dt.timezone.utc) if t.tzinfo is None else t.astimezone(dt.timezone.utc)


# -- keys --------------------------------------------------------------------------------------------------

def generate_private_key():
    """A new ECDSA P-256 key (the device key at enrolment, or an order key)."""
    return ec.generate_private_key(ec.SECP256R1())


def private_key_pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def public_key_pem(key):
    """PEM SubjectPublicKeyInfo of a public key (or of a private key's public half)."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        key = key.public_key()
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_public_key(pem):
    """An ECDSA P-256 public key from PEM (str or bytes); ValueError for anything else."""
    if isinstance(pem, str):
        pem = pem.encode("ascii", "replace")
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ValueError("not an ECDSA P-256 public key")
    return key


def load_private_key(pem):
    if isinstance(pem, str):
        pem = pem.encode("ascii", "replace")
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ValueError("not an ECDSA P-256 private key")
    return key


def key_id(key):
    """First 16 hex characters of sha256 over the public key's SubjectPublicKeyInfo DER."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        key = key.public_key()
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()[:16]


# -- envelope ----------------------------------------------------------------------------------------------

def sign(payload, private_key):
    """The envelope (bytes, canonical JSON) of ``payload`` signed with ``private_key``."""
    body = canonical_json(payload)
    der = private_key.sign(body, ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    envelope = {"format": FORMAT, "key_id": key_id(private_key),
                "payload": base64.b64encode(body).decode("ascii"),
                "signature": base64.b64encode(raw).decode("ascii")}
    return canonical_json(envelope)


class Envelope(object):
    """A parsed, *not yet verified* envelope: ``payload_bytes`` are what the signature covers."""

    __slots__ = ("key_id", "payload_bytes", "signature", "_parsed")

    def __init__(self, key_id, payload_bytes, signature):
        self.key_id = key_id
        self.payload_bytes = payload_bytes
        self.signature = signature
        self._parsed = None

    def unverified_payload(self):
        """The payload before verification: only to find out whose key to verify with (the server looks up
        the device by ``device_uuid``). Never act on it (and do not change it: verify returns this same parse
        of the same bytes instead of parsing them twice)."""
        if self._parsed is None:
            self._parsed = _loads_object(self.payload_bytes, "payload")
        return self._parsed


def parse_envelope(data, limit):
    """Size first, then JSON and base64. Raises ProtocolError(oversized | malformed | unsupported)."""
    if not isinstance(data, (bytes, bytearray)):
        raise ProtocolError("malformed", "the envelope is not bytes")
    if len(data) > limit:
        raise ProtocolError("oversized", "%d bytes, limit %d" % (len(data), limit))
    env = _loads_object(bytes(data), "envelope")
    if set(env) != {"format", "key_id", "payload", "signature"}:
        raise ProtocolError("malformed", "envelope fields must be format, key_id, payload, signature")
    if env["format"] != FORMAT:
        raise ProtocolError("unsupported", "envelope format %r" % (str(env["format"])[:40],))
    if not isinstance(env["key_id"], str) or not re.match(r"[0-9a-f]{16}\Z", env["key_id"]):
        raise ProtocolError("malformed", "key_id is not 16 hex characters")
    payload_bytes = _b64(env["payload"], "payload")
    signature = _b64(env["signature"], "signature")
    if len(signature) != _SIG_LEN:
        raise ProtocolError("malformed", "signature is %d bytes, expected %d" % (len(signature), _SIG_LEN))
    return Envelope(env["key_id"], payload_bytes, signature)


def verify(envelope, public_key, public_key_id=None):
    """The payload dict if ``envelope`` is signed by ``public_key``; ProtocolError(unknown_key | bad_signature
    | malformed) otherwise. The signature is checked over the payload bytes as sent, never re-serialised.
    ``public_key_id``: key_id(public_key) when the caller keeps it (a server verifying many reports)."""
    if envelope.key_id != (public_key_id or key_id(public_key)):
        raise ProtocolError("unknown_key", "key_id %s is not the expected key" % envelope.key_id)
    r = int.from_bytes(envelope.signature[:32], "big")
    s = int.from_bytes(envelope.signature[32:], "big")
    try:
        public_key.verify(encode_dss_signature(r, s), envelope.payload_bytes, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise ProtocolError("bad_signature", "the signature does not verify with key %s" % envelope.key_id)
    return envelope.unverified_payload()


def open_envelope(data, public_key, limit):
    """parse_envelope + verify: the verified payload dict, or ProtocolError."""
    return verify(parse_envelope(data, limit), public_key)


def read_bounded(stream, limit):
    """Read at most limit + 1 bytes from a file-like object: ProtocolError(oversized) past the limit, so a huge
    answer is never read whole."""
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise ProtocolError("oversized", "more than %d bytes" % limit)
    return data


def _b64(value, what):
    if not isinstance(value, str):
        raise ProtocolError("malformed", "%s is not a base64 string" % what)
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise ProtocolError("malformed", "%s is not valid base64" % what)


def _no_duplicates(pairs):
    obj = {}
    for k, v in pairs:
        if k in obj:  # two values for one key: a verifier and a parser could read different ones
            raise ValueError("duplicate key %r" % (k,))
        obj[k] = v
    return obj


def _no_constants(name):
    raise ValueError("%s is not JSON" % name)


def _loads_object(data, what):
    try:
        obj = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProtocolError("malformed", "%s is not JSON (%s)" % (what, str(exc)[:80]))
    if not isinstance(obj, dict):
        raise ProtocolError("malformed", "%s is not a JSON object" % what)
    return obj


# -- payload builders ----------------------------------------------------------------------------------------

def new_nonce():
    return secrets.token_hex(32)


def build_order(device_uuid, action, volumes, keep_keyslots=None, ttl_days=DEFAULT_ORDER_TTL_DAYS, now=None,
                order_id=None, nonce=None):
    """An order payload. ``keep_keyslots`` ({volume: [fingerprint, …]}) is required for a lock."""
    if action not in ACTIONS:
        raise ValueError("unknown action %r (one of %s)" % (action, ", ".join(ACTIONS)))
    now = _aware(now or utc_now())
    payload = {"v": VERSION, "type": "order", "order_id": order_id or str(uuidlib.uuid4()),
               "device_uuid": str(device_uuid), "action": action, "volumes": sorted(set(volumes)),
               "nonce": nonce or new_nonce(), "issued_at": format_time(now),
               "expires_at": format_time(now + dt.timedelta(days=ttl_days))}
    if action == "lock":
        payload["keep_keyslots"] = {str(v): sorted(set(f)) for v, f in (keep_keyslots or {}).items()}
    problem = _order_shape(payload)
    if problem:
        raise ValueError("cannot build this order: %s" % problem)
    return payload


def build_cancel(order_id, device_uuid, now=None):
    return {"v": VERSION, "type": "cancel", "order_id": str(order_id), "device_uuid": str(device_uuid),
            "nonce": new_nonce(), "issued_at": format_time(now or utc_now())}


def build_ack(order, status, reason=None, now=None):
    """The acknowledgement of ``order`` (a payload dict): accepted, or refused with one of REASONS."""
    if status not in ACK_STATUSES:
        raise ValueError("ack status must be accepted or refused")
    if (status == "refused") != (reason is not None) or (reason is not None and reason not in REASONS):
        raise ValueError("a refused ack carries one of REASONS, an accepted one none")
    return {"v": VERSION, "type": "ack", "order_id": order.get("order_id"), "device_uuid": order.get("device_uuid"),
            "nonce": order.get("nonce"), "status": status, "reason": reason,
            "sent_at": format_time(now or utc_now())}


def build_fetch(device_uuid, now=None):
    """A signed order fetch: only the device may read its order from `deskguard serve`; the nonce makes each
    request usable once, sent_at within CLOCK_SKEW_SECONDS of the server's clock."""
    return {"v": VERSION, "type": "fetch", "device_uuid": str(device_uuid), "nonce": new_nonce(),
            "sent_at": format_time(now or utc_now())}


def build_checkin(device_uuid, posture, agent_version, refused=(), now=None):
    """A check-in payload; ``refused``: recent refusals as {order_id (or None), reason, at}."""
    return {"v": VERSION, "type": "checkin", "device_uuid": str(device_uuid),
            "sent_at": format_time(now or utc_now()), "agent_version": str(agent_version),
            "posture": posture, "refused": [dict(r) for r in refused]}


# -- the order checks (laptop side) --------------------------------------------------------------------------

def check_order(payload, device_uuid, local_volumes, now, seen_nonces, cancelled_orders=()):
    """ACCEPT, or the reason the laptop must refuse this verified order payload.

    local_volumes: {volume id: keyslot fingerprints present on it} (a plain set of ids for BitLocker, where
    there are no fingerprints). seen_nonces: nonces of orders already executed or refused; cancelled_orders:
    order ids the agent saw cancelled. Both come from the agent's state file.
    """
    if not isinstance(payload, dict):
        return "malformed"
    if payload.get("v") != VERSION or payload.get("type") != "order" or payload.get("action") not in ACTIONS:
        return "unsupported"
    if _order_shape(payload):
        return "malformed"
    if payload["device_uuid"] != str(device_uuid):
        return "foreign_device"
    if payload["nonce"] in set(seen_nonces) or payload["order_id"] in set(cancelled_orders):
        return "replayed"
    now = _aware(now)
    if now > parse_time(payload["expires_at"]):
        return "expired"
    if parse_time(payload["issued_at"]) > now + dt.timedelta(seconds=CLOCK_SKEW_SECONDS):
        return "not_yet_valid"
    local = local_volumes if isinstance(local_volumes, dict) else {v: () for v in local_volumes}
    if not payload["volumes"] or any(v not in local for v in payload["volumes"]):
        return "foreign_volumes"
    if payload["action"] == "lock":
        keep = payload["keep_keyslots"]
        # A lock must leave every volume openable with its escrowed key: each volume names the slots to keep,
        # and each of them must be on the disk now.
        if set(keep) != set(payload["volumes"]):
            return "foreign_volumes"
        for volume, prints in keep.items():
            if not prints or any(p not in set(local[volume]) for p in prints):
                return "foreign_volumes"
    return ACCEPT


def check_cancel(payload, device_uuid, now):
    """ACCEPT or a reason for a verified cancel payload (the agent then records its order id as cancelled)."""
    if not isinstance(payload, dict):
        return "malformed"
    if payload.get("v") != VERSION or payload.get("type") != "cancel":
        return "unsupported"
    if (set(payload) != {"v", "type", "order_id", "device_uuid", "nonce", "issued_at"}
            or not _is_uuid(payload["order_id"]) or not _is_uuid(payload["device_uuid"])
            or not _is_hex64(payload["nonce"]) or not _is_time(payload["issued_at"])):
        return "malformed"
    if payload["device_uuid"] != str(device_uuid):
        return "foreign_device"
    if parse_time(payload["issued_at"]) > _aware(now) + dt.timedelta(seconds=CLOCK_SKEW_SECONDS):
        return "not_yet_valid"
    return ACCEPT


def evaluate(data, order_public_key, device_uuid, local_volumes, now, seen_nonces, cancelled_orders=()):
    """What the agent does with the bytes at its order URL: (decision, payload or None).

    decision is ACCEPT (an order to act on), "cancel" (a valid cancel: record its order id), or a reason.
    """
    try:
        payload = open_envelope(data, order_public_key, LIMITS["order"])
    except ProtocolError as exc:
        return exc.reason, None
    if payload.get("type") == "cancel":
        decision = check_cancel(payload, device_uuid, now)
        return ("cancel" if decision == ACCEPT else decision), payload
    return check_order(payload, device_uuid, local_volumes, now, seen_nonces, cancelled_orders), payload


def _order_shape(p):
    """None if an order payload has exactly the right fields and types, else what is wrong."""
    fields = {"v", "type", "order_id", "device_uuid", "action", "volumes", "nonce", "issued_at", "expires_at"}
    if p.get("action") == "lock":
        fields = fields | {"keep_keyslots"}
    if set(p) != fields:
        return "fields must be %s" % ", ".join(sorted(fields))
    if not _is_uuid(p["order_id"]) or not _is_uuid(p["device_uuid"]):
        return "order_id and device_uuid must be UUIDs"
    if not _is_hex64(p["nonce"]):
        return "nonce must be 64 hex characters"
    if not _is_time(p["issued_at"]) or not _is_time(p["expires_at"]):
        return "issued_at and expires_at must be UTC times"
    if not isinstance(p["volumes"], list) or not all(isinstance(v, str) and _VOLUME_ID.match(v)
                                                     for v in p["volumes"]):
        return "volumes must be a list of volume ids"
    if p["action"] == "lock":
        keep = p["keep_keyslots"]
        if not isinstance(keep, dict) or not all(
                isinstance(k, str) and isinstance(v, list) and all(isinstance(f, str) and _KEYSLOT.match(f) for f in v)
                for k, v in keep.items()):
            return "keep_keyslots must map volume ids to lists of keyslot fingerprints or protector ids"
    return None


# -- acknowledgements and check-ins (server side) ----------------------------------------------------------

def check_ack(payload, now):
    """Raise ProtocolError (unsupported | malformed) unless ``payload`` is a well-formed ack. Returns None, or
    "clock_skew" when sent_at is too far from ``now`` (the server's own answer, 422, not an agent reason)."""
    if payload.get("v") != VERSION or payload.get("type") != "ack":
        raise ProtocolError("unsupported", "not a v1 ack")
    if set(payload) != {"v", "type", "order_id", "device_uuid", "nonce", "status", "reason", "sent_at"}:
        raise ProtocolError("malformed", "ack fields must be v, type, order_id, device_uuid, nonce, status, "
                                         "reason, sent_at")
    if (not _is_uuid(payload["order_id"]) or not _is_uuid(payload["device_uuid"])
            or not _is_hex64(payload["nonce"]) or payload["status"] not in ACK_STATUSES
            or not _is_time(payload["sent_at"])):
        raise ProtocolError("malformed", "ack field values")
    if payload["status"] == "refused" and payload["reason"] not in REASONS:
        raise ProtocolError("malformed", "a refused ack carries a known reason")
    if payload["status"] == "accepted" and payload["reason"] is not None:
        raise ProtocolError("malformed", "an accepted ack carries no reason")
    return _skew(payload["sent_at"], now)


def check_fetch(payload, now):
    """Like check_ack, for an order fetch: None if well formed and on time, "clock_skew" if the clock is off."""
    if payload.get("v") != VERSION or payload.get("type") != "fetch":
        raise ProtocolError("unsupported", "not a v1 fetch")
    if set(payload) != {"v", "type", "device_uuid", "nonce", "sent_at"}:
        raise ProtocolError("malformed", "fetch fields must be v, type, device_uuid, nonce, sent_at")
    if not _is_uuid(payload["device_uuid"]) or not _is_hex64(payload["nonce"]) or not _is_time(payload["sent_at"]):
        raise ProtocolError("malformed", "fetch field values")
    return _skew(payload["sent_at"], now)


def check_checkin(payload, now):
    """Like check_ack, for a check-in: None if well formed and on time, "clock_skew" if the clock is off."""
    if payload.get("v") != VERSION or payload.get("type") != "checkin":
        raise ProtocolError("unsupported", "not a v1 check-in")
    if set(payload) != {"v", "type", "device_uuid", "sent_at", "agent_version", "posture", "refused"}:
        raise ProtocolError("malformed", "check-in fields must be v, type, device_uuid, sent_at, agent_version, "
                                         "posture, refused")
    if (not _is_uuid(payload["device_uuid"]) or not _is_time(payload["sent_at"])
            or not isinstance(payload["agent_version"], str) or len(payload["agent_version"]) > 64
            or not isinstance(payload["posture"], dict) or not isinstance(payload["refused"], list)):
        raise ProtocolError("malformed", "check-in field values")
    for r in payload["refused"]:
        if (not isinstance(r, dict) or r.get("reason") not in REASONS
                or not (r.get("order_id") is None or _is_uuid(r.get("order_id"))) or not _is_time(r.get("at"))):
            raise ProtocolError("malformed", "refused entries are {order_id, reason, at}")
    return _skew(payload["sent_at"], now)


def _skew(sent_at, now):
    delta = abs((parse_time(sent_at) - _aware(now)).total_seconds())
    return "clock_skew" if delta > CLOCK_SKEW_SECONDS else None


def _is_uuid(value):
    if not isinstance(value, str) or len(value) != 36:
        return False
    try:
        return str(uuidlib.UUID(value)) == value
    except ValueError:
        return False


def _is_hex64(value):
    return isinstance(value, str) and bool(_HEX64.match(value))


def _is_time(value):
    try:
        parse_time(value)
    except ValueError:
        return False
    return True
