"""A loopback HTTP(S) server that answers each request with what a test chooses, and can dribble its answer
one byte at a time: the deadline tests of both agents (Linux: tests/unit/test_agent_deadline.py; the Windows
agent's C# transport on Mono: tests/windows/monohttp.py) run against it."""

from __future__ import annotations

import socket
import ssl
import threading
import time


class Server:
    """A loopback HTTP(S) server. `answer(request_line) -> (head_bytes, body_bytes, dribble)`: with dribble
    set, the head (when "head") or the body (when "body") goes out one byte every 0.2 s. `finished` is set
    just before a dribble's last byte, so a client that returned before it did not wait for the dribble."""

    DRIBBLE = 0.2

    def __init__(self, answer, tls: ssl.SSLContext | None = None):
        self.answer, self.tls = answer, tls
        self.finished = threading.Event()
        self.requests: list[bytes] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, path: str = "/", host: str = "127.0.0.1") -> str:
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}{path}"

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            if self.tls:
                conn = self.tls.wrap_socket(conn, server_side=True)
            conn.settimeout(10)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            self.requests.append(data.split(b"\r\n", 1)[0])
            head, body, dribble = self.answer(self.requests[-1])
            slow = head if dribble == "head" else body if dribble == "body" else b""
            conn.sendall(head if dribble != "head" else b"")
            for i, byte in enumerate(slow):
                time.sleep(self.DRIBBLE)
                if i == len(slow) - 1:
                    self.finished.set()
                conn.sendall(bytes([byte]))
            if dribble != "body":
                conn.sendall(body)
        except (OSError, ssl.SSLError):
            return              # the client hung up (a deadline) or refused our certificate
        finally:
            conn.close()

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def plain(status: int = 200, body: bytes = b'{"ok":true}', dribble: str | None = None, length: int | None = None):
    """An answer function: `status` with `body` (Content-Length `length`, default the body's)."""
    head = b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % (
        status, len(body) if length is None else length)
    return lambda line: (head, body, dribble)
