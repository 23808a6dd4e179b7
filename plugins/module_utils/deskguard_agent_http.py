# -*- coding: utf-8 -*-
"""The agent's HTTP client: stdlib urllib with a timeout on every request and a bounded body read.

A slow, silent or garbage-answering server can only make a request fail (HttpFailure); it never makes the
agent act. The whole request (connect, send, every read) shares one deadline, so a server dribbling one byte
per second (slowloris in reverse) is cut off too.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
import urllib.error
import urllib.request

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


def _read_bounded(resp, limit, deadline):
    chunks, size = [], 0
    while True:
        if time.monotonic() > deadline:
            raise HttpFailure("the server is too slow (deadline passed while reading)")
        chunk = resp.read(min(16384, limit + 1 - size))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise HttpFailure("answer larger than %d bytes" % limit, oversized=True)


def request(method, url, body=None, timeout=15.0, limit=8192, ca_file=None):
    """(Response) for one request. Non-2xx answers are Responses too; only transport failures raise."""
    if not url.startswith(("https://", "http://")):
        raise HttpFailure("unsupported URL %r (https:// or http://)" % url)
    deadline = time.monotonic() + timeout
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    kwargs = {"timeout": timeout}
    if url.startswith("https://"):
        kwargs["context"] = _context(ca_file)
    try:
        try:
            resp = urllib.request.urlopen(req, **kwargs)
        except urllib.error.HTTPError as err:   # 4xx/5xx still carry an answer worth reading
            resp = err
        with resp:
            status = resp.getcode() if hasattr(resp, "getcode") else resp.code
            return Response(status, _read_bounded(resp, limit, deadline))
    except HttpFailure:
        raise
    except (urllib.error.URLError, socket.timeout, ConnectionError, ssl.SSLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise HttpFailure("%s %s: %s" % (method, url, reason))
    except Exception as exc:  # http.client.IncompleteRead, BadStatusLine, ...: garbage is a failure
        raise HttpFailure("%s %s: %s: %s" % (method, url, type(exc).__name__, exc))


def get(url, **kw):
    return request("GET", url, **kw)


def post_json(url, data, **kw):
    return request("POST", url, body=data if isinstance(data, bytes) else json.dumps(data).encode(), **kw)
