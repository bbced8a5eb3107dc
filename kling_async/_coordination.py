"""What the poller asks when other processes may be waiting on the same tasks.

The poller talks to a :class:`Coordinator` for three things, and knows nothing of how
they are answered:

* **may I check this task now?** (``may_check``): with several processes awaiting one
  task, one of them checks it at a time;
* **here is what I saw** (``saw``, ``paused``, ``learned``): a snapshot, a 429 pause, a
  lesson of the schedule, for the other processes to use;
* **the rate budget** (``budget``): how many status requests the API key may send.

What the others saw comes back through the :class:`CoordinatorSink` the poller binds.
:class:`LocalCoordinator`, one process on its own, is the default: it allows every
check, shares nothing and keeps the budget in a local :class:`RateLimiter`. The Redis
one (``_redis``, the ``[redis]`` extra) shares all of it between processes.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Protocol

import attrs

from ._models import TaskSnapshot
from ._ratelimit import RateLimiter, Ticket

__all__ = ["Budget", "Coordinator", "CoordinatorSink", "LocalCoordinator", "Sighting"]


@attrs.frozen
class Sighting:
    """A snapshot and when it was read: between ``sent`` and ``received``, local
    monotonic seconds (the event loop's clock) of the process it is handed to."""

    snapshot: TaskSnapshot
    sent: float
    received: float


class Budget(Protocol):
    """The status requests a session may send (see :class:`RateLimiter`)."""

    def reserve(self, now: float) -> Ticket | float:
        """A ticket for one send, granted at ``now``, or the seconds until one frees.

        The ticket holds the place until the request leaves: its ``send`` (passed as the
        request's ``gate``) stamps that moment, or raises ``StaleGrant`` if the grant can no
        longer be used; ``cancel`` frees a place never sent.
        """

    def rate(self, now: float) -> float:
        """Requests per second allowed at ``now``."""

    def congested(self, now: float) -> bool:
        """A 429 came back: slow down (True if this cut the rate)."""

    def relieved(self, sent: float) -> None:
        """A request sent at ``sent`` succeeded."""


class CoordinatorSink(Protocol):
    """Where a coordinator hands what other processes saw (the poller)."""

    def on_claim(self, task_id: str) -> None:
        """This process may now check ``task_id`` (its checker went away)."""

    def wake(self) -> None:
        """Something the schedule waits on changed (budget granted): look again."""

    def on_sighting(self, task_id: str, sighting: Sighting) -> None:
        """Another process saw this of ``task_id``."""

    def on_pause(self, seconds: float) -> None:
        """Another process was rate limited: pause every check for ``seconds``."""

    def on_lesson(self, kind: Hashable | None, name: str, value: float) -> None:
        """Another process learned this about a kind of request."""


class Coordinator(Protocol):
    """The poller's view of the other processes sharing its API key."""

    @property
    def budget(self) -> Budget:
        """The rate budget of status requests."""

    @property
    def shared_now(self) -> bool:
        """True while checks are shared with other processes."""

    def bind(self, sink: CoordinatorSink) -> None:
        """Send what others saw to ``sink`` from now on."""

    def watch(self, task_id: str) -> None:
        """This process waits on ``task_id``."""

    def unwatch(self, task_id: str) -> None:
        """This process no longer waits on ``task_id``."""

    def may_check(self, task_id: str) -> bool:
        """True if this process is the one to check ``task_id`` now."""

    async def shared(self, task_id: str) -> Sighting | None:
        """The latest sighting any process had of ``task_id`` (None if none is known)."""

    def saw(self, task_id: str, sighting: Sighting) -> None:
        """Tell the others what a check of ``task_id`` found."""

    def paused(self, seconds: float) -> None:
        """Tell the others a 429 asked to pause every check for ``seconds``."""

    def learned(self, kind: Hashable | None, name: str, value: float) -> None:
        """Tell the others a lesson of the schedule."""

    async def close(self) -> None:
        """Stop whatever runs in the background, release what is held."""


class LocalCoordinator:
    """One process on its own: every check allowed, nothing shared, a local budget."""

    __slots__ = ("_budget",)

    def __init__(self, max_requests_per_second: float) -> None:
        self._budget = RateLimiter(max_requests_per_second)

    def __repr__(self) -> str:
        return "LocalCoordinator()"

    @property
    def budget(self) -> Budget:
        return self._budget

    @property
    def shared_now(self) -> bool:
        return False

    def bind(self, sink: CoordinatorSink) -> None:
        pass

    def watch(self, task_id: str) -> None:
        pass

    def unwatch(self, task_id: str) -> None:
        pass

    def may_check(self, task_id: str) -> bool:
        return True

    async def shared(self, task_id: str) -> Sighting | None:
        return None

    def saw(self, task_id: str, sighting: Sighting) -> None:
        pass

    def paused(self, seconds: float) -> None:
        pass

    def learned(self, kind: Hashable | None, name: str, value: float) -> None:
        pass

    async def close(self) -> None:
        pass
