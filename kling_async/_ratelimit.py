"""The session-wide cap on status requests.

A sliding log guarantees at most ``rate`` sends in any window of ``1 + margin`` seconds
(the margin absorbs network jitter and server stalls, so the server never counts more than
``rate`` in any 1 s window), and a small token bucket spreads those sends out.
After a 429 the rate drops to 70 % and climbs back by a few percent per success.
"""

from __future__ import annotations

import math
from collections import deque

__all__ = ["RateLimiter"]


class RateLimiter:
    """Decides when the next request may go; pure bookkeeping, the caller owns the clock."""

    __slots__ = ("_log", "_stamp", "_tokens", "margin", "max_rate", "rate")

    def __init__(self, rate: float, margin: float = 0.1) -> None:
        self.max_rate = rate
        self.rate = rate
        self.margin = margin
        self._log: deque[float] = deque()
        self._tokens = 1.0
        self._stamp: float | None = None

    @property
    def _burst(self) -> float:
        return max(1.0, self.rate * 0.1)

    def reserve(self, now: float) -> float:
        """Take a send slot at ``now`` (returns 0.0) or return the seconds until one frees."""
        window = 1.0 + self.margin
        log = self._log
        while log and log[0] <= now - window:
            log.popleft()
        limit = max(1, math.floor(self.rate))
        if len(log) >= limit:
            # never 0.0, which means "sent": float rounding can make the difference vanish
            return max(1e-6, log[len(log) - limit] + window - now)
        if self._stamp is not None:
            self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens < 1.0:
            return max(1e-6, (1.0 - self._tokens) / self.rate)
        self._tokens -= 1.0
        log.append(now)
        return 0.0

    def slow_down(self) -> None:
        """A 429 arrived: cut the rate to 70 % (never below one request per 10 s)."""
        self.rate = max(0.1, self.rate * 0.7)
        self._tokens = min(self._tokens, self._burst)

    def speed_up(self) -> None:
        """A request succeeded: climb back towards the configured rate."""
        if self.rate < self.max_rate:
            self.rate = min(self.max_rate, self.rate * 1.02)
