"""uvicorn's HTTP/1.1 protocols with a deadline for receiving a request's headers (slowloris).

uvicorn (0.54, h11 and httptools alike) has no such timer: its keep-alive timer runs only between requests and is cancelled by any
received byte, and a connection that sends nothing at all is never timed out (Kludex/uvicorn#1192). A client
trickling a header byte every few seconds therefore holds a connection, and enough of them exhaust the file
descriptors or ``limit_concurrency``. Other clients are not blocked meanwhile (asyncio), but connections are a
finite resource. This subclass closes a connection whose request headers are not complete within
``HEADER_DEADLINE`` seconds of it opening (or of the previous response). The body has its own deadline in the
application (deskguard.orders.server.read_body), which sees the body as it arrives.
"""

from __future__ import annotations

import os

from uvicorn.protocols.http.h11_impl import H11Protocol

try:  # the C parser: about a third less CPU per request than h11 (tests/bench/checkin.py)
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools not installed
    HttpToolsProtocol = None

# Seconds; the environment variable lets tests use a short deadline without waiting.
HEADER_DEADLINE = float(os.environ.get("DESKGUARD_SERVE_HEADER_DEADLINE", "10"))


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
            self.logger.info("closing a connection that sent no complete request in %.0f s", self.header_deadline)
            # abort, not close: under TLS, close waits (up to 30 s) for the peer's close_notify, and a slow
            # client would keep the connection that long.
            self.transport.abort()


class DeadlineH11Protocol(RequestDeadline, H11Protocol):
    pass


if HttpToolsProtocol is not None:
    class DeadlineHttpToolsProtocol(RequestDeadline, HttpToolsProtocol):
        pass
else:
    DeadlineHttpToolsProtocol = None


def protocol_class():
    """httptools' protocol if it is installed, else h11's; both with the header deadline."""
    return DeadlineHttpToolsProtocol or DeadlineH11Protocol
