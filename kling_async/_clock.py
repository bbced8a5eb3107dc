"""The server's clock, as seen from ours.

The API's timestamps (``created``, ``completed``) are whole seconds on the server's clock,
which is not the client's. Every answer's ``Date`` header says the server's time to the
second at some instant between sending the request and reading the answer, so each one
bounds the offset ``server - local``; intersecting the bounds of many answers pins it
down to a fraction of a second. Local times here are ``time.monotonic()`` seconds (the
event loop's clock), so a wall-clock jump on either side does not move a schedule.
"""

from __future__ import annotations

import email.utils
import math

__all__ = ["ServerClock"]

QUANTUM = 1.0
"""The resolution of the server's timestamps and of ``Date``: whole seconds."""


def parse_http_date(value: str | None) -> float | None:
    """Unix seconds of an HTTP ``Date`` value, or None if it is missing or garbled."""
    if not value:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        return None
    seconds = when.timestamp()
    return seconds if math.isfinite(seconds) else None


class ServerClock:
    """Bounds on ``server time - local monotonic time``, narrowed by every ``Date`` seen."""

    __slots__ = ("hi", "lo", "samples")

    def __init__(self) -> None:
        self.lo = -math.inf
        self.hi = math.inf
        self.samples = 0

    def __repr__(self) -> str:
        return f"ServerClock(offset in [{self.lo:.3f}, {self.hi:.3f}], {self.samples} samples)"

    @property
    def known(self) -> bool:
        """True once at least one ``Date`` has been read."""
        return self.samples > 0

    def observe(self, date: str | None, sent: float, received: float) -> None:
        """Learn from an answer whose ``Date`` was stamped between local ``sent`` and
        ``received``. Bounds that stop overlapping mean the server's clock moved (or a
        different server answered): start over from this answer."""
        server = parse_http_date(date)
        if server is None or received < sent:
            return
        lo, hi = server - received, server + QUANTUM - sent
        if lo > self.hi or hi < self.lo:
            self.lo, self.hi = lo, hi
        else:
            self.lo, self.hi = max(self.lo, lo), min(self.hi, hi)
        self.samples += 1

    def to_local(self, stamp: float) -> tuple[float, float]:
        """When (local monotonic) a server timestamp of whole seconds may have happened:
        the event was in ``[stamp, stamp + 1)`` on the server's clock. Unbounded while no
        ``Date`` has been read."""
        if not self.known:
            return -math.inf, math.inf
        return stamp - self.hi, stamp + QUANTUM - self.lo
