"""module_utils/deskguard_protocol: envelopes, the order checks and every refusal reason of
docs/agent-protocol.md. The attack cases are counted: each must be refused with its own reason, 0 accepted."""

from __future__ import annotations

import base64
import datetime as dt
import io
import json

import pytest

from deskguard.site import module_utils

pytestmark = pytest.mark.unit
P = module_utils("deskguard_protocol")

DEVICE = "6f1c2a52-0d7e-4f43-9a55-3a0c1b7e9d10"
OTHER_DEVICE = "0b8f3d1e-2c4a-4e6b-8d0f-1a2b3c4d5e6f"
VOL = "3b2e8d4a-1c5f-4e7a-9b0d-6f8e2a4c1d3b"
VOL2 = "9a7c5e3b-1d2f-4a6b-8c0e-2f4a6c8e0b1d"
FP = "a" * 64
FP_USER = "b" * 64
NOW = dt.datetime(2026, 11, 29, 1, 0, 0, tzinfo=dt.timezone.utc)


@pytest.fixture(scope="module")
def order_key():
    return P.generate_private_key()


@pytest.fixture(scope="module")
def other_key():
    return P.generate_private_key()


def _order(action="wipe", **kw):
    kw.setdefault("now", NOW)
    keep = kw.pop("keep_keyslots", {VOL: [FP]} if action == "lock" else None)
    return P.build_order(kw.pop("device_uuid", DEVICE), action, kw.pop("volumes", [VOL]), keep_keyslots=keep, **kw)


def _evaluate(data, key, local=None, now=NOW, seen=(), cancelled=()):
    return P.evaluate(data, key.public_key(), DEVICE, local if local is not None else {VOL: {FP, FP_USER}}, now,
                      seen, cancelled)


def _env_dict(data):
    return json.loads(data)


def _reenvelope(env):
    return P.canonical_json(env)


# -- the happy path ---------------------------------------------------------------------------------------

def test_a_signed_wipe_order_for_this_device_is_accepted(order_key):
    payload = _order()
    decision, got = _evaluate(P.sign(payload, order_key), order_key)
    assert decision == P.ACCEPT
    assert got == payload


def test_a_lock_order_keeping_a_present_escrowed_slot_is_accepted(order_key):
    decision, got = _evaluate(P.sign(_order("lock"), order_key), order_key)
    assert decision == P.ACCEPT and got["keep_keyslots"] == {VOL: [FP]}


def test_envelope_is_canonical_json_with_p1363_signature_and_key_id(order_key):
    env = _env_dict(P.sign(_order(), order_key))
    assert env["format"] == "deskguard/1"
    assert len(base64.b64decode(env["signature"])) == 64
    assert env["key_id"] == P.key_id(order_key) == P.key_id(order_key.public_key())
    assert len(env["key_id"]) == 16
    body = base64.b64decode(env["payload"])
    assert body == P.canonical_json(json.loads(body))


def test_key_id_is_stable_through_pem(order_key):
    pub = P.load_public_key(P.public_key_pem(order_key).decode())
    assert P.key_id(pub) == P.key_id(order_key)
    assert P.key_id(P.load_private_key(P.private_key_pem(order_key))) == P.key_id(order_key)


def test_verification_uses_the_bytes_as_sent_not_a_reserialisation(order_key):
    # A payload signed in a non-canonical form still verifies (the verifier never re-serialises) ...
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    body = json.dumps(_order(), indent=2).encode()
    r, s = decode_dss_signature(order_key.sign(body, ec.ECDSA(hashes.SHA256())))
    env = {"format": P.FORMAT, "key_id": P.key_id(order_key), "payload": base64.b64encode(body).decode(),
           "signature": base64.b64encode(r.to_bytes(32, "big") + s.to_bytes(32, "big")).decode()}
    assert _evaluate(_reenvelope(env), order_key)[0] == P.ACCEPT
    # ... and one byte of whitespace more breaks it.
    env["payload"] = base64.b64encode(body + b" ").decode()
    assert _evaluate(_reenvelope(env), order_key)[0] == "bad_signature"


def test_cancel_is_recognised_and_then_the_old_order_is_replayed(order_key):
    order = _order()
    cancel = P.build_cancel(order["order_id"], DEVICE, now=NOW)
    decision, got = _evaluate(P.sign(cancel, order_key), order_key)
    assert decision == "cancel" and got["order_id"] == order["order_id"]
    assert _evaluate(P.sign(order, order_key), order_key, cancelled={order["order_id"]})[0] == "replayed"


# -- every refusal reason: 0 accepted ------------------------------------------------------------------------

def _forged(order_key, other_key):
    """Payload altered after signing: the envelope keeps the real key id and signature."""
    env = _env_dict(P.sign(_order(), order_key))
    payload = json.loads(base64.b64decode(env["payload"]))
    payload["device_uuid"] = DEVICE  # same device, but a volume of the attacker's choice
    payload["volumes"] = [VOL2]
    env["payload"] = base64.b64encode(P.canonical_json(payload)).decode()
    return _reenvelope(env)


