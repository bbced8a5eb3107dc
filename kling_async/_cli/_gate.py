"""How many submissions a batch has in flight: as many as asked, fewer while the account
says "too many at once" (upstream code 1303).

Additive increase, multiplicative decrease, as TCP does with its window: each refusal
halves the limit (never below one), and each run of successes as long as the limit adds
one back, up to what was asked. A line refused so is sent again after a backoff
(:class:`TooManyAtOnce`), until refusals with none of the run's tasks running to free a
slot show that waiting will not help.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

import attrs

from .._config import RetryPolicy
from .._exceptions import KlingError
from .._retry import retry_delay

__all__ = ["SubmitGate", "TooManyAtOnce"]


class SubmitGate:
    """``async with gate:`` around one submission; :meth:`refused` and :meth:`succeeded`
    move the limit."""

    __slots__ = ("_busy", "_changed", "_wins", "limit", "most")

    def __init__(self, limit: int) -> None:
        self.most = limit
        """The limit asked for."""
        self.limit = limit
        """The limit now."""
        self._busy = 0
        self._wins = 0
        self._changed = asyncio.Condition()

    async def __aenter__(self) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self._busy < self.limit)
            self._busy += 1

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        async with self._changed:
            self._busy -= 1
            self._changed.notify_all()

    def refused(self) -> bool:
        """The account refused a submission as one too many: halve the limit. True if it
        went down (it stays at one once there)."""
        self._wins = 0
        lower = max(1, self.limit // 2)
        changed, self.limit = lower != self.limit, lower
        return changed

    async def succeeded(self) -> None:
        """A submission went through: after as many in a row as the limit, allow one more."""
        if self.limit >= self.most:
            return
        self._wins += 1
        if self._wins >= self.limit:
            self._wins = 0
            async with self._changed:
                self.limit += 1
                self._changed.notify_all()


@attrs.define
class TooManyAtOnce:
    """One line's "too many at once" refusals: when to send it again, if ever."""

    policy: RetryPolicy
    rounds: int = 0
    """Refusals so far."""
    alone: int = 0
    """Refusals while none of the run's other tasks was running to free a slot."""

    def again(self, exc: KlingError, *, freeing: bool) -> float | None:
        """Seconds until the line is sent again after refusal ``exc`` (``freeing``: another
        task of the run is running, and will free a slot), or None after
        ``max_attempts`` refusals with nothing of the run's running."""
        self.alone += 0 if freeing else 1
        if self.alone >= self.policy.max_attempts:
            return None
        wait = retry_delay(exc, self.rounds, self.policy)
        self.rounds += 1
        return wait
