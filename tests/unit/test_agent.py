"""The on-device agent (module_utils/deskguard_agent*) end to end without a laptop: real LUKS2 image files, real
signatures (deskguard_protocol), a real HTTP server on loopback. What counts is what happened to the keyslots."""

from __future__ import annotations

import datetime as dt
import shutil
import time

import pytest

import agentlab as lab
from agentlab import proto

pytestmark = [pytest.mark.unit,
              pytest.mark.skipif(shutil.which("cryptsetup") is None, reason="cryptsetup not installed")]


@pytest.fixture
def server():
    srv = lab.Server()
    yield srv
    srv.close()


@pytest.fixture
def bench(tmp_path, server):
    """disk (uuid, path), order key, device key, config, actions."""
    uuid, path = lab.make_disk(tmp_path / "disk.img")
    order_key = proto.generate_private_key()
    device_key = lab.write_device_key(tmp_path / "device.key")
    cfg = lab.config(tmp_path, server.url, order_key, tmp_path / "device.key")

    class Bench:
        pass

    b = Bench()
    b.uuid, b.path, b.order_key, b.device_key, b.cfg = uuid, path, order_key, device_key, cfg
    b.volumes = {uuid: path}
    b.actions = lab.Actions()
    b.server = server
    b.agent = lambda now=None: lab.make_agent(cfg, b.volumes, b.actions, now=now)
    b.publish = lambda body: server.orders.__setitem__(lab.DEVICE_UUID, body)
    return b


def test_online_wipe_acknowledged_then_erased_and_powered_off(bench):
    payload, body = lab.order(bench.order_key, [bench.uuid])
    bench.publish(body)
    out = bench.agent().run()
    assert out["order"]["status"] == "accepted" and out["acted"]["acted"] is True, out
    assert lab.slots(bench.path) == [] and not lab.opens(bench.path, lab.RECOVERY)
    assert bench.actions.powered == ["poweroff"]
    assert out["acted"]["volumes"][0]["keyslots_left"] == 0
    (ack,) = bench.server.acks(bench.device_key.public_key())
    assert ack["status"] == "accepted" and ack["order_id"] == payload["order_id"] and ack["nonce"] == payload["nonce"]
    assert proto.check_ack(ack, dt.datetime.now(dt.timezone.utc)) is None
    assert not bench.server.checkins(bench.device_key.public_key()), "no check-in after a wipe"
    # The order stays published: the next run knows it did it and does nothing.
    out = bench.agent().run()
    assert out["order"]["status"] == "done_before" and out["acted"] is None
    assert bench.actions.wiped == 1


@pytest.mark.parametrize("answer", ["status_503", "unreachable"])
def test_no_action_without_an_acknowledged_ack_then_retried(bench, answer):
    _, body = lab.order(bench.order_key, [bench.uuid])
    bench.publish(body)
    if answer == "status_503":
        bench.server.ack_status = 503
    else:
        bench.cfg["server_url"] = "http://127.0.0.1:%d" % lab.dead_port()
    out = bench.agent().run()
    assert out["acted"]["acted"] is False and lab.slots(bench.path) == [0, 1, 2], out
    assert bench.actions.powered == []
    bench.server.ack_status = 200
    bench.cfg["server_url"] = bench.server.url
    out = bench.agent().run()
    assert out["acted"]["acted"] is True and lab.slots(bench.path) == []


SECURITY_CASES = ["forged_signature", "other_key", "replayed_nonce", "expired", "other_device", "other_volumes",
                  "truncated_body", "oversized_body", "not_json", "slow_server", "garbage_server", "silent_server"]


@pytest.fixture(scope="module")
def tally(request):
    """Counts the security cases and what they executed, printed at the end of the module's run."""
    seen: dict[str, int] = {}
    yield seen
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if seen and capture is not None:
        with capture.global_and_fixture_disabled():
            print(f"\nagent security cases: {len(seen)} tried, {sum(seen.values())} executed "
                  f"({', '.join(sorted(seen))})")


