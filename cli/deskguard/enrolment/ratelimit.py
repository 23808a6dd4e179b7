"""Token buckets for the enrolment route: one for the server process, one per client address.

Enrolment is the one route a stranger can reach with nothing but a guessed token: each attempt costs a
signature check and a write transaction. The buckets bound that cost (docs/enrolment.md, "Rate limit"); a
refused attempt is answered 429 with Retry-After before its body is read.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

MAX_CLIENTS = 10_000   # addresses remembered; the oldest is forgotten first (it then starts with a full bucket)


class Bucket:
    __slots__ = ("tokens", "at")

    def __init__(self, tokens: float, at: float):
        self.tokens, self.at = tokens, at


class RateLimit:
    """``per_minute`` enrolments a minute for the process (a burst of as many), and a tenth of that (at least 1)
    for each client address."""

    def __init__(self, per_minute: int, clock=time.monotonic):
        self.rate = per_minute / 60.0
        self.burst = float(per_minute)
        self.client_burst = max(1.0, per_minute / 10.0)
        self.client_rate = self.client_burst / 60.0
        self.clock = clock
        self._all = Bucket(self.burst, clock())
        self._clients: OrderedDict[str, Bucket] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, client: str | None) -> float | None:
        """None if this attempt may go on (one token spent from each bucket), else the seconds to wait."""
        now = self.clock()
        with self._lock:
            mine = self._clients.get(client or "?")
            if mine is None:
                mine = self._clients[client or "?"] = Bucket(self.client_burst, now)
                if len(self._clients) > MAX_CLIENTS:
                    self._clients.popitem(last=False)
            else:
                self._clients.move_to_end(client or "?")
            _refill(self._all, now, self.rate, self.burst)
            _refill(mine, now, self.client_rate, self.client_burst)
            if mine.tokens < 1:
                return (1 - mine.tokens) / self.client_rate
            if self._all.tokens < 1:
                return (1 - self._all.tokens) / self.rate
            mine.tokens -= 1
            self._all.tokens -= 1
            return None


def _refill(bucket: Bucket, now: float, rate: float, burst: float) -> None:
    bucket.tokens = min(burst, bucket.tokens + (now - bucket.at) * rate)
    bucket.at = now
