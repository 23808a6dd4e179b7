"""uvicorn's HTTP/1.1 protocols with a deadline for receiving a request's headers (slowloris) and a bound on
the head's size and header count.

uvicorn (0.54, h11 and httptools alike) has no such timer: its keep-alive timer runs only between requests and is cancelled by any
received byte, and a connection that sends nothing at all is never timed out (Kludex/uvicorn#1192). A client
trickling a header byte every few seconds therefore holds a connection, and enough of them exhaust the file
descriptors or ``limit_concurrency``. Other clients are not blocked meanwhile (asyncio), but connections are a
finite resource. This subclass closes a connection whose request headers are not complete within
``HEADER_DEADLINE`` seconds of it opening (or of the previous response). The body has its own deadline in the
application (deskguard.orders.bodies.read_body), which sees the body as it arrives.

Nor does uvicorn's httptools protocol bound a request head: httptools keeps a header line's bytes until the
line ends, so four clients each sending one 65 MiB header line within the deadline took the server from 71 to
407 MiB (issue 20). HeadLimit counts the bytes it hands the parser while a head is incomplete and never hands it
more than MAX_HEAD_BYTES: a longer head, or more than MAX_HEADERS header lines, is answered 431 and the
connection closed. (h11, the fallback, refuses a head over 16 KiB itself, with 400.) Every refusal here is
logged through deskguard.orders.refusals, rate-limited.
"""

from __future__ import annotations

import os

from uvicorn.protocols.http.h11_impl import H11Protocol

from .refusals import REFUSALS

try:  # the C parser: about a third less CPU per request than h11 (tests/bench/checkin.py)
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools not installed
    HttpToolsProtocol = None

# Seconds; the environment variable lets tests use a short deadline without waiting.
HEADER_DEADLINE = float(os.environ.get("DESKGUARD_SERVE_HEADER_DEADLINE", "10"))
# An agent's request head is under 1 KiB; a TLS proxy in front adds a few headers. nginx and Node allow 8-16 KiB.
MAX_HEAD_BYTES = 16 * 1024
MAX_HEADERS = 64


class RequestDeadline:
    """Mixed in before a uvicorn HTTP protocol class: both set ``self.cycle`` once a request head is parsed."""

    header_deadline = HEADER_DEADLINE

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline = None
        self._timed_cycle = None
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # A new request/response cycle exists once h11 has parsed a complete request head.
        if self.cycle is not None and self.cycle is not self._timed_cycle:
            self._timed_cycle = self.cycle
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport.is_closing():
            return
        if self.cycle is not None and self.cycle is not self._timed_cycle:
            self._timed_cycle = self.cycle  # a pipelined request, already complete, started at once
            return
        self._arm()  # the next request on this keep-alive connection gets the same deadline

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.header_deadline, self._expire)

    def _disarm(self) -> None:
        if getattr(self, "_deadline", None) is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            REFUSALS.refused("request head", None, "head_timeout", getattr(self, "client", None))
            # abort, not close: under TLS, close waits (up to 30 s) for the peer's close_notify, and a slow
            # client would keep the connection that long.
            self.transport.abort()


class LoggedBadRequest:
    """Mixed in before a uvicorn HTTP protocol class: its 400 for a request it cannot parse (h11: also a head
    over 16 KiB) goes to the refusal log (uvicorn's own line for it is dropped, deskguard.orders.serving)."""

    def send_400_response(self, msg: str) -> None:
        REFUSALS.refused("request head", 400, "bad_request", self.client)
        super().send_400_response(msg)


class HeadTooLarge(Exception):
    """Raised from a parser callback to stop httptools at once; uvicorn then calls send_400_response."""


class HeadLimit:
    """Mixed in before uvicorn's HttpToolsProtocol: the parser never holds more than ``max_head_bytes`` of an
    incomplete head, nor more than ``max_headers`` header lines. A chunk that completes a head may carry a body
    or a pipelined request behind it: that rest is parsed as it comes (a chunk is at most 256 KiB) and the next
    chunk is counted again."""

    max_head_bytes = MAX_HEAD_BYTES
    max_headers = MAX_HEADERS

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self._in_head, self._head_bytes, self._head_lines, self._head_refusal = True, 0, 0, None
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return  # refused: nothing more is parsed
        if self._in_head:
            room = self.max_head_bytes - self._head_bytes
            if len(data) > room:
                super().data_received(data[:room])
                if self.transport.is_closing():
                    return
                if self._in_head:
                    return self._refuse_head("head_too_large")
                data = data[room:]
            else:
                self._head_bytes += len(data)
        super().data_received(data)

    def on_message_begin(self) -> None:
        self._in_head, self._head_lines = True, 0
        super().on_message_begin()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_lines += 1
        if self._head_lines > self.max_headers:
            self._head_refusal = "too_many_headers"
            raise HeadTooLarge()
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head, self._head_bytes = False, 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True  # whatever follows is the next request's head

    def send_400_response(self, msg: str) -> None:
        if self._head_refusal:
            return self._refuse_head(self._head_refusal)
        super().send_400_response(msg)

    def _refuse_head(self, reason: str) -> None:
        body = b'{"error":"%s"}' % reason.encode()
        self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
                             b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body))
        self.transport.close()
        REFUSALS.refused("request head", 431, reason, self.client)


class DeadlineH11Protocol(RequestDeadline, LoggedBadRequest, H11Protocol):
    pass


if HttpToolsProtocol is not None:
    class DeadlineHttpToolsProtocol(RequestDeadline, HeadLimit, LoggedBadRequest, HttpToolsProtocol):
        pass
else:
    DeadlineHttpToolsProtocol = None


def protocol_class():
    """httptools' protocol if it is installed, else h11's; both with the header deadline and a bounded head."""
    return DeadlineHttpToolsProtocol or DeadlineH11Protocol
