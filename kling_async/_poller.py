"""The shared poller: one driver task per session checks every task in flight.

A heap of ``(due, seq, task_id)`` says who is checked next (stale items are skipped
lazily); one entry per task id serves every handle and waiter on it; each wake-up sends
the status requests that are due, bounded by ``max_concurrency`` in flight and by the
session-wide :class:`RateLimiter`. Due checks wait in a second heap ordered by how likely
each task is done, so when the rate budget binds it goes to those first. A 429 pauses
every check for the server's Retry-After; a 5xx or timeout reschedules only that task;
401/403 fail every waiter at once.

While no estimate is known for a kind of request, one task of that kind checks early to
learn it and the others of that kind wait; when it arrives they are all rescheduled to
aim at their own finish. Completed tasks teach the :class:`SpreadModel` in the order
they were registered, so a batch's fast finishers do not make it believe every task is
fast while the slow ones still run.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import random
import time
from collections.abc import Hashable
from typing import Any

from ._config import PollPolicy
from ._convert import parse_snapshot
from ._exceptions import (
    APIError,
    AuthenticationError,
    KlingError,
    RateLimitError,
    SessionClosedError,
)
from ._models import TaskSnapshot
from ._ratelimit import RateLimiter
from ._retry import TRANSIENT, full_jitter_delay
from ._schedule import Progress, SpreadModel, plan_check
from ._transport import Transport

__all__ = ["Poller"]

logger = logging.getLogger("kling_async")

MAX_PENDING_LESSONS = 10_000
PRIORITY_HORIZON = 0.1
"""A check sure to find its task done jumps ahead of unsure ones due up to this fraction
of the estimate earlier (when the rate budget binds); a likelier one ahead of a less likely."""


class _Entry:
    """Everything the poller keeps about one task id (slotted: thousands live at once)."""

    __slots__ = (
        "boost",
        "created",
        "estimate",
        "failures",
        "futures",
        "kind",
        "origin",
        "polls",
        "progress",
        "queues",
        "seq",
        "snapshot",
        "task_id",
    )

    def __init__(self, task_id: str, kind: Hashable | None, created: float) -> None:
        self.task_id = task_id
        self.kind = kind
        self.created = created  # when it was registered (wall time)
        self.origin: float | None = None  # when the server says it was created
        self.estimate: float | None = None
        self.futures: list[asyncio.Future[TaskSnapshot]] = []
        self.queues: list[asyncio.Queue[TaskSnapshot | BaseException]] = []
        self.snapshot: TaskSnapshot | None = None  # the last one, kept for update queues only
        self.progress = Progress()
        self.polls = 0
        self.failures = 0
        self.seq = -1  # the heap item that is current; -1 while a check is in flight
        self.boost = 0.0  # seconds a due check jumps the queue by: the likelier done, the more


class Poller:
    """Batches the status checks of every task the session waits on."""

    def __init__(
        self,
        transport: Transport,
        policy: PollPolicy,
        *,
        model: SpreadModel | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._transport = transport
        self._policy = policy
        self.model = model or SpreadModel()
        self._rng = rng or random.Random()
        self._entries: dict[str, _Entry] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._ready: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._limiter = RateLimiter(policy.max_requests_per_second)
        self._paused_until = 0.0
        self._wake = asyncio.Event()
        self._driver: asyncio.Task[None] | None = None
        self._checks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._learning: dict[Hashable, list[_Entry]] = {}
        self._watched: list[tuple[float, str]] = []
        self._lessons: list[tuple[float, float, float]] = []
        self.requests_sent = 0

    def __len__(self) -> int:
        return len(self._entries)

    # -- subscriptions -------------------------------------------------------------------

    def wait(
        self, task_id: str, kind: Hashable | None = None, created: float | None = None
    ) -> asyncio.Future[TaskSnapshot]:
        """A future resolved with the task's terminal snapshot (or failed with an error)."""
        entry = self._entry(task_id, kind, created)
        future: asyncio.Future[TaskSnapshot] = asyncio.get_running_loop().create_future()
        entry.futures.append(future)
        return future

    def updates(
        self, task_id: str, kind: Hashable | None = None, created: float | None = None
    ) -> asyncio.Queue[TaskSnapshot | BaseException]:
        """A queue fed with every new snapshot until a terminal one (or an error)."""
        entry = self._entry(task_id, kind, created)
        queue: asyncio.Queue[TaskSnapshot | BaseException] = asyncio.Queue()
        entry.queues.append(queue)
        return queue

    def release(self, task_id: str, listener: Any) -> None:
        """Forget a listener; a task nobody listens to any more is no longer checked."""
        entry = self._entries.get(task_id)
        if entry is None:
            return
        if listener in entry.futures:
            entry.futures.remove(listener)
        elif listener in entry.queues:
            entry.queues.remove(listener)
        if not entry.futures and not entry.queues:
            del self._entries[task_id]  # its heap item is skipped lazily

    def _entry(self, task_id: str, kind: Hashable | None, created: float | None = None) -> _Entry:
        """The task's entry, registered on first use; ``created`` is when it was submitted."""
        if self._closed:
            raise SessionClosedError("the session is closed")
        entry = self._entries.get(task_id)
        if entry is None:
            entry = self._entries[task_id] = _Entry(
                task_id, kind, created if created is not None else time.time()
            )
            heapq.heappush(self._watched, (entry.created, task_id))
            self._schedule_first(entry)
            self._ensure_driver()
        return entry

    # -- scheduling ----------------------------------------------------------------------

    def _schedule_first(self, entry: _Entry) -> None:
        """Aim at the finish if the kind's estimate is known; else let one task learn it."""
        kind = entry.kind
        if kind is None or self.model.estimate_for(kind) is not None:
            self._schedule(entry)
        elif kind not in self._learning:
            self._learning[kind] = []  # this task's first check learns the estimate
            self._schedule(entry)
        else:
            self._learning[kind].append(entry)  # checked on its own only if none arrives
            policy = self._policy
            self._schedule(entry, min(policy.max_interval, 4 * policy.min_interval))

    def _schedule(self, entry: _Entry, delay: float | None = None) -> None:
        if delay is None:
            estimate = entry.estimate or self.model.estimate_for(entry.kind)
            plan = plan_check(
                now=time.time(),
                policy=self._policy,
                model=self.model,
                polls=entry.polls,
                created=entry.origin or entry.created,
                estimate=estimate,
                progress=entry.progress,
                rng=self._rng,
            )
            delay = plan.delay
            entry.boost = PRIORITY_HORIZON * (estimate or 0.0) * plan.likelihood
        loop = asyncio.get_running_loop()
        entry.seq = next(self._seq)
        due = loop.time() + delay
        if not self._heap or due < self._heap[0][0]:
            self._wake.set()
        heapq.heappush(self._heap, (due, entry.seq, entry.task_id))

    def _ensure_driver(self) -> None:
        if self._driver is None or self._driver.done():
            self._driver = asyncio.get_running_loop().create_task(
                self._drive(), name="kling_async-poller"
            )

    async def _drive(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            delay = self._launch_due(loop)
            self._wake.clear()
            if delay is None:
                await self._wake.wait()
            elif delay > 0:
                try:
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                except TimeoutError:
                    pass

    def _current(self, seq: int, task_id: str) -> _Entry | None:
        """The entry a heap item stands for, or None if the item is stale."""
        entry = self._entries.get(task_id)
        return entry if entry is not None and entry.seq == seq else None

    def _collect_due(self, now: float) -> None:
        """Move every due item to the ready heap, the likeliest-done first."""
        heap, ready = self._heap, self._ready
        while heap and heap[0][0] <= now:
            due, seq, task_id = heapq.heappop(heap)
            entry = self._current(seq, task_id)
            if entry is not None:
                heapq.heappush(ready, (due - entry.boost, seq, task_id))

    def _launch_due(self, loop: asyncio.AbstractEventLoop) -> float | None:
        """Start every check that is due and allowed; return how long until the next one."""
        now = loop.time()
        if now < self._paused_until:
            return self._paused_until - now
        self._collect_due(now)
        ready = self._ready
        while ready:
            _, seq, task_id = ready[0]
            entry = self._current(seq, task_id)
            if entry is None:
                heapq.heappop(ready)
                continue
            if len(self._checks) >= self._policy.max_concurrency:
                return None  # a finishing check wakes the driver
            wait = self._limiter.reserve(now)
            if wait > 0:
                return wait
            heapq.heappop(ready)
            entry.seq = -1
            check = loop.create_task(self._check(entry))
            self._checks.add(check)
            check.add_done_callback(self._check_done)
        return self._next_due(now)

    def _next_due(self, now: float) -> float | None:
        heap = self._heap
        while heap and self._current(heap[0][1], heap[0][2]) is None:
            heapq.heappop(heap)
        return heap[0][0] - now if heap else None

    def _check_done(self, check: asyncio.Task[None]) -> None:
        self._checks.discard(check)
        self._wake.set()

    # -- one status check ----------------------------------------------------------------

    async def _check(self, entry: _Entry) -> None:
        self.requests_sent += 1
        entry.polls += 1
        sent = time.time()
        try:
            payload = await self._transport.request_json(
                "GET", self._transport.task_path(entry.task_id)
            )
            snapshot = parse_snapshot(payload)
        except RateLimitError as exc:
            self._on_rate_limited(entry, exc)
        except TRANSIENT as exc:
            entry.failures += 1
            delay = full_jitter_delay(
                entry.failures, self._policy.min_interval, self._policy.max_interval, self._rng
            )
            logger.info(
                "status check of %s failed (%s); retry in %.2fs",
                entry.task_id,
                type(exc).__name__,
                delay,
            )
            self._reschedule(entry, max(delay, self._policy.min_interval))
        except AuthenticationError as exc:
            logger.error("status checks refused (%s); failing every waiter", exc.status)
            for other in list(self._entries.values()):
                self._fail(other, exc)
        except APIError as exc:
            self._fail(entry, exc)
        except Exception as exc:  # a bug must not kill the poller or strand waiters
            logger.exception("unexpected error checking %s", entry.task_id)
            self._fail(entry, KlingError(f"unexpected error: {type(exc).__name__}: {exc}"))
        else:
            self._limiter.speed_up()
            entry.failures = 0
            self._deliver(entry, snapshot, (sent + time.time()) / 2)

    def _on_rate_limited(self, entry: _Entry, exc: RateLimitError) -> None:
        loop = asyncio.get_running_loop()
        wait = exc.retry_after
        if wait is None:
            wait = full_jitter_delay(3, self._policy.min_interval, self._policy.max_interval)
        self._paused_until = max(self._paused_until, loop.time() + wait)
        self._limiter.slow_down()
        logger.warning("rate limited: pausing status checks for %.2fs", wait)
        self._reschedule(entry, wait)

    def _reschedule(self, entry: _Entry, delay: float | None) -> None:
        if self._entries.get(entry.task_id) is entry:
            self._schedule(entry, delay)

    def _deliver(self, entry: _Entry, snapshot: TaskSnapshot, seen: float) -> None:
        """Hand a snapshot (read at wall time ``seen``) to listeners, then learn or go on."""
        entry.progress.observe(seen, snapshot.progress)
        if snapshot.created:
            entry.origin = snapshot.created
        if snapshot.estimated_time:
            entry.estimate = snapshot.estimated_time
            self.model.remember_estimate(entry.kind, snapshot.estimated_time)
        if entry.queues:
            if entry.snapshot is None or entry.snapshot != snapshot:
                for queue in entry.queues:
                    queue.put_nowait(snapshot)
            entry.snapshot = snapshot
        if snapshot.status.is_terminal:
            self._learn(entry, snapshot)
            for future in entry.futures:
                if not future.done():
                    future.set_result(snapshot)
            self._entries.pop(entry.task_id, None)
        else:
            self._reschedule(entry, None)
        waiting = self._learning.pop(entry.kind, None) if snapshot.estimated_time else None
        for other in waiting or ():
            if other.polls == 0 and other.seq != -1:
                self._reschedule(other, None)

    def _learn(self, entry: _Entry, snapshot: TaskSnapshot) -> None:
        """Queue what a completed task teaches; apply lessons in registration order."""
        estimate = snapshot.estimated_time or entry.estimate
        actual = snapshot.actual_time
        if actual is None and snapshot.completed and snapshot.created:
            actual = snapshot.completed - snapshot.created
        if estimate and actual and snapshot.status == "completed":
            heapq.heappush(self._lessons, (entry.created, estimate, actual))
        self._apply_lessons(entry.task_id)

    def _apply_lessons(self, finished: str) -> None:
        """Teach the model every lesson no task registered earlier is still running for:
        a batch then teaches its slow tasks along with its fast ones, not only the fast.
        A task that hangs for good holds back at most ``MAX_PENDING_LESSONS`` lessons."""
        watched, lessons, entries = self._watched, self._lessons, self._entries
        while watched:
            created, task_id = watched[0]
            entry = entries.get(task_id)
            if task_id != finished and entry is not None and entry.created == created:
                break
            heapq.heappop(watched)
        if len(watched) > 2 * len(entries) + 1000:  # drop what finished behind the oldest
            watched[:] = [(e.created, e.task_id) for e in entries.values()]
            heapq.heapify(watched)
        oldest = watched[0][0] if watched else math.inf
        while lessons and (lessons[0][0] <= oldest or len(lessons) > MAX_PENDING_LESSONS):
            _, estimate, actual = heapq.heappop(lessons)
            self.model.observe(estimate, actual)

    def _fail(self, entry: _Entry, exc: BaseException) -> None:
        for future in entry.futures:
            if not future.done():
                future.set_exception(exc)
        for queue in entry.queues:
            queue.put_nowait(exc)
        self._entries.pop(entry.task_id, None)

    # -- lifecycle -----------------------------------------------------------------------

    async def close(self) -> None:
        """Stop the driver and every check; fail what is still waiting with SessionClosedError."""
        self._closed = True
        pending = [t for t in (self._driver, *self._checks) if t is not None and not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        self._driver = None
        closed = SessionClosedError("the session was closed while waiting")
        for entry in list(self._entries.values()):
            self._fail(entry, closed)
        self._heap.clear()
        self._ready.clear()
