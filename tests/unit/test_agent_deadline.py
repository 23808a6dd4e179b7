"""An agent run ends within its deadline whatever the server does (issue 20, item 1): a loopback server that
dribbles one byte every 0.2 s (the status line and headers, or a body announced at full length) cannot hold a
run, and the dead-man switch is decided before any network I/O. No wall-clock assertion: the run must return
before the server has finished dribbling (an Event the server sets), which a reader without a deadline cannot."""

from __future__ import annotations

import shutil
import socket
import threading
import time

import pytest

import agentlab as lab

pytestmark = pytest.mark.unit
DRIBBLE = 0.2       # seconds per byte
BODY = 120          # bytes dribbled: 24 s, far beyond the agent's 1 s timeout and 3 s run budget


class Dribbler:
    """Answers each request on loopback; the one whose request line starts with `slow` (e.g.
    b"POST /orders/", b"POST /v1/checkin") is answered a byte at a time, the status line and headers too when `head` is set.
    `finished` is set just before a dribble sends its last byte; `requests` lists the request lines in order."""

    def __init__(self, slow: bytes, head: bool):
        self.slow, self.head = slow, head
        self.finished = threading.Event()
        self.requests: list[bytes] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = "http://127.0.0.1:%d" % self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn):
        with conn:
            conn.settimeout(5)
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
            except OSError:
                return
            line = data.split(b"\r\n", 1)[0]
            self.requests.append(line)
            if not line.startswith(self.slow):
                status = b"404 Not Found" if b" /orders/" in line else b"200 OK"
                conn.sendall(b"HTTP/1.1 " + status + b"\r\nContent-Length: 11\r\nConnection: close\r\n\r\n"
                             + b'{"ok":true}')
                return
            head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % BODY
            if self.head:       # a head alone as long as the body: the dribble ends before any body is read
                head = head[:-2] + b"X-Pad: " + b"a" * BODY + b"\r\n\r\n"
            else:
                conn.sendall(head)
            data = head if self.head else b"{" * BODY
            try:
                for i, byte in enumerate(data):
                    time.sleep(DRIBBLE)
                    if i == len(data) - 1:
                        self.finished.set()     # before the last byte: a reader can only be done after it
                    conn.sendall(bytes([byte]))
                if self.head:
                    conn.sendall(b"{" * BODY)
            except OSError:
                return          # the agent hung up: what a deadline does

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)    # wakes the accepting thread; close alone leaves it listening
        except OSError:
            pass
        self.sock.close()


@pytest.fixture
def bench(tmp_path):
    lab.write_device_key(tmp_path / "device.key")
    made = []

    def make(slow, head, **cfg):
        srv = Dribbler(slow, head)
        made.append(srv)
        conf = lab.config(tmp_path, srv.url, lab.proto.generate_private_key(), tmp_path / "device.key",
                          timeout_seconds=1, **cfg)
        return srv, conf

    yield make
    for srv in made:
        srv.close()


@pytest.mark.parametrize("slow,head", [(b"POST /orders/", False), (b"POST /orders/", True), (b"POST /v1/checkin", False),
                                       (b"POST /v1/checkin", True)],
                         ids=["order-body", "order-head", "checkin-body", "checkin-head"])
def test_a_dribbling_server_cannot_hold_a_run(bench, slow, head):
    srv, cfg = bench(slow, head)
    out = lab.make_agent(cfg, {}, lab.Actions()).run()
    assert not srv.finished.is_set(), "the run waited for the whole dribble"
    if b"/orders/" in slow:
        assert out["order"]["status"] == "unreachable" and "deadline" in out["order"]["detail"], out
    else:
        assert out["order"] == {"status": "none"} and out["checkin"]["ok"] is False, out
        assert "deadline" in out["checkin"]["detail"], out
    assert out["deadman"] is None       # evaluated (not due: the switch is off in this configuration)


@pytest.mark.skipif(shutil.which("cryptsetup") is None, reason="cryptsetup not installed")
def test_the_deadman_lock_is_decided_before_any_network_io(bench, tmp_path):
    """A laptop held offline by a thief's dribbling server locks at once: the lock happens before the agent
    has sent a single request."""
    uuid, disk = lab.make_disk(tmp_path / "disk.img")
    srv, cfg = bench(b"POST /orders/", True)
    cfg.update(deadman_days=1, escrowed_keyslots={uuid: [lab.fingerprint(disk, 2)]})
    actions = lab.Actions()
    requests_at_lock = []
    real_lock = actions.lock

    def lock(plan):
        requests_at_lock.append(len(srv.requests))
        return real_lock(plan)

    actions.lock = lock
    start = time.time()
    first = lab.make_agent(cfg, {uuid: disk}, actions, now=start)
    first.state.checked_in(start)
    first.state.save()
    out = lab.make_agent(cfg, {uuid: disk}, actions, now=start + 2 * 86400).run()
    assert out["deadman"]["acted"] is True and lab.slots(disk) == [2] and actions.powered == ["reboot"], out
    assert requests_at_lock == [0], "the agent talked to the server before the dead-man lock"
    assert not srv.finished.is_set()
