"""The session-wide cap on status requests, and how it backs off after a 429.

A sliding log guarantees at most ``rate`` sends in any window of ``1 + margin`` seconds
(the margin absorbs network jitter and server stalls, so the server never counts more
than ``rate`` in any 1 s window), and a small token bucket spreads those sends out.

A 429 cuts the rate to ``CUT`` of what it was, once per congestion episode: the episode
lasts until a request sent after the cut succeeds, and every 429 meanwhile (answers to
requests already on their way, a storm that goes on) cuts nothing more. The rate then
climbs back by ``RECOVERY`` of the configured rate per second, so a short storm costs
seconds, not minutes.
"""

from __future__ import annotations

import math
from collections import deque

__all__ = ["RateLimiter"]

CUT = 0.7
RECOVERY = 0.1
"""Fraction of the configured rate regained per second after a cut."""
FLOOR = 0.1
"""The rate never drops below one request per 10 s."""


class RateLimiter:
    """Decides when the next request may go; pure bookkeeping, the caller owns the clock."""

    __slots__ = (
        "_congested",
        "_cut_at",
        "_cut_rate",
        "_log",
        "_stamp",
        "_tokens",
        "margin",
        "max_rate",
    )

    def __init__(self, rate: float, margin: float = 0.1) -> None:
        self.max_rate = rate
        self.margin = margin
        self._log: deque[float] = deque()
        self._tokens = 1.0
        self._stamp: float | None = None
        self._cut_at = -math.inf
        self._cut_rate = rate
        self._congested = False

    def rate(self, now: float) -> float:
        """The rate allowed at ``now``: the configured one, or climbing back after a cut."""
        regained = self.max_rate * RECOVERY * max(0.0, now - self._cut_at)
        return min(self.max_rate, self._cut_rate + regained)

    def reserve(self, now: float) -> float:
        """Take a send slot at ``now`` (returns 0.0) or return the seconds until one frees."""
        rate = self.rate(now)
        window = 1.0 + self.margin
        log = self._log
        while log and log[0] <= now - window:
            log.popleft()
        limit = max(1, math.floor(rate))
        if len(log) >= limit:
            # never 0.0, which means "sent": float rounding can make the difference vanish
            return max(1e-6, log[len(log) - limit] + window - now)
        burst = max(1.0, rate * 0.1)
        if self._stamp is not None:
            self._tokens = min(burst, self._tokens + (now - self._stamp) * rate)
        self._stamp = now
        if self._tokens < 1.0:
            return max(1e-6, (1.0 - self._tokens) / rate)
        self._tokens -= 1.0
        log.append(now)
        return 0.0

    def congested(self, now: float) -> bool:
        """A 429 came back: cut the rate, unless this congestion episode already did.
        True if it cut."""
        if self._congested:
            return False
        self._congested = True
        self._cut_rate = max(FLOOR, self.rate(now) * CUT)
        self._cut_at = now
        self._tokens = min(self._tokens, 1.0)
        return True

    def relieved(self, sent: float) -> None:
        """A request sent at ``sent`` succeeded: if it left after the cut, the episode
        is over (the next 429 cuts again)."""
        if sent > self._cut_at:
            self._congested = False
