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

When Redis cannot be reached, every session falls back to polling on its own (one warning,
its budget divided among the processes it last knew of) and rejoins when Redis is back.
Nothing here is needed by one process alone: ``LocalCoordinator`` is the default.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import secrets
import time
from collections.abc import Hashable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from ._config import PollPolicy
from ._convert import converter, parse_snapshot
from ._coordination import Budget, CoordinatorSink, Sighting
from ._exceptions import KlingError
from ._ratelimit import SEND_JITTER, RateLimiter, Ticket
from ._waiting import stop_if_cancelled, wait_event

__all__ = ["LEASE_TTL", "RedisCoordinator", "namespace"]

logger = logging.getLogger("kling_async")

LEASE_TTL = 3.0
"""Seconds a task's lease lives unless renewed (its holder renews it every third)."""
SNAPSHOT_TTL = 3600.0
"""Seconds a shared snapshot is kept after its last update."""
LESSON_TTL = 86400.0
GRANT_LIFE = 0.05
"""Seconds from sending a budget request (``_TAKE``) to Redis until the tokens it grants
must have left: Redis stamps them somewhere in between, so a request sent within this
life leaves at most this long after its stamp. A Redis slower than this to answer grants
nothing usable: the budget then keeps this process's share (see :class:`_SharedBudget`)."""
WINDOW = 1.0 + GRANT_LIFE + SEND_JITTER
"""The shared budget's sliding window on Redis's clock: 1 s, the life of a grant and the
spread of delays to the server (``_ratelimit``)."""
PEERS_TTL = 10.0
RETRY_AFTER_ERROR = 1.0
"""Seconds between attempts to reach Redis again after it failed (or answered too slowly)."""
EPOCH_TTL = 3600.0
"""Seconds the budget's epoch outlives its last use. The epoch names one unbroken life of
the budget's window: a process that finds another epoch than the one it last saw knows the
window lost sends (``FLUSHALL``, a restart, or an hour idle)."""
HOLD = WINDOW + GRANT_LIFE
"""Seconds the shared budget grants nothing once a process found its window lost: what was
sent before (counted in the lost window, or by processes keeping their share) is then out
of every 1 s window at the server before any new grant leaves."""

_TAKE = """
local now = redis.call('TIME')
local t = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local window, limit, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local epoch_ttl, hold, known = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local epoch = redis.call('GET', KEYS[3])
if not epoch then
  epoch = ARGV[7]
  redis.call('SET', KEYS[3], epoch, 'PX', epoch_ttl)
end
redis.call('PEXPIRE', KEYS[3], epoch_ttl)
if known ~= '' and known ~= epoch then
  redis.call('SET', KEYS[4], '1', 'NX', 'PX', hold)
end
local held = redis.call('PTTL', KEYS[4])
if held > 0 then
  return {-held, epoch}
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', t - window)
for i = 8, #ARGV do
  local at = t - tonumber(ARGV[i])
  if at > t - window then
    redis.call('ZADD', KEYS[1], at, 'b' .. redis.call('INCR', KEYS[2]))
  end
end
local used = redis.call('ZCARD', KEYS[1])
local grant = math.min(want, limit - used)
local answer = grant
if grant <= 0 then
  local frees = redis.call('ZRANGE', KEYS[1], used - limit, used - limit, 'WITHSCORES')
  answer = -math.max(1, tonumber(frees[2]) + window - t)
else
  local seq = redis.call('INCRBY', KEYS[2], grant)
  for i = 1, grant do
    redis.call('ZADD', KEYS[1], t, tostring(seq - i))
  end
end
redis.call('PEXPIRE', KEYS[1], window * 2)
redis.call('PEXPIRE', KEYS[2], window * 2)
return {answer, epoch}
"""
"""Grant up to ``want`` sends now so that no ``window`` ms hold more than ``limit``, or
the -ms until one frees, and the budget's epoch. Grants are stamped on Redis's clock;
``ARGV[8:]`` are sends of this process that Redis does not know (ms ago), counted first.
A caller that knew another epoch (``ARGV[6]``) starts a hold of ``hold`` ms during which
nothing is granted; with no epoch at all, ``ARGV[7]`` starts one."""

_RENEW = """
local renewed = {}
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
    renewed[#renewed + 1] = i
  end
end
return renewed
"""
"""Extend the leases this process still holds; the 1-based indexes of those renewed."""