@pytest.mark.parametrize("case", SECURITY_CASES)
def test_security_nothing_executed(bench, case, tally):
    """Each hostile or broken order: 0 executed, every keyslot still there."""
    now = None
    if case == "forged_signature":
        payload, body = lab.order(bench.order_key, [bench.uuid])
        env = proto.parse_envelope(body, 8192)
        forged = dict(payload, action="wipe", order_id="11111111-2222-4333-8444-555555555555")
        body = proto.canonical_json({"format": proto.FORMAT, "key_id": env.key_id,
                                     "payload": __import__("base64").b64encode(proto.canonical_json(forged)).decode(),
                                     "signature": __import__("base64").b64encode(env.signature).decode()})
    elif case == "other_key":
        _, body = lab.order(proto.generate_private_key(), [bench.uuid])
    elif case == "replayed_nonce":
        _, first = lab.order(bench.order_key, [bench.uuid], action="lock",
                             keep_keyslots={bench.uuid: [lab.fingerprint(bench.path, 2)]})
        bench.publish(first)
        assert bench.agent().run()["acted"]["acted"] is True        # the lock itself ran once
        assert lab.slots(bench.path) == [2]
        payload = proto.parse_envelope(first, 8192).unverified_payload()
        _, body = lab.order(bench.order_key, [bench.uuid], nonce=payload["nonce"])   # a wipe, same nonce
    elif case == "expired":
        _, body = lab.order(bench.order_key, [bench.uuid], ttl_days=1,
                            now=dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=2))
    elif case == "other_device":
        _, body = lab.order(bench.order_key, [bench.uuid], device_uuid="9f0e8d7c-6b5a-4c3d-8e2f-1a0b9c8d7e6f")
    elif case == "other_volumes":
        _, body = lab.order(bench.order_key, ["6a4f2c1e-0000-4000-8000-000000000000"])
    elif case == "truncated_body":
        _, body = lab.order(bench.order_key, [bench.uuid])
        body = body[: len(body) // 2]
    elif case == "oversized_body":
        body = b'{"format": "deskguard/1", "pad": "' + b"x" * 9000 + b'"}'
    elif case == "not_json":
        body = b"<html>502 Bad Gateway</html>"
    else:
        _, body = lab.order(bench.order_key, [bench.uuid])
        bench.server.mode = case.split("_")[0]
    before = lab.slots(bench.path)
    bench.publish(body)
    t0 = time.monotonic()
    out = bench.agent(now).run()
    took = time.monotonic() - t0
    acted = out["acted"] is not None and out["acted"]["acted"] is not False
    tally[case] = int(acted) + bench.actions.wiped + int(lab.slots(bench.path) != before)
    assert not acted, out
    assert lab.slots(bench.path) == before and lab.opens(bench.path, lab.RECOVERY)
    assert bench.actions.wiped == 0 and bench.actions.powered == ([] if case != "replayed_nonce" else ["reboot"])
    assert took < 10, f"the agent waited {took:.1f} s on a {case}"
    expected = {"forged_signature": "bad_signature", "other_key": "unknown_key", "replayed_nonce": "replayed",
                "expired": "expired", "other_device": "foreign_device", "other_volumes": "foreign_volumes",
                "truncated_body": "malformed", "oversized_body": "oversized", "not_json": "malformed"}
    if case in expected:
        assert out["order"]["reason"] == expected[case], out
        assert out["checkin"]["ok"] is True and out["checkin"]["refusals_reported"] >= 1
        (checkin,) = bench.server.checkins(bench.device_key.public_key())
        assert expected[case] in [r["reason"] for r in checkin["refused"]]
        assert proto.check_checkin(checkin, dt.datetime.now(dt.timezone.utc)) is None
    else:
        assert out["order"]["status"] == "unreachable", out


def test_authentic_refusal_is_acknowledged_as_refused_and_never_executed_later(bench):
    payload, body = lab.order(bench.order_key, [bench.uuid], ttl_days=1,
                              now=dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=2))
    bench.publish(body)
    bench.agent().run()
    (ack,) = bench.server.acks(bench.device_key.public_key())
    assert (ack["status"], ack["reason"], ack["order_id"]) == ("refused", "expired", payload["order_id"])
    # The refusal was reported in the check-in and is not repeated in the next one.
    bench.agent().run()
    first, second = bench.server.checkins(bench.device_key.public_key())
    assert [r["reason"] for r in first["refused"]] == ["expired"] and second["refused"] == []


