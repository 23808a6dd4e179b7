"""`deskguard serve` under attack (issue 20): request heads are bounded (431, memory flat under clients sending
huge header lines), and every refusal reaches the server's log at the default level, rate-limited, with the
reason, the device claimed and the peer, never the body. A real `serve` process on a loopback port."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
import sitetools

from deskguard.site import module_utils

pytestmark = pytest.mark.unit
P = module_utils("deskguard_protocol")
PASS = "correct horse battery staple"
SECRET_MARK = "body-marker-7f3c9a"  # in every refused body: must never reach the log


@pytest.fixture
def server(tmp_path):
    """A site with one laptop (lt-1) and `deskguard serve` with default options; its log goes to a file."""
    from deskguard.recovery import keys
    from deskguard.store import Store

    site = tmp_path / "site"
    site.mkdir()
    keys.init_keys(site, PASS)
    with Store.open(site, create=True) as store:
        dev = store.register_device("lt-1", "debian", "127.0.0.1", 22, "dgadmin", None)
        key = P.generate_private_key()
        store.set_agent_public_key(dev.uuid, P.public_key_pem(key).decode())
    port = sitetools.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESKGUARD_")}
    log_path = tmp_path / "serve.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "deskguard", "serve", "--site", str(site), "--bind",
                                 f"127.0.0.1:{port}"], env=env, stdout=log, stderr=subprocess.STDOUT)
    srv = {"port": port, "pid": proc.pid, "log": log_path, "uuid": dev.uuid, "key": key, "proc": proc}
    try:
        for _ in range(150):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("deskguard serve did not start: " + log_path.read_text()[-2000:])
        yield srv
    finally:
        _stop(srv)


def _stop(srv) -> str:
    proc = srv["proc"]
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return srv["log"].read_text()


def _peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))


def _status(sock) -> int:
    data = b""
    try:
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except OSError:
        return 0  # reset before the answer could be read
    return int(data.split(b" ")[1]) if data.startswith(b"HTTP/1.1 ") else 0


def _request(port, head: bytes) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(head)
        return _status(s)


def _huge_header(port, mib: int, out: list) -> None:
    """One header line of `mib` MiB, sent until the server stops taking it."""
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    chunk = b"a" * (1 << 20)
    sent = 0
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
        for _ in range(mib):
            s.sendall(chunk)
            sent += len(chunk)
        s.sendall(b"\r\n\r\n")
    except OSError:
        pass  # the server closed the connection: that is the point
    out.append((sent, _status(s)))
    s.close()


def test_huge_header_lines_are_refused_and_the_servers_memory_stays_flat(server):
    port = server["port"]
    before = _peak_rss_kib(server["pid"])
    results: list = []
    clients = [threading.Thread(target=_huge_header, args=(port, 32, results)) for _ in range(4)]
    for t in clients:
        t.start()
    for t in clients:
        t.join(60)
    grown_mib = (_peak_rss_kib(server["pid"]) - before) / 1024
    assert len(results) == 4
    assert grown_mib < 16, f"the server's peak memory grew by {grown_mib:.0f} MiB under 4 clients"
    assert all(status in (431, 0) for _sent, status in results), results
    assert all(sent < 32 << 20 for sent, _status in results), results
    # A head just over the limit, then silence: answered 431 (not a reset), and the server still serves.
    assert _request(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n") == 431
    assert urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).status == 200


def test_too_many_headers_are_refused_and_an_ordinary_head_is_served(server):
    port = server["port"]
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(200))
    assert _request(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n") == 431
    ordinary = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(40))   # 40 headers, ~4.5 KiB
    assert _request(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + ordinary + b"Connection: close\r\n\r\n") == 200


def _forged_checkin(srv) -> bytes:
    good = json.loads(P.sign(P.build_checkin(srv["uuid"], {"disk": {"encrypted": True}}, "1.0"), srv["key"]))
    payload = json.loads(base64.b64decode(good["payload"]))
    payload["posture"] = {"note": SECRET_MARK}
    return P.canonical_json(dict(good, payload=base64.b64encode(P.canonical_json(payload)).decode()))


def _post(port, path, body: bytes) -> int:
    head = b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % (
        path.encode(), len(body))
    return _request(port, head + body)


def test_every_refusal_is_logged_at_the_default_level_without_the_body(server):
    port = server["port"]
    assert _post(port, "/v1/checkin", _forged_checkin(server)) == 401
    assert _post(port, "/v1/checkin", b'{"garbage": "' + SECRET_MARK.encode() + b'"') == 400
    assert _post(port, "/v1/ack", b"{" + SECRET_MARK.encode() * 20_000 + b"}") == 413
    assert _request(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n") == 431
    # The order routes' refusals too: a plain GET (who asks whether a wipe is pending) and a forged fetch.
    assert _request(port, f"GET /orders/{server['uuid']} HTTP/1.1\r\nHost: x\r\n\r\n".encode()) == 401
    assert _post(port, f"/orders/{server['uuid']}", b'{"garbage": "' + SECRET_MARK.encode() + b'"}') in (400, 401)
    log = _stop(server)
    lines = [line for line in log.splitlines() if "refused" in line]
    assert SECRET_MARK not in log
    forged = next(line for line in lines if "bad_signature" in line)
    assert "/v1/checkin" in forged and f"device {server['uuid']}" in forged and "peer 127.0.0.1" in forged
    assert any("malformed" in line and "device -" in line for line in lines), lines
    assert any("oversized" in line and "/v1/ack" in line for line in lines), lines
    assert any("head_too_large" in line and "peer 127.0.0.1" in line for line in lines), lines
    fetches = [line for line in lines if "/orders" in line]
    assert any("GET /orders: 401 signed_fetch_required" in line and f"device {server['uuid']}" in line
               for line in fetches), lines
    assert any("POST /orders: 4" in line and "peer 127.0.0.1" in line for line in fetches), lines


def test_a_flood_of_refusals_gives_a_bounded_log_and_a_suppression_count(server):
    from deskguard.orders import refusals

    port = server["port"]
    started = time.monotonic()
    for _ in range(200):
        assert _post(port, "/v1/checkin", b"not json") == 400
    log = _stop(server)
    # The bucket: BURST lines at once, then RATE a second (a slow machine earns a few more, never 200).
    allowed = refusals.BURST + int((time.monotonic() - started) * refusals.RATE) + 1
    lines = [line for line in log.splitlines() if "malformed" in line]
    lines_refused = [line for line in lines if "(device" in line]
    counted = sum(int(line.split(" similar refusals")[0].rsplit(" ", 1)[1]) for line in lines
                  if "similar refusals" in line)
    assert 1 <= len(lines_refused) <= min(allowed, 100), (len(lines_refused), allowed)
    assert counted == 200 - len(lines_refused), lines[-3:]


def test_the_refusal_log_bucket_counts_what_it_holds_back():
    import logging

    from deskguard.orders.refusals import RefusalLog

    class Lines(logging.Handler):
        def __init__(self):
            super().__init__()
            self.got = []

        def emit(self, record):
            self.got.append(record.getMessage())

    handler, now = Lines(), [0.0]
    logger = logging.getLogger("test.refusals")
    logger.addHandler(handler)
    rlog = RefusalLog(logger, burst=2, rate=0.5, clock=lambda: now[0])
    for _ in range(5):
        rlog.refused("POST /v1/ack", 401, "bad_signature", ("10.0.0.9", 4242), device="not-a-uuid\nforged line")
    now[0] = 2.0   # one token earned
    rlog.refused("POST /v1/ack", 401, "bad_signature", ("10.0.0.9", 4242), device=lambda: "0b8f3d1e-2c4a-4e6b-8d0f-1a2b3c4d5e6f")
    rlog.refused("POST /v1/ack", 400, "<script>", ("::1", 1), device=None)
    rlog.flush()
    assert handler.got == [
        "refused POST /v1/ack: 401 bad_signature (device -, peer 10.0.0.9:4242)",
        "refused POST /v1/ack: 401 bad_signature (device -, peer 10.0.0.9:4242)",
        "refused POST /v1/ack: 401 bad_signature (device 0b8f3d1e-2c4a-4e6b-8d0f-1a2b3c4d5e6f, peer 10.0.0.9:4242); "
        "3 similar refusals suppressed before this one",
        "refused POST /v1/ack: 400 refused (device -, peer [::1]:1)",
    ]
    logger.removeHandler(handler)