def _signed_by_other_key_claiming_order_key(order_key, other_key):
    env = _env_dict(P.sign(_order(), other_key))
    env["key_id"] = P.key_id(order_key)
    return _reenvelope(env)


ATTACKS = {
    "forged signature": (lambda k, o: _forged(k, o), {}, "bad_signature"),
    "signed by another key": (lambda k, o: P.sign(_order(), o), {}, "unknown_key"),
    "another key claiming the pinned key id": (_signed_by_other_key_claiming_order_key, {}, "bad_signature"),
    "replayed nonce": (lambda k, o: P.sign(_order(nonce="c" * 64), k), {"seen": {"c" * 64}}, "replayed"),
    "expired": (lambda k, o: P.sign(_order(now=NOW - dt.timedelta(days=31)), k), {}, "expired"),
    "not yet valid": (lambda k, o: P.sign(_order(now=NOW + dt.timedelta(seconds=301)), k), {}, "not_yet_valid"),
    "another device": (lambda k, o: P.sign(_order(device_uuid=OTHER_DEVICE), k), {}, "foreign_device"),
    "other volumes": (lambda k, o: P.sign(_order(volumes=[VOL2]), k), {}, "foreign_volumes"),
    "one volume too many": (lambda k, o: P.sign(_order(volumes=[VOL, VOL2]), k), {}, "foreign_volumes"),
    "lock keeping a slot not on the disk": (
        lambda k, o: P.sign(_order("lock", keep_keyslots={VOL: ["d" * 64]}), k), {}, "foreign_volumes"),
    "lock keeping no slot": (lambda k, o: P.sign(_order("lock", keep_keyslots={VOL: []}), k), {}, "foreign_volumes"),
    "truncated": (lambda k, o: P.sign(_order(), k)[:-20], {}, "malformed"),
    "oversized": (lambda k, o: P.sign(_order(), k) + b" " * 9000, {}, "oversized"),
    "payload not base64": (lambda k, o: _reenvelope({**_env_dict(P.sign(_order(), k)), "payload": "%%%"}), {},
                           "malformed"),
    "signature not base64": (lambda k, o: _reenvelope({**_env_dict(P.sign(_order(), k)), "signature": "!"}), {},
                             "malformed"),
    "short signature": (lambda k, o: _reenvelope({**_env_dict(P.sign(_order(), k)), "signature": "AAAA"}), {},
                        "malformed"),
    "not JSON": (lambda k, o: b"<html>502 Bad Gateway</html>", {}, "malformed"),
    "JSON array": (lambda k, o: b"[1,2,3]", {}, "malformed"),
    "not UTF-8": (lambda k, o: b"\xff\xfe{}", {}, "malformed"),
    "empty": (lambda k, o: b"", {}, "malformed"),
    "duplicate key in envelope": (
        lambda k, o: P.sign(_order(), k)[:-1] + b',"key_id":"0000000000000000"}', {}, "malformed"),
    "unknown envelope format": (lambda k, o: _reenvelope({**_env_dict(P.sign(_order(), k)), "format": "x/9"}), {},
                                "unsupported"),
    "unknown action": (lambda k, o: P.sign({**_order(), "action": "format-c"}, k), {}, "unsupported"),
    "unknown type": (lambda k, o: P.sign({**_order(), "type": "shell"}, k), {}, "unsupported"),
    "unknown version": (lambda k, o: P.sign({**_order(), "v": 2}, k), {}, "unsupported"),
    "extra field": (lambda k, o: P.sign({**_order(), "run": "rm -rf /"}, k), {}, "malformed"),
    "empty volume list": (lambda k, o: P.sign({**_order(), "volumes": []}, k), {}, "foreign_volumes"),
    "nonce not hex": (lambda k, o: P.sign({**_order(), "nonce": "x"}, k), {}, "malformed"),
    "impossible date": (lambda k, o: P.sign({**_order(), "expires_at": "2026-13-40T00:00:00Z"}, k), {},
                        "malformed"),
    "cancel for another device": (lambda k, o: P.sign(P.build_cancel(DEVICE, OTHER_DEVICE, now=NOW), k), {},
                                  "foreign_device"),
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attack_is_refused_with_its_reason(name, order_key, other_key):
    make, opts, reason = ATTACKS[name]
    decision, _payload = _evaluate(make(order_key, other_key), order_key, **opts)
    assert decision == reason
    assert decision in P.REASONS


def test_attack_count_zero_accepted(order_key, other_key, capsys):
    accepted = [n for n, (make, opts, _r) in ATTACKS.items()
                if _evaluate(make(order_key, other_key), order_key, **opts)[0] in (P.ACCEPT, "cancel")]
    with capsys.disabled():
        print(f"\nprotocol attacks: {len(ATTACKS)} tried, {len(accepted)} accepted")
    assert accepted == []
    assert {r for _m, _o, r in ATTACKS.values()} == set(P.REASONS)  # every reason is exercised


def test_expiry_boundary_is_inclusive_until_expires_at(order_key):
    order = _order()
    expires = P.parse_time(order["expires_at"])
    assert _evaluate(P.sign(order, order_key), order_key, now=expires)[0] == P.ACCEPT
    assert _evaluate(P.sign(order, order_key), order_key, now=expires + dt.timedelta(seconds=1))[0] == "expired"


def test_small_clock_skew_is_tolerated(order_key):
    order = _order(now=NOW + dt.timedelta(seconds=299))
    assert _evaluate(P.sign(order, order_key), order_key)[0] == P.ACCEPT


def test_bitlocker_volumes_as_a_plain_set(order_key):
    vol = "{0a1b2c3d-4e5f-6789-abcd-ef0123456789}"
    order = P.build_order(DEVICE, "wipe", [vol], now=NOW)
    assert _evaluate(P.sign(order, order_key), order_key, local={vol})[0] == P.ACCEPT
    assert _evaluate(P.sign(order, order_key), order_key, local=set())[0] == "foreign_volumes"


def test_read_bounded_stops_past_the_limit():
    assert P.read_bounded(io.BytesIO(b"x" * 10), 10) == b"x" * 10
    with pytest.raises(P.ProtocolError) as exc:
        P.read_bounded(io.BytesIO(b"x" * 11), 10)
    assert exc.value.reason == "oversized"


def test_builders_refuse_what_the_checks_would_refuse():
    with pytest.raises(ValueError):
        P.build_order(DEVICE, "format", [VOL])
    with pytest.raises(ValueError):
        P.build_order("not-a-uuid", "wipe", [VOL])
    with pytest.raises(ValueError):
        P.build_ack(_order(), "refused")  # a refusal needs a reason
    with pytest.raises(ValueError):
        P.build_ack(_order(), "accepted", reason="expired")
    with pytest.raises(ValueError):
        P.ProtocolError("not-a-reason")


# -- acks and check-ins (server side) ---------------------------------------------------------------------

def test_ack_and_checkin_roundtrip_with_a_device_key(order_key):
    device_key = P.generate_private_key()
    order = _order()
    ack = P.build_ack(order, "accepted", now=NOW)
    env = P.parse_envelope(P.sign(ack, device_key), P.LIMITS["ack"])
    assert env.unverified_payload()["device_uuid"] == DEVICE
    got = P.verify(env, P.load_public_key(P.public_key_pem(device_key)))
    assert got == ack and P.check_ack(got, NOW) is None

    checkin = P.build_checkin(DEVICE, {"disk": {"encrypted": True}}, "1.0",
                              refused=[{"order_id": None, "reason": "bad_signature", "at": "2026-11-29T00:00:00Z"}],
                              now=NOW)
    got = P.open_envelope(P.sign(checkin, device_key), device_key.public_key(), P.LIMITS["checkin"])
    assert P.check_checkin(got, NOW) is None
    assert P.check_checkin(got, NOW + dt.timedelta(seconds=301)) == "clock_skew"


@pytest.mark.parametrize("mutate", [
    lambda p: {**p, "status": "maybe"},
    lambda p: {**p, "status": "refused", "reason": "because"},
    lambda p: {**p, "order_id": "1"},
    lambda p: {k: v for k, v in p.items() if k != "nonce"},
    lambda p: {**p, "sent_at": "yesterday"},
])
def test_malformed_acks_are_refused(mutate):
    ack = mutate(P.build_ack(_order(), "accepted", now=NOW))
    with pytest.raises(P.ProtocolError) as exc:
        P.check_ack(ack, NOW)
    assert exc.value.reason == "malformed"


@pytest.mark.parametrize("mutate", [
    lambda p: {**p, "posture": []},
    lambda p: {**p, "refused": [{"reason": "nope", "at": "2026-11-29T00:00:00Z", "order_id": None}]},
    lambda p: {**p, "agent_version": "x" * 65},
    lambda p: {**p, "extra": 1},
])
def test_malformed_checkins_are_refused(mutate):
    checkin = mutate(P.build_checkin(DEVICE, {}, "1.0", now=NOW))
    with pytest.raises(P.ProtocolError) as exc:
        P.check_checkin(checkin, NOW)
    assert exc.value.reason == "malformed"


def test_ack_of_another_type_is_unsupported():
    with pytest.raises(P.ProtocolError) as exc:
        P.check_ack(P.build_checkin(DEVICE, {}, "1.0", now=NOW), NOW)
    assert exc.value.reason == "unsupported"
