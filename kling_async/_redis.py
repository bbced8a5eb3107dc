"""Many processes, one poll per task: the Redis coordinator (the ``[redis]`` extra).

Sessions that share a Redis and an API key coordinate through it (``KlingSession(...,
redis="redis://host:6379/0")``, or ``$KLING_REDIS_URL``):

* **one checker per task**: a lease per task (``SET NX PX``), renewed while held and
  released when nobody here waits any more; when its holder dies, the lease lapses and
  another process takes over within ``LEASE_TTL`` seconds;
* **every sighting shared**: each snapshot a check finds is stored per task and published
  on one channel; processes awaiting that task wake from it, and a process that does not
  hold the lease reads the stored one instead of asking the API (``session.task(id)``
  works in any process);
* **one budget per API key**: ``PollPolicy.max_requests_per_second`` is enforced across
  all processes by an atomic script over a sliding window on the server's clock; a 429
  pause is shared too;
* **shared lessons**: what the schedule learns is published to the others;
* keys are named from a hash of the API key (never the key) and all expire.

The parts: ``_redisleases`` (the leases and the count of processes alive),
``_redisbudget`` (the shared budget and its script), ``_messages`` (what the sessions tell
each other, and its wire); this module ties them to the poller's ``Coordinator`` seam.

When Redis cannot be reached, every session falls back to polling on its own (one warning,
its budget divided among the processes it last knew of) and rejoins when Redis is back.
Nothing here is needed by one process alone: ``LocalCoordinator`` is the default.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import secrets
from collections.abc import Callable, Hashable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from ._config import PollPolicy
from ._coordination import Budget, CoordinatorSink, Sighting
from ._exceptions import KlingError
from ._messages import KEPT, Kept, Lesson, Message, Pause, Snap, decode, encode
from ._redisbudget import BUDGET_KEYS, RETRY_AFTER_ERROR, TAKE, Grant, SharedBudget, take
from ._redisleases import Leases
from ._waiting import stop_if_cancelled, wait_event

__all__ = ["LEASE_TTL", "RedisCoordinator", "namespace"]

logger = logging.getLogger("kling_async")

LEASE_TTL = 3.0
"""Seconds a task's lease lives unless renewed (its holder renews it every third)."""
SNAPSHOT_TTL = 3600.0
"""Seconds a shared snapshot is kept after its last update."""
LESSON_TTL = 86400.0


def namespace(api_key: str) -> str:
    """The prefix of every Redis key for an API key: a hash, never the key itself."""
    return "kling:" + hashlib.sha256(api_key.encode()).hexdigest()[:20]


def _keep(pipe: Pipeline, key: Callable[..., str], message: Message, payload: str) -> None:
    """Keep ``message`` in Redis as its kind's row of ``KEPT`` says, besides publishing it."""
    match KEPT[message.kind]:
        case Kept.LATEST if isinstance(message, Snap):
            pipe.set(key("snap", message.task_id), payload, px=int(SNAPSHOT_TTL * 1000))
        case Kept.LOG:
            pipe.rpush(key("lessons"), payload)
            pipe.ltrim(key("lessons"), -2048, -1)
            pipe.pexpire(key("lessons"), int(LESSON_TTL * 1000))