_RELEASE = """
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then redis.call('DEL', key) end
end
return 0
"""


def namespace(api_key: str) -> str:
    """The prefix of every Redis key for an API key: a hash, never the key itself."""
    return "kling:" + hashlib.sha256(api_key.encode()).hexdigest()[:20]


def _wall_offset() -> float:
    """Wall-clock minus monotonic seconds: turns a local monotonic time into a shared one."""
    return time.time() - time.monotonic()


def _kind_json(kind: Hashable | None) -> Any:
    return list(kind) if isinstance(kind, tuple) else kind


def _kind_of(value: Any) -> Hashable | None:
    return tuple(value) if isinstance(value, list) else value


class _SharedBudget:
    """The API key's budget: tokens granted by Redis in small batches, spent locally.

    A local :class:`RateLimiter` keeps this process's own pace (and its cut after a 429);
    Redis caps the sum over every process. A token is used within ``GRANT_LIFE`` of the
    moment it was asked for, or not at all. This process keeps to its *share* (the cap
    divided among the processes last seen, on the local limiter alone) while Redis is out
    of reach, and for ``RETRY_AFTER_ERROR`` after Redis answered, or this process's loop
    sent, too slowly for a grant to stay usable. Back on shared tokens, its first request
    to Redis carries the sends it made on its own, so the shared window counts them. When
    the budget's window may have lost sends (its epoch key is gone: ``FLUSHALL``, a
    restart: the epoch it last saw is gone), Redis grants nothing for ``HOLD`` seconds, to
    anyone.
    """

    __slots__ = (
        "_alone",
        "_backfill",
        "_coordinator",
        "_epoch",
        "_expires",
        "_local",
        "_refill",
        "_retry_at",
        "_tokens",
        "_wait_until",
        "fallbacks",
    )

    def __init__(self, coordinator: RedisCoordinator, rate: float) -> None:
        self._coordinator = coordinator
        self._local = RateLimiter(rate)
        self._tokens = 0
        self._expires = -math.inf
        self._wait_until = 0.0
        self._refill: asyncio.Task[None] | None = None
        self._alone = False
        self._retry_at = 0.0
        self._backfill = False
        self._epoch = ""
        self.fallbacks = 0
        """Times this budget fell back to its share because grants came too late."""

    def rate(self, now: float) -> float:
        return self._local.rate(now)

    def congested(self, now: float) -> bool:
        return self._local.congested(now)

    def relieved(self, sent: float) -> None:
        self._local.relieved(sent)

    @property
    def alone(self) -> bool:
        """True while this process keeps to its share instead of shared tokens."""
        return self._alone or self._coordinator.degraded

    def reserve(self, now: float) -> Ticket | float:
        coordinator = self._coordinator
        local = self._local
        if self.alone:
            self._backfill = True
            if not coordinator.degraded and now >= self._retry_at and not self._refilling:
                self._start_refill(now)  # try shared tokens again, meanwhile keep the share
            local.max_rate = coordinator.max_rate / max(1, coordinator.peers)
            return local.reserve(now)
        local.max_rate = coordinator.max_rate
        if self._tokens and now > self._expires:
            self._tokens = 0  # too late to send them: Redis's window counted them long ago
        if not self._tokens:
            if not self._refilling:
                self._start_refill(now)
            return max(GRANT_LIFE, self._wait_until - now)  # the answer wakes the poller
        ticket = local.reserve(now)
        if isinstance(ticket, float):
            return ticket
        self._tokens -= 1
        ticket.expires, ticket.renew = self._expires, self.renew
        return ticket

    def renew(self, now: float) -> float | None:
        """A ticket's token expired before it could leave: a fresh token's expiry, or None
        (and this process keeps to its share for a while: its loop is too slow for them)."""
        if not self._alone and self._tokens and now <= self._expires:
            self._tokens -= 1
            return self._expires
        self._fall_back(now)
        return None

    @property
    def _refilling(self) -> bool:
        return self._refill is not None and not self._refill.done()

    def _start_refill(self, now: float) -> None:
        want = max(1, math.ceil(self._local.rate(now) * GRANT_LIFE / 2))
        sent = self._local.recent(now, WINDOW) if self._backfill else []
        self._refill = asyncio.get_running_loop().create_task(self._take(want, sent))

    def _fall_back(self, now: float) -> None:
        if not self._alone:
            self._alone = True
            self.fallbacks += 1
            logger.info("Redis budget grants arrive too late: keeping this process's share")
        self._tokens = 0
        self._retry_at = now + RETRY_AFTER_ERROR

    async def _take(self, want: int, sent: list[float]) -> None:
        coordinator = self._coordinator
        loop = asyncio.get_running_loop()
        asked = loop.time()
        answer = await coordinator.take_budget(want, sent, self._epoch)
        now = loop.time()
        try:
            if answer is None:  # Redis failed: the coordinator is degraded now
                self._wait_until = now + RETRY_AFTER_ERROR
                return
            got, self._epoch = answer
            if now - asked > GRANT_LIFE:
                self._fall_back(now)  # every token it granted is already too old
                return
            if sent:
                self._backfill = False
            self._alone = False
            if got > 0:
                self._tokens, self._expires = got, asked + GRANT_LIFE
            else:
                self._wait_until = now - got / 1000
        finally:
            coordinator.wake_poller()

    async def close(self) -> None:
        if self._refill is not None and not self._refill.done():
            self._refill.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refill


