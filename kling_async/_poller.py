"""The shared poller: one driver task per session checks every task in flight.

It sends, routes and limits; when to check a task is the :class:`Forecaster`'s call.

* **Sends**: a heap of ``(due, seq, task_id)`` says who is checked next (stale items are
  skipped lazily); each wake-up starts the checks that are due, bounded by
  ``max_concurrency`` in flight and by the coordinator's rate budget. Due checks wait in a
  second heap ordered by how likely each task is done, so when the budget binds it goes
  to those first. ``fetch`` (``status()``, ``refresh()``) rides the same heap, ahead of
  the rest, so it obeys the same cap and pauses. When another process checks a task (see
  ``_coordination``), a due check reads what that process saw instead of asking the API.
* **Routes**: one :class:`_Watch` per task id serves every handle, waiter, update queue
  and fetch on it; answers go to the watch registered *now* for that id, so a wait that
  timed out and came back never loses its check.
* **Limits**: a 429 pauses every check for the server's ``Retry-After`` (never less, never
  longer than ``RetryPolicy.max_retry_after``: a server asking for more fails that task's
  waiters with the 429) and cuts the rate once per episode; a 5xx, timeout or reset
  reschedules only that task with backoff; an answer that stays unreadable for
  ``max_attempts`` checks fails that task; a 401 fails every waiter of the session, any
  other refusal (403, 404, ...) only that task's.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import Hashable
from urllib.parse import quote

import attrs

from ._client import ApiClient
from ._config import PollPolicy, RetryPolicy
from ._convert import parse_snapshot
from ._coordination import Coordinator, LocalCoordinator, Sighting
from ._exceptions import (
    APIError,
    InvalidResponseError,
    KlingError,
    RateLimitError,
    SessionClosedError,
)
from ._forecast import Forecaster, TaskForecast
from ._models import TaskSnapshot
from ._ratelimit import StaleGrant, Ticket
from ._retry import full_jitter_delay, is_transient
from ._schedule import Plan
from ._waiting import wait_event

__all__ = ["PollStats", "Poller", "task_path"]

logger = logging.getLogger("kling_async")

PRIORITY_HORIZON = 0.1
"""A check sure to find its task done jumps ahead of unsure ones due up to this fraction
of the estimate earlier (when the rate budget binds); a likelier one ahead of a less likely."""
FETCH_PRIORITY = 1e9
"""A fetch (someone asked for the status now) goes before every planned check."""

Listener = asyncio.Future[TaskSnapshot] | asyncio.Queue[TaskSnapshot | BaseException]


def task_path(task_id: str) -> str:
    """The status path of a (validated) task id."""
    return "/v1/tasks/" + quote(task_id, safe="")


@attrs.frozen
class PollStats:
    """A look at a session's poller: tasks watched, requests sent, the rate now."""

    tasks: int
    """Task ids someone is waiting on (each checked once per round, however many wait)."""
    status_requests: int
    """Status requests sent since the session opened."""
    rate: float
    """Status requests per second allowed now (below the cap for a while after a 429)."""
    paused_for: float
    """Seconds until checks resume after a 429 (0 when not paused)."""
    shared: bool
    """True while checks are shared with other sessions (through Redis): False alone, or
    while Redis is out of reach."""


class _Watch:
    """Everything the poller keeps about one task id (slotted: thousands live at once)."""

    __slots__ = (
        "boost",
        "failures",
        "fetches",
        "forecast",
        "futures",
        "looked",
        "queues",
        "seq",
        "snapshot",
        "task_id",
        "unreadable",
    )

    def __init__(self, task_id: str, forecast: TaskForecast) -> None:
        self.task_id = task_id
        self.forecast = forecast
        self.futures: list[asyncio.Future[TaskSnapshot]] = []
        # Update queues and fetches are rare: a shared empty tuple until the first one.
        self.queues: list[asyncio.Queue[TaskSnapshot | BaseException]] | tuple[()] = ()
        self.fetches: list[asyncio.Future[TaskSnapshot]] | tuple[()] = ()
        self.snapshot: TaskSnapshot | None = None  # the last one, kept for update queues only
        self.failures = 0  # transient failures in a row
        self.unreadable = 0  # unreadable answers in a row
        self.looked = False  # what other sessions saw of it was read (a shared poller)
        self.seq = -1  # the heap item that is current; -1 while a check is in flight
        self.boost = 0.0  # seconds a due check jumps the queue by: the likelier done, the more

    @property
    def idle(self) -> bool:
        return not (self.futures or self.queues or self.fetches)


