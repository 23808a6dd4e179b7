"""`deskguard serve` run for real on loopback (a `deskguard serve` process, and uvicorn in a thread for the
read-only-store case), spoken to with a real HTTP client and raw sockets. The attack cases are counted in the
output: 0 accepted, and the server still serves afterwards."""

from __future__ import annotations

import base64
import datetime as dt
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time

import clirun
import pytest
import sitetools

from deskguard.site import module_utils

pytestmark = pytest.mark.unit
P = module_utils("deskguard_protocol")
PASS = "correct horse battery staple"
LUKS = "3b2e8d4a-1c5f-4e7a-9b0d-6f8e2a4c1d3b"
DEADLINE = 2.0  # header and body deadlines of the server under test, seconds


def now_utc():
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


class Client:
    def __init__(self, port):
        self.port = port

    def request(self, method, path, body=None, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            # Order files are returned as bytes (they are compared byte for byte), answers as parsed JSON.
            is_json = resp.getheader("content-type", "").startswith("application/json")
            return resp.status, (json.loads(data) if is_json and data and resp.status != 200 or
                                 is_json and not path.startswith("/orders/") else data)
        finally:
            conn.close()

    def post(self, path, body):
        return self.request("POST", path, body, {"content-type": "application/json"})


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A site with two laptops: lt-1 (agent key, escrowed LUKS key, a queued wipe order), lt-2 (agent key, no
    order) and a `deskguard serve` process on a free loopback port."""
    from deskguard.recovery import keys
    from deskguard.orders import issue, settings
    from deskguard.store import Store

    site = tmp_path_factory.mktemp("site")
    keys.init_keys(site, PASS)
    devkeys = {}
    with Store.open(site, create=True) as store:
        for name in ("lt-1", "lt-2"):
            dev = store.register_device(name, "debian", "127.0.0.1", 22, "dgadmin", None)
            devkeys[name] = (dev.uuid, P.generate_private_key())
            store.set_agent_public_key(dev.uuid, P.public_key_pem(devkeys[name][1]).decode())
            store.add_secret(dev.uuid, "luks-recovery", f"luks:{LUKS}:1", b"sealed", state="active")
        issued = issue.issue(site, store, settings.load(site), "lt-1", action="wipe", reason="lost")
    env = {k: v for k, v in os.environ.items() if k not in ("DESKGUARD_DB_URL", "DESKGUARD_SITE")}
    env.update(DESKGUARD_SERVE_HEADER_DEADLINE=str(DEADLINE), DESKGUARD_SERVE_BODY_DEADLINE=str(DEADLINE))
    with sitetools.serving(site, env) as port:
        yield {"site": site, "client": Client(port), "port": port, "keys": devkeys, "order": issued}


def _checkin(lab, name="lt-1", sent=None, key=None, **extra):
    uuid, devkey = lab["keys"][name]
    payload = P.build_checkin(uuid, {"disk": {"encrypted": True}}, "1.0", now=sent or now_utc(), **extra)
    return P.sign(payload, key or devkey)


def _store(lab):
    from deskguard.store import Store

    return Store.open(lab["site"])


def _fetch(lab, name="lt-1", sent=None, key=None, device=None):
    """A signed order fetch (docs/agent-protocol.md) of `name` (`device` overrides the uuid it claims)."""
    uuid, devkey = lab["keys"][name]
    return P.sign(P.build_fetch(device or uuid, now=sent or now_utc()), key or devkey)


def _fetch_order(lab, name, body):
    return lab["client"].post(f"/orders/{lab['keys'][name][0]}", body)


def test_only_the_device_fetches_its_order_signed_fresh_and_once(lab):
    order_file = lab["order"].path.read_bytes()
    status, body = _fetch_order(lab, "lt-1", _fetch(lab, "lt-1"))
    assert status == 200 and body == order_file
    assert _fetch_order(lab, "lt-2", _fetch(lab, "lt-2")) == (404, {"error": "no_order"})
    assert lab["client"].post("/orders/..%2F..%2Fdeskguard.db", _fetch(lab, "lt-1"))[0] == 404
    assert lab["client"].post("/orders/not-a-uuid", _fetch(lab, "lt-1"))[0] == 404


def test_a_refused_fetch_says_nothing_about_whether_there_is_an_order(lab):
    """lt-1 has a queued wipe, lt-2 none: every refused way of asking gets the same answer for both, and never
    the order."""
    other = P.generate_private_key()
    stale = now_utc() - dt.timedelta(seconds=P.CLOCK_SKEW_SECONDS + 60)
    replays = {name: _fetch(lab, name) for name in ("lt-1", "lt-2")}
    for name, body in replays.items():
        assert _fetch_order(lab, name, body)[0] in (200, 404)        # the device's own fetch, used once
    ways = {
        "unsigned GET": lambda name: lab["client"].request("GET", f"/orders/{lab['keys'][name][0]}"),
        "empty POST": lambda name: _fetch_order(lab, name, b""),
        "signed by a foreign key": lambda name: _fetch_order(lab, name, _fetch(lab, name, key=other)),
        "the other laptop's own fetch": lambda name: _fetch_order(
            lab, name, _fetch(lab, "lt-2" if name == "lt-1" else "lt-1")),
        "another laptop's key claiming this one": lambda name: _fetch_order(
            lab, name, _fetch(lab, name, key=lab["keys"]["lt-2" if name == "lt-1" else "lt-1"][1])),
        "stale": lambda name: _fetch_order(lab, name, _fetch(lab, name, sent=stale)),
        "replayed": lambda name: _fetch_order(lab, name, replays[name]),
        "a check-in instead": lambda name: _fetch_order(lab, name, _checkin(lab, name)),
    }
    order_file = lab["order"].path.read_bytes()
    for way, ask in ways.items():
        with_order, without = ask("lt-1"), ask("lt-2")
        assert with_order == without, way
        assert with_order[0] >= 400 and order_file not in json.dumps(with_order[1]).encode(), way
    assert ways["unsigned GET"]("lt-1")[1]["error"] == "signed_fetch_required"
    assert ways["stale"]("lt-1") == (422, {"error": "clock_skew",
                                          "detail": "sent_at is more than 300 s away from the server's clock"})
    assert ways["replayed"]("lt-1")[1]["error"] == "replayed"


def test_checkin_stored_then_replay_and_skew_refused(lab):
    t = now_utc() - dt.timedelta(seconds=100)
    c = lab["client"]
    assert c.post("/v1/checkin", _checkin(lab, "lt-2", sent=t)) == (200, {"ok": True})
    assert c.post("/v1/checkin", _checkin(lab, "lt-2", sent=t))[0] == 409  # same sent_at: a replay
    assert c.post("/v1/checkin", _checkin(lab, "lt-2", sent=t - dt.timedelta(seconds=5)))[1]["error"] == "replayed"
    assert c.post("/v1/checkin", _checkin(lab, "lt-2", sent=t + dt.timedelta(hours=1))) == \
        (422, {"error": "clock_skew", "detail": "sent_at is more than 300 s away from the server's clock"})
    with _store(lab) as s:
        uuid = lab["keys"]["lt-2"][0]
        row = s.latest_checkins([uuid])[uuid]
        assert row.sent_at == t.replace(tzinfo=None) and row.payload_obj["posture"] == {"disk": {"encrypted": True}}
        assert s.get_device("lt-2").last_seen_via == "checkin"


def _attacks(lab):
    uuid, key = lab["keys"]["lt-2"]
    other = P.generate_private_key()
    good = json.loads(_checkin(lab, "lt-2"))
    forged = dict(good, payload=base64.b64encode(P.canonical_json(
        {**json.loads(base64.b64decode(good["payload"])), "posture": {"disk": {"encrypted": True}, "x": 1}})).decode())
    unknown = P.sign(P.build_checkin("0b8f3d1e-2c4a-4e6b-8d0f-1a2b3c4d5e6f", {}, "1.0"), other)
    ack_foreign = P.sign(P.build_ack({"order_id": lab["order"].order.id, "device_uuid": uuid,
                                      "nonce": lab["order"].payload["nonce"]}, "accepted"), key)
    return {
        "forged signature": ("/v1/checkin", P.canonical_json(forged), 401),
        "signed by another key": ("/v1/checkin", _checkin(lab, "lt-2", key=other), 401),
        "unknown device": ("/v1/checkin", unknown, 401),
        "replayed": ("/v1/checkin", _checkin(lab, "lt-2", sent=now_utc() - dt.timedelta(seconds=250)), 409),
        "oversized": ("/v1/checkin", b"{" + b" " * (300 * 1024) + b"}", 413),
        "garbage JSON": ("/v1/checkin", b"{\"format\": ", 400),
        "not JSON": ("/v1/checkin", b"\x00\xffGET / HTTP/1.0", 400),
        "bad base64": ("/v1/checkin", P.canonical_json(dict(good, payload="!!!")), 400),
        "wrong message type": ("/v1/checkin", ack_foreign, 400),
        "ack of another device's order": ("/v1/ack", ack_foreign, 409),
        "ack forged": ("/v1/ack", P.canonical_json(dict(json.loads(ack_foreign), signature=good["signature"])), 401),
    }


def test_attacks_zero_accepted_and_the_server_still_serves(lab, capsys):
    c = lab["client"]
    assert c.post("/v1/checkin", _checkin(lab, "lt-2", sent=now_utc() - dt.timedelta(seconds=50)))[0] == 200
    with _store(lab) as s:
        before = {u: r.payload for u, r in s.latest_checkins().items()}
        audit_rows = len(s.list_audit())
    results = {name: c.post(path, body)[0] for name, (path, body, _want) in _attacks(lab).items()}
    accepted = [n for n, status in results.items() if 200 <= status < 300]
    with capsys.disabled():
        print(f"\nserver attacks: {len(results)} tried, {len(accepted)} accepted")
    assert accepted == []
    assert results == {n: want for n, (_p, _b, want) in _attacks(lab).items()}
    with _store(lab) as s:
        assert {u: r.payload for u, r in s.latest_checkins().items()} == before
        assert len(s.list_audit()) == audit_rows
        assert s.get_order(lab["order"].order.id).state == "queued"
    assert c.request("GET", "/healthz") == (200, {"ok": True})
    assert c.post("/v1/checkin", _checkin(lab, "lt-2"))[0] == 200


def _raw(port, head: bytes, timeout=10):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(head)
    return s


def _read_status(sock) -> int:
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ")[1]) if data.startswith(b"HTTP/1.1 ") else 0


def test_100_mb_body_is_refused_without_reading_it(lab):
    # Declared: refused from the Content-Length alone.
    s = _raw(lab["port"], b"POST /v1/checkin HTTP/1.1\r\nHost: x\r\nContent-Length: 104857600\r\n\r\n" + b"x" * 65536)
    assert _read_status(s) == 413
    s.close()
    # Undeclared (chunked): refused once 256 KiB have arrived; the client cannot push the other ~100 MB.
    s = _raw(lab["port"], b"POST /v1/checkin HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n%s\r\n" % (65536, b"y" * 65536)
    sent = 0
    try:
        for _ in range(1600):  # 100 MiB
            s.sendall(chunk)
            sent += 65536
    except OSError:
        pass  # the server closed the connection: that is the point
    status = _read_status(s) if sent < 100 * 1024 * 1024 else 0
    s.close()
    assert sent < 20 * 1024 * 1024, f"the server read {sent} bytes"
    assert status in (413, 0)  # 413, or the reset reached us before the answer could be read
    assert lab["client"].request("GET", "/healthz")[0] == 200


def test_slowloris_does_not_block_others_and_is_cut_off(lab):
    uuid = lab["keys"]["lt-1"][0]
    slow = [_raw(lab["port"], b"POST /v1/checkin HTTP/1.1\r\nHost: x\r\n") for _ in range(30)]
    slow_body = _raw(lab["port"], b"POST /v1/checkin HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
    try:
        for i in range(3):  # trickle: a byte per connection, well inside uvicorn's keep-alive timer
            for s in slow:
                s.sendall(b"X")
            # Meanwhile ordinary clients are served.
            assert lab["client"].post(f"/orders/{uuid}", _fetch(lab, "lt-1"))[0] == 200
            time.sleep(0.3)
        # The header deadline closes the trickling connections, the body deadline answers 408 and closes.
        closed, give_up = 0, time.monotonic() + DEADLINE + 8
        for s in slow:
            try:
                while time.monotonic() < give_up:
                    s.sendall(b"X")
                    time.sleep(0.2)
            except OSError:
                closed += 1
        assert closed == len(slow)
        slow_body.settimeout(DEADLINE + 8)
        assert _read_status(slow_body) == 408
    finally:
        for s in slow + [slow_body]:
            s.close()
    assert lab["client"].request("GET", "/healthz")[0] == 200


def test_ack_accepted_destroys_secrets_and_refused_ack_closes(lab):
    c = lab["client"]
    uuid, key = lab["keys"]["lt-1"]
    order = lab["order"].payload
    ack = P.sign(P.build_ack(order, "accepted"), key)
    assert c.post("/v1/ack", ack) == (200, {"ok": True})
    assert c.post("/v1/ack", ack) == (200, {"ok": True})  # a retry after a lost answer
    refused_late = P.sign(P.build_ack(order, "refused", reason="replayed"), key)
    assert c.post("/v1/ack", refused_late)[0] == 409
    with _store(lab) as s:
        assert s.get_order(order["order_id"]).state == "acknowledged"
        assert s.get_device("lt-1").state == "wiping"
        assert [x.state for x in s.list_secrets(uuid)] == ["destroyed"]
        actions = [e.action for e in s.list_audit(target="lt-1")]
    assert actions[-3:] == ["order.acknowledged", "device.state", "secret.destroy"]


def test_refusal_reported_in_a_checkin_closes_the_queued_order(lab):
    from deskguard.orders import issue, settings

    uuid, key = lab["keys"]["lt-2"]
    with _store(lab) as s:
        issued = issue.issue(lab["site"], s, settings.load(lab["site"]), "lt-2", action="wipe", reason="x")
    refused = [{"order_id": issued.order.id, "reason": "foreign_volumes", "at": P.format_time(now_utc())}]
    later = now_utc() + dt.timedelta(seconds=5)  # after the check-ins of the tests before
    assert lab["client"].post("/v1/checkin", _checkin(lab, "lt-2", sent=later, refused=refused))[0] == 200
    with _store(lab) as s:
        order = s.get_order(issued.order.id)
        assert order.state == "refused" and order.state_reason == "foreign_volumes"
        assert s.get_device("lt-2").state == "registered"


def test_read_only_store_answers_503_and_stores_nothing(tmp_path):
    """uvicorn in a thread over a read-only connection to the store: every write fails cleanly."""
    import uvicorn

    from deskguard.orders.httpproto import DeadlineH11Protocol
    from deskguard.orders.server import ServeConfig, create_app
    from deskguard.store import Store

    key = P.generate_private_key()
    with Store.open(tmp_path, create=True) as s:
        dev = s.register_device("lt-1", "debian", "127.0.0.1", 22, "dgadmin", None)
        s.set_agent_public_key(dev.uuid, P.public_key_pem(key).decode())
    db = tmp_path / ".deskguard" / "deskguard.db"
    ro = Store(f"sqlite:///file:{db}?mode=ro&uri=true")
    port = sitetools.free_port()
    app = create_app(ServeConfig(tmp_path, tmp_path / "orders", 72, settle=False), store=ro)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, http=DeadlineH11Protocol,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(100):
            if server.started:
                break
            time.sleep(0.05)
        c = Client(port)
        status, body = c.post("/v1/checkin", P.sign(P.build_checkin(dev.uuid, {}, "1.0"), key))
        assert (status, body) == (503, {"error": "store_unavailable"})
        assert c.request("GET", "/healthz")[0] == 200  # reading still works
    finally:
        server.should_exit = True
        thread.join(10)
        ro.close()
    with Store.open(tmp_path) as s:
        assert s.latest_checkins() == {} and s.get_device("lt-1").last_seen_at is None


def test_serve_bad_input(tmp_path, lab):
    def run(*args):
        env = {k: v for k, v in os.environ.items() if k not in ("DESKGUARD_DB_URL", "DESKGUARD_SITE")}
        return clirun.deskguard("serve", *args, timeout=60, env=env)

    proc = run("--site", str(lab["site"]), "--bind", f"127.0.0.1:{lab['port']}")
    assert proc.returncode == 4 and proc.stderr.startswith("deskguard: cannot listen on 127.0.0.1:")
    proc = run("--site", str(lab["site"]), "--bind", "0.0.0.0:8443")
    assert proc.returncode == 2 and "plain HTTP" in proc.stderr and proc.stderr.count("\n") == 1
    proc = run("--site", str(lab["site"]), "--bind", "localhost")
    assert proc.returncode == 2 and "ADDRESS:PORT" in proc.stderr
    proc = run("--site", str(tmp_path), "--bind", f"127.0.0.1:{sitetools.free_port()}")
    assert proc.returncode == 4 and "deskguard init" in proc.stderr


def _self_signed(tmp_path):
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "deskguard test")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    crt, pem = tmp_path / "server.crt", tmp_path / "server.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    return crt, pem


def test_tls_with_two_workers(lab, tmp_path):
    """HTTPS through uvicorn's ssl options, two worker processes: a check-in over a verified TLS connection."""
    import ssl

    crt, pem = _self_signed(tmp_path)
    port = sitetools.free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DESKGUARD_DB_URL", "DESKGUARD_SITE")}
    proc = subprocess.Popen([sys.executable, "-m", "deskguard", "serve", "--site", str(lab["site"]), "--bind",
                             f"0.0.0.0:{port}", "--tls-cert", str(crt), "--tls-key", str(pem), "--workers", "2"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ctx = ssl.create_default_context(cafile=str(crt))
    opened = []
    try:
        for _ in range(150):
            try:
                conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=ctx)
                opened.append(conn)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("the TLS server did not start")
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=ctx)
        opened.append(conn)
        conn.request("POST", "/v1/checkin", body=_checkin(lab, "lt-2", sent=now_utc() + dt.timedelta(seconds=20)))
        resp = conn.getresponse()
        assert (resp.status, json.loads(resp.read())) == (200, {"ok": True})
        with pytest.raises(ssl.SSLError):  # a client that does not trust the certificate is refused
            bare = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=ssl.create_default_context())
            opened.append(bare)
            bare.request("GET", "/healthz")
        with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):  # no plain HTTP on that port
            Client(port).request("GET", "/healthz")
    finally:
        for c in opened:
            c.close()  # an idle TLS connection left open makes a graceful stop wait for asyncio's TLS shutdown
        proc.terminate()
        try:
            err = proc.communicate(timeout=60)[1]
        except subprocess.TimeoutExpired:
            proc.kill()
            err = "did not stop on SIGTERM: " + proc.communicate()[1]
    assert "Traceback" not in err and "did not stop" not in err, err[-3000:]


def test_fetch_nonces_are_kept_for_the_window_and_never_dropped_early():
    from deskguard.orders.nonces import NonceMemory

    clock = [0.0]
    memory = NonceMemory(600, limit=2, clock=lambda: clock[0])
    assert memory.first_use("a") is True and memory.first_use("a") is False
    assert memory.first_use("b") is True and memory.first_use("c") is None   # full: refused, "a" still known
    assert memory.first_use("a") is False
    clock[0] = 601.0                                                           # both aged out
    assert memory.first_use("c") is True and memory.first_use("a") is True
