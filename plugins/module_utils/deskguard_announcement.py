"""IT's announcements to operators, signed like orders (docs/operators.md, "Announcements").

An announcement is one signed envelope per laptop (deskguard_protocol's envelope, the site's order key), so it
is bound to that laptop's device UUID exactly as an order is: a forged one (another key, a changed byte), one
for another laptop, an expired one, one from the future and a replayed one (its nonce already shown) are
refused, each with a reason word from deskguard_protocol.REASONS. The type field keeps the two kinds apart: an
announcement is never an order and an order is never an announcement. Text only (plain, bounded), and the
languages whose operators it is for (empty: everyone). Python 3.9+, stdlib and ``cryptography``.

Built and verified here; not yet delivered (no `deskguard announce`, no fetch at check-in): see
docs/operators.md.
"""

from __future__ import annotations

import datetime as dt
import uuid as uuidlib

try:  # inside a module (Ansiballz) the kit's module_utils live under ansible.module_utils
    from ansible.module_utils import deskguard_protocol as proto
    from ansible.module_utils.deskguard_operator_words import LANGUAGES
except ImportError:  # unit tests, the controller and the agent import them as plain modules
    import deskguard_protocol as proto
    from deskguard_operator_words import LANGUAGES

TYPE = "announcement"
LIMIT = 8 * 1024            # an envelope: base64 of a payload with up to MAX_TEXT characters of UTF-8
MAX_TEXT = 1000             # characters: a notification and a status line, not a newsletter
DEFAULT_TTL_DAYS = 14
FIELDS = {"v", "type", "announcement_id", "device_uuid", "text", "languages", "nonce", "issued_at", "expires_at"}


def build(device_uuid, text, languages=(), until=None, now=None, announcement_id=None, nonce=None):
    """The payload for one laptop. ``until``: an aware datetime (default DEFAULT_TTL_DAYS after now)."""
    now = proto._aware(now or proto.utc_now())
    until = proto._aware(until) if until else now + dt.timedelta(days=DEFAULT_TTL_DAYS)
    payload = {"v": proto.VERSION, "type": TYPE, "announcement_id": announcement_id or str(uuidlib.uuid4()),
               "device_uuid": str(device_uuid), "text": text, "languages": sorted(set(languages)),
               "nonce": nonce or proto.new_nonce(), "issued_at": proto.format_time(now),
               "expires_at": proto.format_time(until)}
    problem = shape(payload)
    if problem:
        raise ValueError("cannot build this announcement: %s" % problem)
    return payload


def shape(p):
    """None if an announcement payload has exactly the right fields and types, else what is wrong."""
    if set(p) != FIELDS:
        return "fields must be %s" % ", ".join(sorted(FIELDS))
    if not proto._is_uuid(p["announcement_id"]) or not proto._is_uuid(p["device_uuid"]):
        return "announcement_id and device_uuid must be UUIDs"
    if not proto._is_hex64(p["nonce"]):
        return "nonce must be 64 hex characters"
    if not proto._is_time(p["issued_at"]) or not proto._is_time(p["expires_at"]):
        return "issued_at and expires_at must be UTC times"
    if proto.parse_time(p["expires_at"]) <= proto.parse_time(p["issued_at"]):
        return "expires_at must be after issued_at"
    text = p["text"]
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT:
        return "text must be 1 to %d characters" % MAX_TEXT
    if any(ord(c) < 32 and c != "\n" or ord(c) == 127 for c in text):
        return "text must not contain control characters (a terminal escape would act on the operator's screen)"
    if not isinstance(p["languages"], list) or not all(lang in LANGUAGES for lang in p["languages"]):
        return "languages must be a list of %s" % ", ".join(LANGUAGES)
    return None


def check(payload, device_uuid, now, seen_nonces):
    """proto.ACCEPT, or the reason the laptop refuses this verified payload."""
    if not isinstance(payload, dict):
        return "malformed"
    if payload.get("v") != proto.VERSION or payload.get("type") != TYPE:
        return "unsupported"
    if shape(payload):
        return "malformed"
    if payload["device_uuid"] != str(device_uuid):
        return "foreign_device"
    if payload["nonce"] in set(seen_nonces):
        return "replayed"
    now = proto._aware(now)
    if now > proto.parse_time(payload["expires_at"]):
        return "expired"
    if proto.parse_time(payload["issued_at"]) > now + dt.timedelta(seconds=proto.CLOCK_SKEW_SECONDS):
        return "not_yet_valid"
    return proto.ACCEPT


def evaluate(data, order_public_key, device_uuid, now, seen_nonces):
    """What the laptop does with one envelope's bytes: (decision, payload or None); decision is proto.ACCEPT
    (show it) or a reason word (refuse it, report it)."""
    try:
        payload = proto.open_envelope(data, order_public_key, LIMIT)
    except proto.ProtocolError as exc:
        return exc.reason, None
    return check(payload, device_uuid, now, seen_nonces), payload


def for_language(payload, language):
    """Is this announcement for an operator reading ``language``?"""
    return not payload["languages"] or language in payload["languages"]
