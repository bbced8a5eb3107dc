"""The session-wide cap on status requests, and how it backs off after a 429.

**The guarantee.** The server never counts more than ``rate`` status requests in any 1 s
window, however late this process's event loop runs. A grant (:meth:`RateLimiter.reserve`)
only *holds* a place; the request is stamped when it leaves, by the :class:`Ticket`'s
:meth:`~Ticket.send`, which the transport calls at the last moment before the request is
handed to the network (after any wait for a connection slot: see
``_transport.pass_send_gate``). A sliding log over ``WINDOW = 1 + SEND_JITTER`` seconds
counts those stamps, and every place still held counts as if it were sent now. So: stamps
``s_i`` are when requests really leave; at most ``rate`` of them fall in any window of
``WINDOW`` seconds; the server counts request ``i`` at ``r_i = s_i + d_i``, and as long as
the delays ``d_i`` (the network, a new connection, the server's own lag in reading them)
differ by less than ``SEND_JITTER``, any 1 s window of ``r_i`` holds at most ``rate``. Loop
lag between the grant and the send moves the stamp, never the bound. A budget shared
through Redis stamps on Redis's clock instead and adds the life of its grants (``_redis``).

A small token bucket spreads the sends out. A 429 cuts the rate to ``CUT`` of what it was,
once per congestion episode: the episode lasts until a request sent after the cut
succeeds, and every 429 meanwhile (answers to requests already on their way, a storm that
goes on) cuts nothing more. The rate then climbs back by ``RECOVERY`` of the configured
rate per second, so a short storm costs seconds, not minutes.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

__all__ = ["SEND_JITTER", "WINDOW", "RateLimiter", "StaleGrant", "Ticket"]

SEND_JITTER = 0.05
"""Seconds by which the delays from a request's stamp to the server's count of it may
differ (measured spread: ``benchmarks/budget.py``): the margin of the sliding window."""
WINDOW = 1.0 + SEND_JITTER
"""The local limiter's sliding window: no more than ``rate`` stamps in any such span."""
CUT = 0.7
RECOVERY = 0.1
"""Fraction of the configured rate regained per second after a cut."""
FLOOR = 0.1
"""The rate never drops below one request per 10 s."""


class StaleGrant(Exception):
    """A grant could not be used in time: the request was not sent; grant it again."""


class Ticket:
    """One place granted by a :class:`RateLimiter`: held until :meth:`send` stamps it (the
    request leaves now) or :meth:`cancel` gives it back (it never will).

    A grant that must leave by a deadline (a token Redis granted) sets :attr:`expires`
    and :attr:`renew`: past the deadline, ``renew(now)`` gives a new one or None, and then
    the request must not leave (:class:`StaleGrant`).
    """

    __slots__ = ("_limiter", "expires", "renew", "sent_at")

    def __init__(self, limiter: RateLimiter) -> None:
        self._limiter: RateLimiter | None = limiter
        self.expires = math.inf
        self.renew: Callable[[float], float | None] | None = None
        self.sent_at: float | None = None
        """When the request left (monotonic seconds), None until then."""

    def send(self, now: float | None = None) -> None:
        """The request leaves now: stamp it (call it as late as possible, once), or raise
        :class:`StaleGrant` (the place is given back) if its grant expired for good."""
        now = time.monotonic() if now is None else now
        if now > self.expires:
            renewed = self.renew(now) if self.renew is not None else None
            if renewed is None:
                self.cancel()
                raise StaleGrant
            self.expires = renewed
        limiter, self._limiter = self._limiter, None
        if limiter is None:
            raise RuntimeError("a ticket is sent once, and not after it was cancelled")
        self.sent_at = limiter.commit(now)

    def cancel(self) -> None:
        """The request will not leave: free its place (nothing if it was sent)."""
        limiter, self._limiter = self._limiter, None
        if limiter is not None:
            limiter.release()


class RateLimiter:
    """Decides when the next request may go; pure bookkeeping, the caller owns the clock."""

    __slots__ = (
        "_congested",
        "_cut_at",
        "_cut_rate",
        "_held",
        "_log",
        "_stamp",
        "_tokens",
        "max_rate",
        "window",
    )

    def __init__(self, rate: float, window: float = WINDOW) -> None:
        self.max_rate = rate
        self.window = window
        self._log: deque[float] = deque()
        self._held = 0
        self._tokens = 1.0
        self._stamp: float | None = None
        self._cut_at = -math.inf
        self._cut_rate = rate
        self._congested = False

    def rate(self, now: float) -> float:
        """The rate allowed at ``now``: the configured one, or climbing back after a cut."""
        regained = self.max_rate * RECOVERY * max(0.0, now - self._cut_at)
        return min(self.max_rate, self._cut_rate + regained)

    def reserve(self, now: float) -> Ticket | float:
        """A :class:`Ticket` for one send at ``now``, or the seconds until one frees."""
        rate = self.rate(now)
        window = self.window
        log = self._log
        while log and log[0] <= now - window:
            log.popleft()
        limit = max(1, math.floor(rate))
        excess = len(log) + self._held - limit
        if excess >= 0:
            if excess < len(log):  # the oldest stamps must leave the window first
                return max(1e-6, log[excess] + window - now)
            return max(1e-3, window / limit)  # held places alone fill it: they leave soon
        burst = max(1.0, rate * 0.1)
        if self._stamp is not None:
            self._tokens = min(burst, self._tokens + (now - self._stamp) * rate)
        self._stamp = now
        if self._tokens < 1.0:
            return max(1e-6, (1.0 - self._tokens) / rate)
        self._tokens -= 1.0
        self._held += 1
        return Ticket(self)

    def commit(self, now: float) -> float:
        """A held place is sent at ``now``; returns its stamp (never before the last one)."""
        self._held -= 1
        log = self._log
        stamp = max(now, log[-1]) if log else now
        log.append(stamp)
        return stamp

    def release(self) -> None:
        """A held place will not be sent: free it, and its token."""
        self._held -= 1
        self._tokens += 1.0  # capped to the burst at the next reserve

    def recent(self, now: float, span: float) -> list[float]:
        """How long ago (seconds) each request of the last ``span`` seconds was sent."""
        return [now - stamp for stamp in self._log if stamp > now - span]

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
