"""The API key's rate budget across processes: tokens granted by Redis, spent locally.

An atomic script (:data:`TAKE`) keeps a sliding window of sends on Redis's clock, so no
``WINDOW`` holds more than ``PollPolicy.max_requests_per_second`` across every process
sharing the key; each process asks for a few tokens at a time and spends them through its
own :class:`RateLimiter` (:class:`SharedBudget`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
from typing import Protocol

from redis.commands.core import AsyncScript

from ._ratelimit import SEND_JITTER, RateLimiter, Ticket

__all__ = [
    "BUDGET_KEYS",
    "EPOCH_TTL",
    "GRANT_LIFE",
    "HOLD",
    "RETRY_AFTER_ERROR",
    "TAKE",
    "WINDOW",
    "BudgetHost",
    "SharedBudget",
    "take",
]

logger = logging.getLogger("kling_async")

GRANT_LIFE = 0.05
"""Seconds from sending a budget request (``TAKE``) to Redis until the tokens it grants
must have left: Redis stamps them somewhere in between, so a request sent within this
life leaves at most this long after its stamp. A Redis slower than this to answer grants
nothing usable: the budget then keeps this process's share (see :class:`SharedBudget`)."""
WINDOW = 1.0 + GRANT_LIFE + SEND_JITTER
"""The shared budget's sliding window on Redis's clock: 1 s, the life of a grant and the
spread of delays to the server (``_ratelimit``)."""
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

TAKE = """
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


BUDGET_KEYS = ("budget", "budget-seq", "budget-epoch", "budget-hold")
"""The names of :data:`TAKE`'s keys (``KEYS[1..4]``) in the API key's namespace."""


async def take(
    script: AsyncScript,
    keys: list[str],
    max_rate: float,
    want: int,
    sent: list[float],
    epoch: str = "",
) -> tuple[int, str]:
    """Up to ``want`` sends granted now (> 0) or -ms until one frees (<= 0), and the
    budget's epoch, by :data:`TAKE` on ``keys`` (:data:`BUDGET_KEYS`, named); ``sent`` are
    this process's sends Redis does not know (seconds ago), ``epoch`` the one it saw last
    ("" if none). RedisError if Redis failed."""
    got, seen = await script(
        keys=keys,
        args=[
            int(WINDOW * 1000),
            max(1, math.floor(max_rate)),
            want,
            int(EPOCH_TTL * 1000),
            math.ceil(HOLD * 1000),
            epoch,
            secrets.token_hex(8),
            *(math.ceil(age * 1000) for age in sent),
        ],
    )
    return int(got), seen.decode() if isinstance(seen, bytes) else str(seen)


class BudgetHost(Protocol):
    """What the budget needs of the coordinator it belongs to."""

    max_rate: float
    """The API key's cap, in requests per second."""
    peers: int
    """The processes last seen sharing the key."""

    @property
    def degraded(self) -> bool:
        """True while Redis is out of reach."""

    async def take_budget(
        self, want: int, sent: list[float], epoch: str = ""
    ) -> tuple[int, str] | None:
        """Run :data:`TAKE`: tokens granted (> 0) or -ms until one frees, and the epoch."""

    def wake_poller(self) -> None:
        """Wake the poller: a grant arrived (or Redis failed)."""


class SharedBudget:
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

    def __init__(self, coordinator: BudgetHost, rate: float) -> None:
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
