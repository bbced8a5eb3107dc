"""The emulated server's clock: what the emulator *reports*, never what it decides by.

Task fates are kept on the real (wall) clock. Everything the API host reports goes
through a `EmulatedClock`, which does what a real server's clock does to a client:

- it is off by `clock_offset` emulated seconds (positive: ahead of the client);
- it ticks in whole seconds of the *emulated* clock. Reported values stay in real
  seconds (a client needs no knowledge of the time scale), so at `time_scale=20` a
  timestamp is a multiple of 0.05 s and at `time_scale=1` an integer.
"""

from __future__ import annotations

import math
from email.utils import formatdate

__all__ = ["EmulatedClock"]


def _whole(value: float) -> int | float:
    """An int when `value` is a whole number (so real speed sends integers), else `value`."""
    return int(value) if float(value).is_integer() else value


class EmulatedClock:
    """Maps real times and durations to the values the server reports."""

    __slots__ = ("offset", "scale")

    def __init__(self, time_scale: float, clock_offset: float) -> None:
        self.scale = time_scale
        self.offset = clock_offset / time_scale
        """Real seconds the server clock is ahead of the real one (negative: behind)."""

    def stamp(self, real_time: float) -> int | float:
        """The server's timestamp for the real unix time `real_time`.

        floor((t + offset) x scale) / scale: whole emulated seconds, expressed in real
        seconds, rounded to 6 decimals.
        """
        ticks = math.floor((real_time + self.offset) * self.scale)
        return _whole(round(ticks / self.scale, 6))

    def duration(self, real_seconds: float) -> int | float:
        """A duration as the server reports it: the nearest whole emulated second (at least 1)."""
        ticks = max(1, round(real_seconds * self.scale))
        return _whole(round(ticks / self.scale, 6))

    @staticmethod
    def between(start: int | float, end: int | float) -> int | float:
        """`end - start` of two reported stamps, without float noise."""
        return _whole(round(end - start, 6))

    def http_date(self, real_time: float) -> str:
        """An HTTP ``Date`` header value for the real time `real_time` on the server clock."""
        return formatdate(real_time + self.offset, usegmt=True)