def test_lock_keeps_only_the_escrowed_slot_and_reboots(bench):
    keep = lab.fingerprint(bench.path, 2)
    _, body = lab.order(bench.order_key, [bench.uuid], action="lock", keep_keyslots={bench.uuid: [keep]})
    bench.publish(body)
    out = bench.agent().run()
    assert out["acted"]["acted"] is True and out["acted"]["volumes"][0]["removed"] == [0, 1], out
    assert lab.slots(bench.path) == [2] and lab.fingerprint(bench.path, 2) == keep
    assert lab.opens(bench.path, lab.RECOVERY) and not lab.opens(bench.path, lab.USER_KEY)
    assert not lab.opens(bench.path, lab.KEYFILE)
    assert bench.actions.powered == ["reboot"]


def test_lock_removes_the_tpm_binding_and_the_key_file(bench, tmp_path):
    lab.add_tpm_token(bench.path, slot=1)
    etc = tmp_path / "etc"
    etc.mkdir()
    keyfile = tmp_path / "root.key"
    keyfile.write_bytes(lab.KEYFILE)
    (etc / "crypttab").write_text(f"root UUID={bench.uuid} {keyfile} luks,discard\n")
    bench.actions.etc = str(etc)
    keep = lab.fingerprint(bench.path, 2)
    _, body = lab.order(bench.order_key, [bench.uuid], action="lock", keep_keyslots={bench.uuid: [keep]})
    bench.publish(body)
    out = bench.agent().run()
    (vol,) = out["acted"]["volumes"]
    assert vol["tokens_removed"] == [0] and vol["keyfiles_removed"] == [str(keyfile)], out
    assert lab.tokens(bench.path) == [] and lab.slots(bench.path) == [2] and not keyfile.exists()
    assert lab.opens(bench.path, lab.RECOVERY)


def test_wipe_removes_every_token_too(bench):
    lab.add_tpm_token(bench.path, slot=1)
    _, body = lab.order(bench.order_key, [bench.uuid])
    bench.publish(body)
    out = bench.agent().run()
    assert out["acted"]["volumes"][0]["tokens_removed"] == [0], out
    assert lab.slots(bench.path) == [] and lab.tokens(bench.path) == []


def test_lock_refused_when_the_escrowed_slot_is_gone(bench):
    keep = lab.fingerprint(bench.path, 2)
    r = lab.cryptsetup("luksKillSlot", "--batch-mode", bench.path, "2")
    assert r.returncode == 0, r.stderr
    _, body = lab.order(bench.order_key, [bench.uuid], action="lock", keep_keyslots={bench.uuid: [keep]})
    bench.publish(body)
    out = bench.agent().run()
    assert out["order"] == {"status": "refused", "reason": "foreign_volumes", "order_id": out["order"]["order_id"]}
    assert lab.slots(bench.path) == [0, 1] and bench.actions.powered == []


def test_cancel_then_the_cached_order_is_refused_as_replayed(bench):
    payload, body = lab.order(bench.order_key, [bench.uuid])
    bench.publish(proto.sign(proto.build_cancel(payload["order_id"], lab.DEVICE_UUID), bench.order_key))
    assert bench.agent().run()["order"] == {"status": "cancelled", "order_id": payload["order_id"]}
    bench.publish(body)            # a stale cache serves the cancelled order again
    out = bench.agent().run()
    assert out["order"]["reason"] == "replayed" and lab.slots(bench.path) == [0, 1, 2]