class RedisCoordinator:
    """Coordinates the sessions that share one Redis and one API key."""

    def __init__(self, redis: str | Redis, api_key: str, policy: PollPolicy) -> None:
        self._owned = isinstance(redis, str)
        self._redis: Redis = Redis.from_url(redis) if isinstance(redis, str) else redis
        self._ns = namespace(api_key)
        self._channel = self._ns + ":events"
        self._me = secrets.token_hex(8)
        self.max_rate = policy.max_requests_per_second
        self._budget = SharedBudget(self, self.max_rate)
        self._take = self._redis.register_script(TAKE)
        self._leases = Leases(self._redis, self._key, self._me)
        self._sink: CoordinatorSink | None = None
        self._outbox: list[tuple[Message, str]] = []  # and its payload
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self.degraded = False
        self._warned = False
        self.peers = 1

    def __repr__(self) -> str:
        state = "degraded" if self.degraded else "joined"
        return f"<RedisCoordinator {self._ns} {state}, {len(self._leases)} leases>"

    @property
    def budget(self) -> Budget:
        return self._budget

    @property
    def shared_now(self) -> bool:
        return not self.degraded

    def _key(self, kind: str, task_id: str = "") -> str:
        return f"{self._ns}:{kind}:{task_id}" if task_id else f"{self._ns}:{kind}"

    # -- what the poller asks --------------------------------------------------------------

    def bind(self, sink: CoordinatorSink) -> None:
        self._sink = sink

    def watch(self, task_id: str) -> None:
        self._leases.watch(task_id)
        self._start()
        self.wake()  # claim it now, not at the next renewal

    def unwatch(self, task_id: str) -> None:
        if self._leases.unwatch(task_id):
            self.wake()

    def may_check(self, task_id: str) -> bool:
        return self.degraded or self._leases.holds(task_id)

    async def shared(self, task_id: str) -> Sighting | None:
        if self.degraded:
            return None
        try:
            raw = await self._redis.get(self._key("snap", task_id))
        except RedisError as exc:
            self._lost(exc)
            return None
        return None if raw is None else self._sighting(raw)

    def saw(self, task_id: str, sighting: Sighting) -> None:
        self._send(Snap.of(task_id, sighting))

    def paused(self, seconds: float) -> None:
        if math.isfinite(seconds) and seconds > 0:
            self._send(Pause(seconds))

    def learned(self, kind: Hashable | None, name: str, value: float) -> None:
        self._send(Lesson(kind, name, value))

    def wake(self) -> None:
        """Run the maintenance loop now (flush, claim, release)."""
        self._wake.set()

    def wake_poller(self) -> None:
        if self._sink is not None:
            self._sink.wake()

    def _send(self, message: Message) -> None:
        if self.degraded:
            return
        self._outbox.append((message, encode(message, self._me)))
        self._start()
        self.wake()

    # -- the background ----------------------------------------------------------------

    def _start(self) -> None:
        if self._tasks or self._closing:
            return
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._maintain(), name="kling_async-redis"),
            loop.create_task(self._listen(), name="kling_async-redis-events"),
        ]

    async def take_budget(
        self, want: int, sent: list[float], epoch: str = "", alone: float = 0.0
    ) -> Grant | None:
        """What ``_redisbudget.take`` grants (or, with ``alone``, this process's claim to
        its share); None if Redis failed."""
        keys = [self._key(key) for key in BUDGET_KEYS]
        try:
            return await take(
                self._take, keys, self.max_rate, want, sent, epoch=epoch, me=self._me, alone=alone
            )
        except RedisError as exc:
            self._lost(exc)
            return None

    async def _maintain(self) -> None:
        """Every third of a lease's life (or when woken): flush what to share, renew and
        take leases, release the unwanted, count the peers; reconnect when Redis is back.
        Until close(), which also cancels it: redis-py can swallow a cancellation that
        lands mid-command (seen with 8.1 under load; cf. redis/redis-py#2028)."""
        loaded = False
        while not self._closing:
            try:
                if self.degraded:
                    # Connections idle in the pool since before the outage are dead: each
                    # would fail once after the rejoin and send this session back alone.
                    await self._redis.connection_pool.disconnect(inuse_connections=False)
                    await self._redis.ping()
                    self._rejoined()
                if not loaded:
                    await self._load_lessons()
                    loaded = True
                await self._flush()
                claimed, self.peers = await self._leases.refresh(LEASE_TTL)
                for task_id in claimed:
                    if self._sink is not None:
                        self._sink.on_claim(task_id)
            except RedisError as exc:
                self._lost(exc)
            except Exception:  # a bug must not stop coordination: log it, go on
                logger.exception("unexpected error coordinating through Redis")
            self._wake.clear()
            delay = RETRY_AFTER_ERROR if self.degraded else LEASE_TTL / 3
            await wait_event(self._wake, delay)

    async def _flush(self) -> None:
        """Send what this session saw; kept until Redis has it (close sends the rest)."""
        outbox = self._outbox[:]
        if not outbox:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for message, payload in outbox:
                _keep(pipe, self._key, message, payload)
                pipe.publish(self._channel, payload)
            await pipe.execute()
        del self._outbox[: len(outbox)]

    async def _load_lessons(self) -> None:
        """Learn what the other sessions taught before this one joined."""
        for raw in await self._redis.lrange(self._key("lessons"), 0, -1):
            self._dispatch(raw, own_too=True)

    async def _listen(self) -> None:
        """Hand every message of the others to the poller; resubscribe after a failure
        (until close(), see :meth:`_maintain`)."""
        while not self._closing:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._channel)
                while not self._closing:
                    stop_if_cancelled()
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self._dispatch(message.get("data"))
            except RedisError as exc:
                self._lost(exc)
                await asyncio.sleep(RETRY_AFTER_ERROR)
            finally:
                with contextlib.suppress(RedisError, RuntimeError):
                    # typed from redis-py 8.2 on, untyped before: either way clean under --strict
                    await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]

    def _dispatch(self, data: Any, *, own_too: bool = False) -> None:
        sink = self._sink
        try:
            sender, message = decode(data)
            if sink is None or (sender == self._me and not own_too):
                return
            match message:
                case Snap() if message.task_id in self._leases.watched:
                    sighting = self._sighting(message)
                    if sighting is not None:
                        sink.on_sighting(message.task_id, sighting)
                case Pause():
                    sink.on_pause(min(message.seconds, 3600.0))
                case Lesson():
                    sink.on_lesson(message.task_kind, message.name, message.value)
        except (ValueError, TypeError, KeyError, KlingError):
            logger.warning("ignored an unreadable coordination message")
        except Exception:  # whatever the sink does, the listener must go on
            logger.exception("unexpected error handling a coordination message")

    def _sighting(self, message: Snap | bytes | str) -> Sighting | None:
        """A published (or stored: its payload) sighting, on this process's clock."""
        try:
            return (message if isinstance(message, Snap) else Snap.parse(message)).sighting()
        except (ValueError, TypeError, KeyError, KlingError):
            logger.warning("ignored an unreadable shared snapshot")
            return None

    # -- losing and finding Redis --------------------------------------------------------

    def _lost(self, exc: BaseException) -> None:
        if not self.degraded:
            self.degraded = True
            self._leases.forget()
            self._outbox.clear()
            if not self._warned:
                self._warned = True
                logger.warning(
                    "Redis unreachable (%s): polling on our own until it is back",
                    type(exc).__name__,
                )
            else:
                logger.info("lost Redis again (%s: %s)", type(exc).__name__, exc)

    def _rejoined(self) -> None:
        self.degraded = False
        logger.info("Redis reachable again: sharing polls with the other sessions")

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        # gather, not a suppressed await: a cancellation of close() itself still stops it
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._budget.close()
        if not self.degraded:  # share the last sightings and free the leases, briefly
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._flush()
                    await self._leases.release_all()
        self._leases.forget()
        if self._owned:
            with contextlib.suppress(RedisError, OSError):
                await self._redis.aclose()
