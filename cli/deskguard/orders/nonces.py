"""The order-fetch nonces a server process has accepted, kept for as long as their fetch could be replayed.

A signed fetch (docs/agent-protocol.md) is valid while its sent_at is within CLOCK_SKEW_SECONDS of the
server's clock, so a nonce is remembered for twice that from its arrival: a copy sent later is refused as
replayed, and one sent after that is refused as stale anyway. Only verified fetches are remembered (a forger
cannot fill this), and the memory is never trimmed early (that would let a replay through): when it is full,
new fetches are refused until old nonces age out. Per process: with `deskguard serve --workers N`, a copy
sent to another worker within the window is not recognised (docs/wipe.md, "Limits").
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

MAX_NONCES = 500_000      # ~230 B each (measured): 115 MB at most; 100,000 laptops every 15 min hold ~67,000


class NonceMemory:
    def __init__(self, window: float, limit: int = MAX_NONCES, clock=time.monotonic):
        self.window, self.limit, self._clock = window, limit, clock
        self._seen: OrderedDict[str, float] = OrderedDict()   # nonce -> when it may be forgotten, oldest first
        self._lock = threading.Lock()

    def first_use(self, nonce: str) -> bool | None:
        """True the first time ``nonce`` is shown, False for a replay, None when the memory is full."""
        now = self._clock()
        with self._lock:
            while self._seen and next(iter(self._seen.values())) <= now:
                self._seen.popitem(last=False)
            if nonce in self._seen:
                return False
            if len(self._seen) >= self.limit:
                return None
            self._seen[nonce] = now + self.window
            return True