class RedisCoordinator:
    """Coordinates the sessions that share one Redis and one API key."""

    def __init__(self, redis: str | Redis, api_key: str, policy: PollPolicy) -> None:
        self._owned = isinstance(redis, str)
        self._redis: Redis = Redis.from_url(redis) if isinstance(redis, str) else redis
        self._ns = namespace(api_key)
        self._channel = self._ns + ":events"
        self._me = secrets.token_hex(8)
        self.max_rate = policy.max_requests_per_second
        self._budget = _SharedBudget(self, self.max_rate)
        self._take = self._redis.register_script(_TAKE)
        self._renew = self._redis.register_script(_RENEW)
        self._release = self._redis.register_script(_RELEASE)
        self._sink: CoordinatorSink | None = None
        self._watched: set[str] = set()
        self._held: set[str] = set()
        self._released: set[str] = set()
        self._outbox: list[tuple[str, Any]] = []
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self.degraded = False
        self._warned = False
        self.peers = 1

    def __repr__(self) -> str:
        state = "degraded" if self.degraded else "joined"
        return f"<RedisCoordinator {self._ns} {state}, {len(self._held)} leases>"

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
        self._watched.add(task_id)
        self._released.discard(task_id)
        self._start()
        self.wake()  # claim it now, not at the next renewal

    def unwatch(self, task_id: str) -> None:
        self._watched.discard(task_id)
        if task_id in self._held:
            self._held.discard(task_id)
            self._released.add(task_id)
            self.wake()

    def may_check(self, task_id: str) -> bool:
        return self.degraded or task_id in self._held

    async def shared(self, task_id: str) -> Sighting | None:
        if self.degraded:
            return None
        try:
            raw = await self._redis.get(self._key("snap", task_id))
        except RedisError as exc:
            self._lost(exc)
            return None
        return self._sighting(raw)

    def saw(self, task_id: str, sighting: Sighting) -> None:
        offset = _wall_offset()
        message = {
            "t": "snap",
            "id": task_id,
            "s": converter.unstructure(sighting.snapshot),
            "sent": sighting.sent + offset,
            "received": sighting.received + offset,
        }
        self._send("snap", message)

    def paused(self, seconds: float) -> None:
        if math.isfinite(seconds) and seconds > 0:
            self._send("pause", {"t": "pause", "seconds": seconds})

    def learned(self, kind: Hashable | None, name: str, value: float) -> None:
        self._send("lesson", {"t": "lesson", "kind": _kind_json(kind), "name": name, "v": value})

    def wake(self) -> None:
        """Run the maintenance loop now (flush, claim, release)."""
        self._wake.set()

    def wake_poller(self) -> None:
        if self._sink is not None:
            self._sink.wake()

    def _send(self, what: str, message: dict[str, Any]) -> None:
        if self.degraded:
            return
        message["from"] = self._me
        self._outbox.append((what, message))
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
        self, want: int, sent: list[float], epoch: str = ""
    ) -> tuple[int, str] | None:
        """Up to ``want`` sends granted now (> 0) or -ms until one frees (<= 0), and the
        budget's epoch; ``sent`` are this process's sends Redis does not know (seconds ago),
        ``epoch`` the one it saw last ("" if none). None if Redis failed."""
        keys = ("budget", "budget-seq", "budget-epoch", "budget-hold")
        try:
            got, seen = await self._take(
                keys=[self._key(key) for key in keys],
                args=[
                    int(WINDOW * 1000),
                    max(1, math.floor(self.max_rate)),
                    want,
                    int(EPOCH_TTL * 1000),
                    math.ceil(HOLD * 1000),
                    epoch,
                    secrets.token_hex(8),
                    *(math.ceil(age * 1000) for age in sent),
                ],
            )
        except RedisError as exc:
            self._lost(exc)
            return None
        return int(got), seen.decode() if isinstance(seen, bytes) else str(seen)

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
                await self._leases()
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
            for what, message in outbox:
                payload = json.dumps(message, separators=(",", ":"))
                if what == "snap":
                    key = self._key("snap", message["id"])
                    pipe.set(key, payload, px=int(SNAPSHOT_TTL * 1000))
                elif what == "lesson":
                    key = self._key("lessons")
                    pipe.rpush(key, payload)
                    pipe.ltrim(key, -2048, -1)
                    pipe.pexpire(key, int(LESSON_TTL * 1000))
                pipe.publish(self._channel, payload)
            await pipe.execute()
        del self._outbox[: len(outbox)]

    async def _leases(self) -> None:
        ttl = int(LEASE_TTL * 1000)
        released, self._released = list(self._released), set()
        if released:
            await self._release(keys=[self._key("lease", t) for t in released], args=[self._me])
        held = list(self._held)
        if held:
            keys = [self._key("lease", t) for t in held]
            renewed = {held[i - 1] for i in await self._renew(keys=keys, args=[self._me, ttl])}
            self._held &= renewed | (self._held - set(held))
        wanted = [t for t in self._watched if t not in self._held]
        async with self._redis.pipeline(transaction=False) as pipe:
            for task_id in wanted:
                pipe.set(self._key("lease", task_id), self._me, nx=True, px=ttl)
            pipe.zadd(self._key("peers"), {self._me: time.time()})
            pipe.zremrangebyscore(self._key("peers"), "-inf", time.time() - PEERS_TTL)
            pipe.zcard(self._key("peers"))
            pipe.pexpire(self._key("peers"), int(PEERS_TTL * 1000))
            results = await pipe.execute()
        self.peers = max(1, int(results[-2]))
        for task_id, taken in zip(wanted, results, strict=False):
            if taken and task_id in self._watched:
                self._held.add(task_id)
                if self._sink is not None:
                    self._sink.on_claim(task_id)

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
            message = json.loads(data)
            if sink is None or (message.get("from") == self._me and not own_too):
                return

            kind = message.get("t")
            if kind == "snap" and message.get("id") in self._watched:
                sighting = self._sighting(data)
                if sighting is not None:
                    sink.on_sighting(message["id"], sighting)
            elif kind == "pause":
                sink.on_pause(min(float(message["seconds"]), 3600.0))
            elif kind == "lesson":
                sink.on_lesson(_kind_of(message["kind"]), str(message["name"]), float(message["v"]))
        except (ValueError, TypeError, KeyError, KlingError):
            logger.warning("ignored an unreadable coordination message")
        except Exception:  # whatever the sink does, the listener must go on
            logger.exception("unexpected error handling a coordination message")

    def _sighting(self, raw: Any) -> Sighting | None:
        """A stored or published sighting, on this process's clock."""
        if raw is None:
            return None
        try:
            message = json.loads(raw)
            snapshot = parse_snapshot({"data": message["s"]}, message["id"])
            offset = _wall_offset()
            return Sighting(snapshot, message["sent"] - offset, message["received"] - offset)
        except (ValueError, TypeError, KeyError, KlingError):
            logger.warning("ignored an unreadable shared snapshot")
            return None

    # -- losing and finding Redis --------------------------------------------------------

    def _lost(self, exc: BaseException) -> None:
        if not self.degraded:
            self.degraded = True
            self._held.clear()
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
                    if self._held:
                        keys = [self._key("lease", t) for t in self._held]
                        await self._release(keys=keys, args=[self._me])
        self._held.clear()
        if self._owned:
            with contextlib.suppress(RedisError, OSError):
                await self._redis.aclose()