class Poller:
    """Batches the status checks of every task the session waits on."""

    def __init__(
        self,
        client: ApiClient,
        policy: PollPolicy,
        retry: RetryPolicy,
        forecaster: Forecaster,
        coordinator: Coordinator | None = None,
    ) -> None:
        self._client = client
        self._policy = policy
        self._retry = retry
        self.forecaster = forecaster
        self._coordinator = coordinator or LocalCoordinator(policy.max_requests_per_second)
        self._coordinator.bind(self)
        forecaster.share = self._coordinator.learned
        self._entries: dict[str, _Watch] = {}
        self._in_flight: set[str] = set()
        self._heap: list[tuple[float, int, str]] = []
        self._ready: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._budget = self._coordinator.budget
        self._paused_until = 0.0
        self._wake = asyncio.Event()
        self._driver: asyncio.Task[None] | None = None
        self._checks: set[asyncio.Task[None]] = set()
        self._closed = False
        self.requests_sent = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"<Poller {len(self._entries)} tasks, {self.requests_sent} requests>"

    def stats(self) -> PollStats:
        """Counters and the rate now."""
        now = asyncio.get_running_loop().time()
        return PollStats(
            tasks=len(self._entries),
            status_requests=self.requests_sent,
            rate=self._budget.rate(now),
            paused_for=max(0.0, self._paused_until - now),
            shared=self._coordinator.shared_now,
        )

    # -- subscriptions -------------------------------------------------------------------

    def wait(
        self, task_id: str, kind: Hashable | None = None, submitted: float | None = None
    ) -> asyncio.Future[TaskSnapshot]:
        """A future resolved with the task's terminal snapshot (or failed with an error)."""
        future: asyncio.Future[TaskSnapshot] = asyncio.get_running_loop().create_future()
        self._watch(task_id, kind, submitted).futures.append(future)
        return future

    def updates(
        self, task_id: str, kind: Hashable | None = None, submitted: float | None = None
    ) -> asyncio.Queue[TaskSnapshot | BaseException]:
        """A queue fed with every new snapshot until a terminal one (or an error)."""
        queue: asyncio.Queue[TaskSnapshot | BaseException] = asyncio.Queue()
        watch = self._watch(task_id, kind, submitted)
        if not watch.queues:
            watch.queues = []
        watch.queues.append(queue)
        return queue

    def fetch(self, task_id: str) -> asyncio.Future[TaskSnapshot]:
        """A future resolved with the next answer about the task, whatever its status.

        The check is sent at once, ahead of planned ones, within the rate cap and any
        429 pause; transient failures are retried per the retry policy.
        """
        future: asyncio.Future[TaskSnapshot] = asyncio.get_running_loop().create_future()
        watch = self._watch(task_id, None, None)
        if not watch.fetches:
            watch.fetches = []
        watch.fetches.append(future)
        if watch.seq != -1:  # not in flight: make it due now, ahead of everyone
            self._schedule(watch, 0.0, FETCH_PRIORITY)
        return future

    async def status(self, task_id: str) -> TaskSnapshot:
        """The next answer about the task (see :meth:`fetch`); cancelling stops waiting."""
        future = self.fetch(task_id)
        try:
            return await future
        finally:
            if not future.done():
                future.cancel()
            self.release(task_id, future)

    def release(self, task_id: str, listener: Listener) -> None:
        """Forget a listener; a task nobody listens to any more is no longer checked."""
        watch = self._entries.get(task_id)
        if watch is None:
            return
        for listeners in (watch.futures, watch.queues, watch.fetches):
            if listener in listeners:
                assert isinstance(listeners, list)
                listeners.remove(listener)  # type: ignore[arg-type]
                break
        if watch.idle:
            self._drop(watch)

    def _watch(self, task_id: str, kind: Hashable | None, submitted: float | None) -> _Watch:
        """The task's watch, registered on first use; ``submitted`` is the local time of
        its submit (None for a re-attached task)."""
        if self._closed:
            raise SessionClosedError("the session is closed")
        watch = self._entries.get(task_id)
        if watch is None:
            forecast = self.forecaster.track(task_id, kind, submitted)
            watch = self._entries[task_id] = _Watch(task_id, forecast)
            self._coordinator.watch(task_id)
            if task_id not in self._in_flight:  # else the answer on its way comes here
                if self.forecaster.needs_learner(forecast):
                    policy = self._policy
                    self._schedule(watch, min(policy.max_interval, 4 * policy.min_interval))
                else:
                    self._schedule(watch)
            self._ensure_driver()
        return watch

    def _drop(self, watch: _Watch, finished: bool = False) -> None:
        """Stop watching (only this registration: a newer one for the id stays)."""
        if self._entries.get(watch.task_id) is watch:
            del self._entries[watch.task_id]  # its heap item is skipped lazily
            self._coordinator.unwatch(watch.task_id)
            if not finished:
                self.forecaster.forget(watch.forecast)

    # -- scheduling ----------------------------------------------------------------------

    def _schedule(self, watch: _Watch, delay: float | None = None, boost: float = 0.0) -> None:
        """Put the watch's next check ``delay`` seconds from now, or where its plan says."""
        if delay is None:
            now = asyncio.get_running_loop().time()
            self._place(watch, self.forecaster.plan(watch.forecast, now))
        else:
            self._push(watch, delay, boost)

    def _place(self, watch: _Watch, plan: Plan) -> None:
        unit = self.forecaster.belief_unit(watch.forecast)
        self._push(watch, plan.delay, PRIORITY_HORIZON * unit * plan.likelihood)

    def _push(self, watch: _Watch, delay: float, boost: float) -> None:
        watch.boost = boost
        watch.seq = next(self._seq)
        due = asyncio.get_running_loop().time() + delay
        if not self._heap or due < self._heap[0][0]:
            self._wake.set()
        heapq.heappush(self._heap, (due, watch.seq, watch.task_id))

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
            if delay is None or delay > 0:
                await wait_event(self._wake, delay)

    def _current(self, seq: int, task_id: str) -> _Watch | None:
        """The watch a heap item stands for, or None if the item is stale."""
        watch = self._entries.get(task_id)
        return watch if watch is not None and watch.seq == seq else None

    def _collect_due(self, now: float) -> None:
        """Move every due item to the ready heap, the likeliest-done first. A check
        planned before the forecaster learned something new is planned again, and put
        off if it now belongs later."""
        heap, ready, forecaster = self._heap, self._ready, self.forecaster
        while heap and heap[0][0] <= now:
            due, seq, task_id = heapq.heappop(heap)
            watch = self._current(seq, task_id)
            if watch is None:
                continue
            if not watch.fetches:
                later = forecaster.postpone(watch.forecast, now, self._policy.min_interval / 4)
                if later is not None:
                    self._push(watch, later - now, watch.boost)
                    continue
            heapq.heappush(ready, (due - watch.boost, seq, task_id))

    def _launch_due(self, loop: asyncio.AbstractEventLoop) -> float | None:
        """Start every check that is due and allowed; return how long until the next one."""
        now = loop.time()
        if now < self._paused_until:
            return self._paused_until - now
        self._collect_due(now)
        ready = self._ready
        while ready:
            _, seq, task_id = ready[0]
            watch = self._current(seq, task_id)
            if watch is None:
                heapq.heappop(ready)
                continue
            if len(self._checks) >= self._policy.max_concurrency:
                return None  # a finishing check wakes the driver
            # A fetch (status() asked now) always asks the API itself; any other first
            # look at a task reads what other sessions saw of it, then whoever holds it
            # checks it.
            coordinator = self._coordinator
            mine = bool(watch.fetches) or (
                (watch.looked or not coordinator.shared_now) and coordinator.may_check(task_id)
            )
            ticket: Ticket | None = None
            if mine:
                grant = self._budget.reserve(now)
                if isinstance(grant, float):
                    return grant
                ticket = grant
            heapq.heappop(ready)
            watch.seq = -1
            self._in_flight.add(task_id)
            # Another process checks this task: read what it saw instead (no request).
            check = loop.create_task(
                self._follow(task_id) if ticket is None else self._check(task_id, ticket)
            )
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

    async def _check(self, task_id: str, ticket: Ticket) -> None:
        """One status request, sent on ``ticket``: the budget stamps the moment it leaves
        (the ticket is the request's gate), and a grant that went stale on the way is
        granted again from the heap, never sent late."""
        loop = asyncio.get_running_loop()
        outcome: TaskSnapshot | BaseException | None
        try:
            reply = await self._client.call("GET", task_path(task_id), gate=ticket.send)
            outcome = parse_snapshot(reply.payload, task_id)
        except StaleGrant:
            outcome = None  # not sent
        except Exception as exc:
            outcome = exc
        finally:
            ticket.cancel()  # nothing if it was sent
            self._in_flight.discard(task_id)
        sent = ticket.sent_at
        if sent is not None:
            self.requests_sent += 1
        watch = self._entries.get(task_id)  # the registration now, which may be newer
        if watch is None:
            return
        if outcome is None:  # never left: due again at once, in its place
            self._schedule(watch, 0.0, FETCH_PRIORITY if watch.fetches else watch.boost)
            return
        try:
            received = loop.time()
            self._settle(watch, outcome, received if sent is None else sent, received)
        except Exception as exc:  # a bug must not kill the poller or strand waiters
            logger.exception("unexpected error handling the status of %s", task_id)
            self._fail(watch, KlingError(f"unexpected error: {type(exc).__name__}"))

    async def _follow(self, task_id: str) -> None:
        """Take the latest sighting another process shared, as if this were a check."""
        try:
            sighting = await self._coordinator.shared(task_id)
        except Exception:  # the coordinator reports its own trouble; try again later
            sighting = None
        finally:
            self._in_flight.discard(task_id)
        watch = self._entries.get(task_id)
        if watch is None:
            return
        first, watch.looked = not watch.looked, True
        if sighting is not None:
            try:
                self.on_sighting(task_id, sighting)
            except Exception as exc:  # as in _check: a bug must not strand this task
                logger.exception("unexpected error handling what another session saw")
                self._fail(watch, KlingError(f"unexpected error: {type(exc).__name__}"))
        elif first or watch.fetches:  # nobody saw it yet: check it now if it is ours
            self._schedule(watch, 0.0, FETCH_PRIORITY if watch.fetches else 0.0)
        else:
            self._schedule(watch)

    def _settle(
        self, watch: _Watch, outcome: TaskSnapshot | BaseException, sent: float, received: float
    ) -> None:
        """Route one answer (or failure) of a status check: the one place that decides."""
        if isinstance(outcome, TaskSnapshot):
            watch.failures = watch.unreadable = 0
            self._budget.relieved(sent)
            if self._coordinator.shared_now:
                self._coordinator.saw(watch.task_id, Sighting(outcome, sent, received))
            self._deliver(watch, outcome, sent, received)
        elif isinstance(outcome, RateLimitError):
            self._on_rate_limited(watch, outcome, sent, received)
        elif isinstance(outcome, APIError) and outcome.status == 401:
            logger.error("status checks refused (401); failing every waiter")
            for other in list(self._entries.values()):
                self._fail(other, outcome)
        elif is_transient(outcome):
            self._on_transient(watch, outcome)
        elif isinstance(outcome, KlingError):  # 403, 404, ...: this task only
            self._fail(watch, outcome)
        else:
            logger.error("unexpected %s checking %s", type(outcome).__name__, watch.task_id)
            self._fail(watch, KlingError(f"unexpected error: {type(outcome).__name__}"))

    def _on_transient(self, watch: _Watch, exc: BaseException) -> None:
        watch.failures += 1
        attempts = self._retry.max_attempts
        if isinstance(exc, InvalidResponseError):
            watch.unreadable += 1
            if watch.unreadable >= attempts:
                logger.warning(
                    "status of %s unreadable %d times in a row: failing it",
                    watch.task_id,
                    watch.unreadable,
                )
                self._fail(watch, exc)
                return
        if watch.failures >= attempts:
            self._resolve_fetches(watch, exc)  # status() gives up as a retried GET would
        # A GET like any other: the retry policy's backoff, never under min_interval.
        retry = self._retry
        delay = max(
            self._policy.min_interval,
            full_jitter_delay(watch.failures, retry.base_delay, retry.max_delay),
        )
        logger.info(
            "status check of %s failed (%s); retry in %.2fs",
            watch.task_id,
            type(exc).__name__,
            delay,
        )
        self._schedule(watch, delay)

    def _on_rate_limited(
        self, watch: _Watch, exc: RateLimitError, sent: float, received: float
    ) -> None:
        wait = exc.retry_after
        if wait is None:
            policy = self._policy
            wait = max(policy.min_interval, full_jitter_delay(3, policy.min_interval, 60.0))
        watch.failures += 1
        if watch.failures >= self._retry.max_attempts:
            self._resolve_fetches(watch, exc)  # status() gives up as a retried GET would
        limit = self._retry.max_retry_after
        if wait > limit:
            # Waiting less than the server asked would be ignoring it; waiting longer than
            # the policy allows would freeze the session: this task's waiters get the 429.
            logger.warning(
                "rate limited for %.3g s, over max_retry_after=%g: failing %s",
                wait,
                limit,
                watch.task_id,
            )
            self._fail(watch, exc)
            wait = limit
        else:
            self._schedule(watch, wait)
        self._paused_until = max(self._paused_until, received + wait)
        self._coordinator.paused(wait)
        if self._budget.congested(received):
            logger.warning("rate limited: pausing status checks for %.2fs", wait)

    # -- what other processes saw (the CoordinatorSink) --------------------------------

    def on_claim(self, task_id: str) -> None:
        """This process now checks ``task_id``: its next due check goes out, at once if
        someone asked for its status (no process had a sighting to answer with)."""
        watch = self._entries.get(task_id)
        if watch is not None and watch.fetches and watch.seq != -1:
            self._schedule(watch, 0.0, FETCH_PRIORITY)
        self._wake.set()

    def wake(self) -> None:
        """Look at what is due again (the budget was granted, say)."""
        self._wake.set()

    def on_sighting(self, task_id: str, sighting: Sighting) -> None:
        """Another process saw this: hand it to listeners as if this process had."""
        watch = self._entries.get(task_id)
        if watch is None:
            return
        if watch.snapshot is not None and watch.snapshot == sighting.snapshot:
            if watch.seq == -1:  # nothing new from a follow: plan the next look
                self._schedule(watch)
            return
        self._deliver(watch, sighting.snapshot, sighting.sent, sighting.received, own=False)

    def on_pause(self, seconds: float) -> None:
        """Another process was rate limited: pause every check too."""
        now = asyncio.get_running_loop().time()
        self._paused_until = max(self._paused_until, now + seconds)

    def on_lesson(self, kind: Hashable | None, name: str, value: float) -> None:
        """Another process learned this: the schedule learns it too."""
        self.forecaster.teach(kind, name, value)

    def _deliver(
        self,
        watch: _Watch,
        snapshot: TaskSnapshot,
        sent: float,
        received: float,
        *,
        own: bool = True,
    ) -> None:
        """Hand a snapshot to listeners, then learn (from own checks) and go on (or end)."""
        woken = self.forecaster.observe(watch.forecast, snapshot, sent, received, teach=own)

        self._resolve_fetches(watch, snapshot)
        if watch.queues:
            if watch.snapshot is None or watch.snapshot != snapshot:
                for queue in watch.queues:
                    queue.put_nowait(snapshot)
            watch.snapshot = snapshot
        if snapshot.status.is_terminal:
            for future in watch.futures:
                if not future.done():
                    future.set_result(snapshot)
            self._drop(watch, finished=True)
        elif watch.idle:
            self._drop(watch)  # only a fetch wanted it
        else:
            self._schedule(watch)
        for forecast in woken:
            other = self._entries.get(forecast.task_id)
            if other is not None and other.forecast is forecast and other.seq != -1:
                self._schedule(other)

    def _resolve_fetches(self, watch: _Watch, result: TaskSnapshot | BaseException) -> None:
        fetches, watch.fetches = watch.fetches, ()
        for future in fetches:
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    def _fail(self, watch: _Watch, exc: BaseException) -> None:
        for future in watch.futures:
            if not future.done():
                future.set_exception(exc)
        for queue in watch.queues:
            queue.put_nowait(exc)
        self._resolve_fetches(watch, exc)
        self._drop(watch)

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
        for watch in list(self._entries.values()):
            self._fail(watch, closed)
        self._heap.clear()
        self._ready.clear()