def test_playbook_path_acknowledges_first_then_executes_the_same_order(bench):
    payload, body = lab.order(bench.order_key, [bench.uuid])
    assert bench.agent().execute_from_file(body) == {"acted": False, "status": "refused",
                                                     "reason": "not_acknowledged"}
    ack = bench.agent().ack_from_file(body)
    assert ack["status"] == "accepted" and lab.slots(bench.path) == [0, 1, 2]
    signed = proto.open_envelope(ack["ack"], bench.device_key.public_key(), proto.LIMITS["ack"])
    assert signed["status"] == "accepted" and signed["nonce"] == payload["nonce"]
    done = bench.agent().execute_from_file(body)
    assert done["acted"] is True and lab.slots(bench.path) == [] and bench.actions.powered == ["poweroff"]
    again = bench.agent().ack_from_file(body)
    assert again["status"] == "refused" and again["reason"] == "replayed"
    assert bench.server.posts == [], "the playbook path talks to no server"


def test_playbook_path_refuses_a_foreign_order_with_a_signed_refusal(bench):
    _, body = lab.order(bench.order_key, [bench.uuid], ttl_days=1,
                        now=dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=3))
    out = bench.agent().ack_from_file(body)
    assert out["status"] == "refused" and out["reason"] == "expired"
    signed = proto.open_envelope(out["ack"], bench.device_key.public_key(), proto.LIMITS["ack"])
    assert signed["status"] == "refused" and signed["reason"] == "expired"
    assert bench.agent().execute_from_file(body)["acted"] is False and lab.slots(bench.path) == [0, 1, 2]


def test_deadman_locks_after_n_days_keeping_the_escrowed_slot_once(bench):
    keep = lab.fingerprint(bench.path, 2)
    bench.cfg.update(deadman_days=3, escrowed_keyslots={bench.uuid: [keep]},
                     server_url="http://127.0.0.1:%d" % lab.dead_port(),
                     orders_url="http://127.0.0.1:%d" % lab.dead_port())
    start = time.time()
    first = bench.agent(now=start)
    first.state.checked_in(start)
    first.state.save()
    assert bench.agent(now=start + 2 * 86400).run()["deadman"] is None and lab.slots(bench.path) == [0, 1, 2]
    out = bench.agent(now=start + 4 * 86400).run()
    assert out["deadman"]["acted"] is True and lab.slots(bench.path) == [2] and lab.opens(bench.path, lab.RECOVERY)
    assert bench.actions.powered == ["reboot"]
    # Unlocked by IT with the escrowed key and a new user slot added: no second lock before a check-in.
    r = lab.cryptsetup("luksAddKey", "-q", *lab.LIGHT, "--key-slot", "0", "--key-file", "-", "--keyfile-size",
                       str(len(lab.RECOVERY)), "--new-keyfile-size", str(len(lab.USER_KEY)), bench.path, "-",
                       key=lab.RECOVERY + lab.USER_KEY)
    assert r.returncode == 0, r.stderr
    assert bench.agent(now=start + 5 * 86400).run()["deadman"] is None and lab.slots(bench.path) == [0, 2]


def test_deadman_never_locks_without_a_known_escrowed_slot(bench):
    bench.cfg.update(deadman_days=1, escrowed_keyslots={bench.uuid: ["0" * 64]}, installed_at=None,
                     server_url="http://127.0.0.1:%d" % lab.dead_port())
    start = time.time()
    a = bench.agent(now=start)
    a.state.checked_in(start)
    a.state.save()
    out = bench.agent(now=start + 2 * 86400).run()
    assert out["deadman"]["acted"] is False and out["deadman"]["refused"] == "foreign_volumes"
    assert lab.slots(bench.path) == [0, 1, 2] and bench.actions.powered == []


