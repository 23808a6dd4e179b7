# -*- coding: utf-8 -*-
"""The agent's HTTP client (stdlib http.client): a request ends within ``timeout`` seconds whatever the server does.

A slow, silent or garbage-answering server can only make a request fail (HttpFailure); it never makes the
agent act, and it never holds a run past its deadline (the agent gives each request what its run has left).
Every socket read waits at most the time left, and a watchdog shuts the socket down when the time is up:
a server that dribbles a byte at a time satisfies every per-read timeout (a read returns as soon as a byte
arrives) while the status line, the headers or the body take as long as it likes. Redirects are not followed.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
import time
import urllib.parse

USER_AGENT = "deskguard-agent/1"


class HttpFailure(Exception):
    """The request did not produce a usable answer (unreachable, timeout, too big: `oversized`)."""

    def __init__(self, message, oversized=False):
        super().__init__(message)
        self.oversized = oversized


class Response:
    def __init__(self, status, body):
        self.status = status
        self.body = body

    @property
    def ok(self):
        return 200 <= self.status < 300

    def json(self):
        try:
            return json.loads(self.body.decode("utf-8"))
        except ValueError:
            return None


def _context(ca_file):
    ctx = ssl.create_default_context(cafile=ca_file or None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


class _Watchdog:
    """Shuts the connection's socket down at ``end`` (monotonic): a read blocked in the kernel returns at once."""

    def __init__(self, conn, end):
        self.conn = conn
        self.fired = False
        self._timer = threading.Timer(max(0.0, end - time.monotonic()), self._cut)
        self._timer.daemon = True
        self._timer.start()

    def _cut(self):
        self.fired = True
        sock = self.conn.sock
        if sock is not None:
            try:
                # socket.socket's own shutdown, not SSLSocket's: it must not touch the TLS state another thread
                # is reading through.
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:
                pass

    def cancel(self):
        self._timer.cancel()


def _read_bounded(resp, conn, limit, end, watchdog):
    """The body, at most ``limit`` bytes, read in pieces: each waits at most the time left."""
    chunks, size = [], 0
    while True:
        left = end - time.monotonic()
        if left <= 0 or watchdog.fired:
            raise _Late()
        if conn.sock is not None:
            conn.sock.settimeout(left)
        chunk = resp.read1(min(16384, limit + 1 - size))
        if watchdog.fired:      # the socket was cut: what was read is not the whole body
            raise _Late()
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise HttpFailure("answer larger than %d bytes" % limit, oversized=True)


class _Late(Exception):
    pass


def request(method, url, body=None, timeout=15.0, limit=8192, ca_file=None):
    """(Response) for one request, within ``timeout`` seconds in all (connect, TLS, send, status line, headers,
    body). Non-2xx answers are Responses too; only transport failures raise."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise HttpFailure("unsupported URL %r (https:// or http://)" % url)
    if timeout <= 0:
        raise HttpFailure("%s %s: not sent, no time left" % (method, url))
    end = time.monotonic() + timeout
    try:
        port = parts.port
    except ValueError:
        raise HttpFailure("unsupported URL %r (bad port)" % url)
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(parts.hostname, port, timeout=timeout, context=_context(ca_file))
    else:
        conn = http.client.HTTPConnection(parts.hostname, port, timeout=timeout)
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json", "Connection": "close"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    target = (parts.path or "/") + ("?" + parts.query if parts.query else "")
    watchdog = _Watchdog(conn, end)
    try:
        conn.request(method, target, body=body, headers=headers)
        resp = conn.getresponse()
        return Response(resp.status, _read_bounded(resp, conn, limit, end, watchdog))
    except HttpFailure:
        raise
    except Exception as exc:  # refused, reset, TLS, timeout, garbage (BadStatusLine, IncompleteRead, ...)
        if watchdog.fired or isinstance(exc, _Late):
            raise HttpFailure("%s %s: the server is too slow (its deadline, %.1f s, passed)" % (method, url, timeout))
        if isinstance(exc, ssl.SSLCertVerificationError):   # which check failed: expired, unknown issuer, name
            raise HttpFailure("%s %s: the server's TLS certificate is refused: %s" % (method, url, exc.verify_message))
        reason = getattr(exc, "reason", None) or exc
        raise HttpFailure("%s %s: %s" % (method, url, reason if isinstance(exc, (OSError, ssl.SSLError))
                                          else "%s: %s" % (type(exc).__name__, exc)))
    finally:
        watchdog.cancel()
        conn.close()


def get(url, **kw):
    return request("GET", url, **kw)


def post_json(url, data, **kw):
    return request("POST", url, body=data if isinstance(data, bytes) else json.dumps(data).encode(), **kw)
