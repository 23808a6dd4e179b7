"""Announcements are signed like orders (plugins/module_utils/deskguard_announcement.py): every attack the order
tests make is refused here too, with the protocol's reason words, and the two kinds never pass for each other."""

from __future__ import annotations

import base64
import datetime as dt
import json
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins" / "module_utils"))
import deskguard_announcement as ann  # noqa: E402
import deskguard_protocol as proto  # noqa: E402

pytestmark = pytest.mark.unit

DEVICE = str(uuid.UUID(int=1))
OTHER = str(uuid.UUID(int=2))
NOW = dt.datetime(2026, 12, 7, 0, 0, tzinfo=dt.timezone.utc)
TEXT = "明日 9:00 から 9:30 まで通話システムの更新があります。/ The call system is updated tomorrow 9:00-9:30."


@pytest.fixture(scope="module")
def key():
    return proto.generate_private_key()


def signed(key, **kw):
    payload = ann.build(kw.pop("device", DEVICE), kw.pop("text", TEXT), now=kw.pop("now", NOW), **kw)
    return payload, proto.sign(payload, key)


def test_a_genuine_announcement_is_shown_once(key):
    payload, body = signed(key, languages=["ja"])
    decision, got = ann.evaluate(body, key.public_key(), DEVICE, NOW, seen_nonces=())
    assert decision == proto.ACCEPT and got == payload and got["text"] == TEXT
    assert ann.for_language(got, "ja") and not ann.for_language(got, "en")
    # The laptop remembers the nonce of what it showed: the same envelope again is a replay.
    assert ann.evaluate(body, key.public_key(), DEVICE, NOW, seen_nonces={payload["nonce"]})[0] == "replayed"


def test_forged_announcements_are_refused(key):
    payload, body = signed(key)
    other_key = proto.generate_private_key()
    assert ann.evaluate(proto.sign(payload, other_key), key.public_key(), DEVICE, NOW, ())[0] == "unknown_key"
    env = json.loads(body)
    changed = dict(payload, text="Please send your password to it-help@example.net.")
    env["payload"] = base64.b64encode(proto.canonical_json(changed)).decode()
    assert ann.evaluate(proto.canonical_json(env), key.public_key(), DEVICE, NOW, ())[0] == "bad_signature"
    assert ann.evaluate(b"{not json", key.public_key(), DEVICE, NOW, ())[0] == "malformed"
    assert ann.evaluate(b" " * (ann.LIMIT + 1), key.public_key(), DEVICE, NOW, ())[0] == "oversized"


def test_foreign_expired_and_future_announcements_are_refused(key):
    assert ann.evaluate(signed(key, device=OTHER)[1], key.public_key(), DEVICE, NOW, ())[0] == "foreign_device"
    _p, body = signed(key, until=NOW + dt.timedelta(hours=1))
    assert ann.evaluate(body, key.public_key(), DEVICE, NOW + dt.timedelta(hours=2), ())[0] == "expired"
    _p, body = signed(key, now=NOW + dt.timedelta(hours=1))
    assert ann.evaluate(body, key.public_key(), DEVICE, NOW, ())[0] == "not_yet_valid"
    _p, body = signed(key, now=NOW + dt.timedelta(seconds=proto.CLOCK_SKEW_SECONDS - 10))
    assert ann.evaluate(body, key.public_key(), DEVICE, NOW, ())[0] == proto.ACCEPT   # within the allowed skew


def test_an_order_is_never_an_announcement_and_back(key):
    order = proto.build_order(DEVICE, "wipe", ["0f1e2d3c-aaaa-bbbb-cccc-000000000001"], now=NOW)
    assert ann.evaluate(proto.sign(order, key), key.public_key(), DEVICE, NOW, ())[0] == "unsupported"
    _p, body = signed(key)
    decision, _ = proto.evaluate(body, key.public_key(), DEVICE, {"0f1e2d3c-aaaa-bbbb-cccc-000000000001": ()},
                                 NOW, ())
    assert decision == "unsupported"


@pytest.mark.parametrize("change, why", [
    ({"text": ""}, "text"), ({"text": "x" * (ann.MAX_TEXT + 1)}, "text"),
    ({"text": "safe\x1b]8;;http://evil\x07click"}, "control characters"), ({"languages": ["fr"]}, "languages"),
    ({"nonce": "short"}, "nonce"), ({"extra": 1}, "fields"), ({"device_uuid": "lap-0042"}, "UUIDs"),
    ({"expires_at": "2026-12-06T00:00:00Z"}, "after issued_at"),
])
def test_a_badly_shaped_announcement_is_refused(key, change, why):
    bad = dict(ann.build(DEVICE, TEXT, now=NOW), **change)
    assert why in ann.shape(bad)
    assert ann.check(bad, DEVICE, NOW, ()) == "malformed"
    assert ann.evaluate(proto.sign(bad, key), key.public_key(), DEVICE, NOW, ())[0] == "malformed"


def test_the_builder_refuses_what_the_laptop_would_refuse():
    for kw in ({"text": "\x1b[2J"}, {"languages": ["fr"]}, {"until": NOW - dt.timedelta(days=1)}):
        with pytest.raises(ValueError, match="cannot build this announcement"):
            ann.build(DEVICE, kw.pop("text", TEXT), now=NOW, **kw)