def test_deadman_prefers_the_newer_keep_set_from_a_signed_lock_order(bench):
    bench.cfg.update(escrowed_keyslots={bench.uuid: ["a" * 64]}, config_mtime=time.time() - 100)
    a = bench.agent()
    a.state.keep_for_lock({bench.uuid: ["b" * 64]}, "order x")
    assert a.lock_keep() == {bench.uuid: ["b" * 64]}
    bench.cfg["config_mtime"] = time.time() + 100        # the role ran again since: its escrow list is newer
    assert a.lock_keep() == {bench.uuid: ["a" * 64]}


def test_the_order_is_fetched_with_a_signed_fresh_request_or_plainly_from_a_static_server(bench):
    bench.agent().run()
    bench.agent().run()
    first, second = bench.server.fetches(bench.device_key.public_key())
    assert first["device_uuid"] == lab.DEVICE_UUID and first["nonce"] != second["nonce"]
    assert proto.check_fetch(first, dt.datetime.now(dt.timezone.utc)) is None
    bench.cfg["order_fetch"] = "static"
    _, body = lab.order(bench.order_key, [bench.uuid], action="lock",
                        keep_keyslots={bench.uuid: [lab.fingerprint(bench.path, 2)]})
    bench.publish(body)
    out = bench.agent().run()
    assert out["acted"]["acted"] is True and len(bench.server.fetches(bench.device_key.public_key())) == 2


def test_a_run_leaves_the_operator_status_for_deskguard_status(bench, tmp_path):
    """What the operator may read of this run (docs/operators.md): the posture's reboot and USB facts and the
    check-in, world-readable, under the service's UMask=0077; a status that cannot be written never fails the run."""
    import os
    import stat

    posture = {"updates": {"reboot_pending": True}, "usb": {"devices": [
        {"id": "0781:5567", "serial": "4C530001", "name": "Cruzer Blade", "storage": True, "authorized": False}]}}
    status_dir = tmp_path / "operator-status"
    old = os.umask(0o077)
    try:
        out = lab.agent_mod.Agent(dict(bench.cfg, posture_params={"usb": {"mode": "block"}}), volumes=bench.volumes,
                                  actions=bench.actions, posture=lambda: (posture, {}, {}), log=lambda m: None,
                                  operator_status_dir=str(status_dir)).run()
    finally:
        os.umask(old)
    assert out["checkin"]["ok"] and out["operator_status"] is True
    saved = status_dir / "status.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o644 and stat.S_IMODE(status_dir.stat().st_mode) == 0o755
    import json

    data = json.loads(saved.read_text())
    assert data["reboot_pending"] is True and data["usb_storage_needs_approval"] is True and data["checkin_ok"]
    assert data["usb_blocked"] == [{"name": "Cruzer Blade", "code": "0781:5567 4C530001"}]
    assert data["last_checkin"] and data["last_checkin"].endswith("Z")
    (tmp_path / "not-a-dir").write_text("")
    out = lab.agent_mod.Agent(bench.cfg, volumes=bench.volumes, actions=bench.actions, log=lambda m: None,
                              posture=lambda: (posture, {}, {}),
                              operator_status_dir=str(tmp_path / "not-a-dir")).run()
    assert out["checkin"]["ok"] and out["operator_status"].startswith(("FileExistsError", "NotADirectoryError"))


def test_checkin_is_signed_and_accepted_by_the_protocol(bench):
    out = bench.agent().run()
    assert out["order"] == {"status": "none"} and out["checkin"] == {"ok": True, "refusals_reported": 0}
    (checkin,) = bench.server.checkins(bench.device_key.public_key())
    assert checkin["device_uuid"] == lab.DEVICE_UUID and checkin["posture"]["posture"]["os"]["id"] == "debian"
    assert proto.check_checkin(checkin, dt.datetime.now(dt.timezone.utc)) is None
    assert bench.agent().state.last_checkin() is not None
