"""The server's log of refused requests: one WARNING line per refusal, rate-limited per reason.

A line names what was refused (the route, or the request head), the status and reason code, the device the
request claimed (a UUID, unverified, or "-") and the peer address. Never the body, never a detail text: both
come from the client. An attacker who makes refusals by the thousand must not fill the disk, so each reason has
a token bucket (BURST lines at once, then one every 1/RATE seconds); what it holds back is counted and said in
the next line of that reason ("N similar refusals suppressed") and once more when the server stops.
"""

from __future__ import annotations

import logging
import re
import threading
import time

log = logging.getLogger("deskguard.serve")

BURST = 20          # refusal lines of one reason at once
RATE = 1 / 6.0      # then one line per 6 s per reason (10 a minute)
MAX_REASONS = 64    # buckets kept; reasons are the server's own codes, so this is never reached in practice
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")


class RefusalLog:
    def __init__(self, logger: logging.Logger = log, burst: int = BURST, rate: float = RATE, clock=time.monotonic):
        self.logger, self.burst, self.rate, self.clock = logger, burst, rate, clock
        self._buckets: dict[str, list[float]] = {}   # reason -> [tokens, last refill time]
        self._held: dict[str, int] = {}              # reason -> lines suppressed since its last line
        self._lock = threading.Lock()

    def refused(self, what: str, status: int | None, reason: str, peer, device=None) -> None:
        """Log one refusal unless its reason's bucket is empty. ``status`` None: the connection was closed
        without an answer. ``device`` is a string or a callable giving it (called only when the line is
        written: finding the claimed device parses the body)."""
        reason = _code(reason)
        with self._lock:
            if not self._take(reason):
                self._held[reason] = self._held.get(reason, 0) + 1
                return
            held = self._held.pop(reason, 0)
        claimed = device() if callable(device) else device
        line = "refused %s: %s %s (device %s, peer %s)" % (what, status or "closed", reason, _device(claimed),
                                                            _peer(peer))
        if held:
            line += "; %d similar refusals suppressed before this one" % held
        self.logger.warning(line)

    def flush(self) -> None:
        """Say how many lines each reason held back (at shutdown)."""
        with self._lock:
            held, self._held = self._held, {}
        for reason, count in sorted(held.items()):
            self.logger.warning("refused: %d similar refusals suppressed (%s)", count, reason)

    def _take(self, reason: str) -> bool:
        now = self.clock()
        bucket = self._buckets.get(reason)
        if bucket is None:
            if len(self._buckets) >= MAX_REASONS:
                reason = "other"
                bucket = self._buckets.setdefault(reason, [float(self.burst), now])
            else:
                bucket = self._buckets[reason] = [float(self.burst), now]
        bucket[0] = min(float(self.burst), bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if bucket[0] < 1:
            return False
        bucket[0] -= 1
        return True


def _code(reason) -> str:
    text = str(reason or "refused")
    return text if re.fullmatch(r"[a-z0-9_]{1,40}", text) else "refused"


def _device(claimed) -> str:
    return claimed if isinstance(claimed, str) and _UUID.match(claimed) else "-"


def _peer(peer) -> str:
    if not peer:
        return "?"
    host = str(peer[0])
    return f"[{host}]:{peer[1]}" if ":" in host else f"{host}:{peer[1]}"


class DropUvicornRefusals(logging.Filter):
    """uvicorn logs every unparsable request ("Invalid HTTP request received.") with no rate limit: the
    protocol (deskguard.orders.httpproto) logs those through REFUSALS instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "Invalid HTTP request received."


REFUSALS = RefusalLog()   # one per server process: the app and the protocol objects share it
