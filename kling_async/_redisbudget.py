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

import attrs
from redis.commands.core import AsyncScript

from ._ratelimit import SEND_JITTER, RateLimiter, Ticket
from ._redisleases import PEERS_TTL

__all__ = [
    "ALONE_FOR",
    "BUDGET_KEYS",
    "EPOCH_TTL",
    "GRANT_LIFE",
    "HOLD",
    "RETRY_AFTER_ERROR",
    "TAKE",
    "WINDOW",
    "BudgetHost",
    "Grant",
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
ALONE_FOR = 3 * 1.0
"""Seconds a process's claim to its share (see :class:`SharedBudget`) lasts in Redis unless
renewed; it renews it every ``RETRY_AFTER_ERROR`` while it keeps to its share."""
HOLD = WINDOW + GRANT_LIFE
"""Seconds the shared budget grants nothing once a process found its window lost: what was
sent before (counted in the lost window, or by processes keeping their share) is then out
of every 1 s window at the server before any new grant leaves."""

TAKE = """
local now = redis.call('TIME')
local t = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local window, limit, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local epoch_ttl, hold, known = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local me, alone, peers_ttl = ARGV[8], tonumber(ARGV[9]), tonumber(ARGV[10])
local epoch = redis.call('GET', KEYS[3])
if not epoch then
  epoch = ARGV[7]
  redis.call('SET', KEYS[3], epoch, 'PX', epoch_ttl)
end
redis.call('PEXPIRE', KEYS[3], epoch_ttl)
local peers = math.max(1, redis.call('ZCOUNT', KEYS[6], t / 1000 - peers_ttl, '+inf'))
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', t)
if alone > 0 then
  redis.call('ZADD', KEYS[5], t + alone, me)
  redis.call('PEXPIRE', KEYS[5], alone * 2)
  return {0, epoch, peers}
end
redis.call('ZREM', KEYS[5], me)
if known ~= '' and known ~= epoch then
  redis.call('SET', KEYS[4], '1', 'NX', 'PX', hold)
end
local held = redis.call('PTTL', KEYS[4])
if held > 0 then
  return {-held, epoch, peers}
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', t - window)
for i = 11, #ARGV do
  local at = t - tonumber(ARGV[i])
  if at > t - window then
    redis.call('ZADD', KEYS[1], at, 'b' .. redis.call('INCR', KEYS[2]))
  end
end
local used = redis.call('ZCARD', KEYS[1]) + redis.call('ZCARD', KEYS[5]) * math.ceil(limit / peers)
local grant = math.min(want, limit - used)
local answer = grant
if grant <= 0 then
  local frees = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  answer = -math.max(1, (tonumber(frees[2]) or t) + window - t)
else
  local seq = redis.call('INCRBY', KEYS[2], grant)
  for i = 1, grant do
    redis.call('ZADD', KEYS[1], t, tostring(seq - i))
  end
end
redis.call('PEXPIRE', KEYS[1], window * 2)
redis.call('PEXPIRE', KEYS[2], window * 2)
return {answer, epoch, peers}
"""
"""Grant up to ``want`` sends now so that no ``window`` ms hold more than ``limit``, or
the -ms until one frees; and the budget's epoch and how many peers are alive. Grants are
stamped on Redis's clock; ``ARGV[11:]`` are sends of this process that Redis does not
know (ms ago), counted first. The shares of the processes keeping to their own
(``KEYS[5]``: a caller with ``alone`` > 0 claims its share for that many ms, and grants
itself nothing; any other call gives its claim back) are kept out of the grants. A caller
that knew another epoch (``ARGV[6]``) starts a hold of ``hold`` ms during which nothing is
granted; with no epoch at all, ``ARGV[7]`` starts one."""


BUDGET_KEYS = ("budget", "budget-seq", "budget-epoch", "budget-hold", "budget-alone", "peers")
"""The names of :data:`TAKE`'s keys (``KEYS[1..6]``) in the API key's namespace."""


@attrs.frozen
class Grant:
    """What :data:`TAKE` answered."""

    tokens: int
    """Sends granted now (> 0), or -ms until one frees (<= 0); 0 for a claimed share."""
    epoch: str
    peers: int
    """The processes alive sharing the key (at least 1)."""


async def take(
    script: AsyncScript,
    keys: list[str],
    max_rate: float,
    want: int,
    sent: list[float],
    *,
    epoch: str = "",
    me: str = "",
    alone: float = 0.0,
) -> Grant:
    """Run :data:`TAKE` on ``keys`` (:data:`BUDGET_KEYS`, named): up to ``want`` sends now,
    with ``sent`` this process's sends Redis does not know (seconds ago) and ``epoch`` the
    one it saw last ("" if none); or, with ``alone`` > 0, claim this process's share for
    that many seconds. RedisError if Redis failed."""
    got, seen, peers = await script(
        keys=keys,
        args=[
            int(WINDOW * 1000),
            max(1, math.floor(max_rate)),
            want,
            int(EPOCH_TTL * 1000),
            math.ceil(HOLD * 1000),
            epoch,
            secrets.token_hex(8),
            me,
            math.ceil(alone * 1000),
            PEERS_TTL,
            *(math.ceil(age * 1000) for age in sent),
        ],
    )
    return Grant(int(got), seen.decode() if isinstance(seen, bytes) else str(seen), int(peers))


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
        self, want: int, sent: list[float], epoch: str = "", alone: float = 0.0
    ) -> Grant | None:
        """Run :data:`TAKE` (see :func:`take`); None if Redis failed."""

    def wake_poller(self) -> None:
        """Wake the poller: a grant arrived (or Redis failed)."""


class SharedBudget:
    """The API key's budget: tokens granted by Redis in small batches, spent locally.

    A local :class:`RateLimiter` keeps this process's own pace (and its cut after a 429);
    Redis caps the sum over every process. A token is used within ``GRANT_LIFE`` of the
    moment it was asked for, or not at all.

    When Redis (or this process's loop) is too slow for a grant to stay usable, this
    process keeps to its *share* of the cap instead (the cap divided among the peers):
    it first claims the share in Redis, so the others are granted that much less, and
    sends on it only a ``WINDOW`` after the claim, once what the others were granted
    before it is out of every 1 s window at the server. It renews the claim while it keeps
    to its share, and goes back to shared tokens when Redis answers in time again; its
    first request then carries the sends it made on its own, so the shared window counts
    them. While Redis is out of reach altogether, each process keeps to its share as well
    (with nothing to claim it in). When the budget's window may have lost sends (its epoch
    key is gone: ``FLUSHALL``, a restart), Redis grants nothing for ``HOLD`` seconds, to
    anyone.
    """

    __slots__ = (
        "_alone",
        "_backfill",
        "_claim",
        "_coordinator",
        "_epoch",
        "_expires",
        "_local",
        "_peers",
        "_refill",
        "_retry_at",
        "_share_from",
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
        self._claim: asyncio.Task[None] | None = None
        self._alone = False
        self._share_from = math.inf  # when the claimed share may be sent on
        self._peers = 1
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
        if coordinator.degraded:  # Redis out of reach: keep the share, nothing to claim it in
            self._backfill = True
            local.max_rate = coordinator.max_rate / max(1, coordinator.peers)
            return local.reserve(now)
        if self._alone:
            self._backfill = True
            if now >= self._retry_at and not self._busy:
                self._start_claim(now)  # renew the claim, and see whether Redis is quick again
            if now < self._share_from:
                return max(GRANT_LIFE, min(self._share_from, self._retry_at) - now)
            local.max_rate = coordinator.max_rate / max(self._peers, coordinator.peers)
            return local.reserve(now)
        local.max_rate = coordinator.max_rate
        if self._tokens and now > self._expires:
            self._tokens = 0  # too late to send them: Redis's window counted them long ago
        if not self._tokens:
            if not self._busy:
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
    def _busy(self) -> bool:
        """A request to Redis is on its way (a refill or a claim)."""
        return any(task is not None and not task.done() for task in (self._refill, self._claim))

    def _start_refill(self, now: float) -> None:
        want = max(1, math.ceil(self._local.rate(now) * GRANT_LIFE / 2))
        sent = self._local.recent(now, WINDOW) if self._backfill else []
        self._refill = asyncio.get_running_loop().create_task(self._take(want, sent))

    def _start_claim(self, now: float) -> None:
        self._retry_at = now + RETRY_AFTER_ERROR
        self._claim = asyncio.get_running_loop().create_task(self._claim_share())

    def _fall_back(self, now: float) -> None:
        self._tokens = 0
        if self._alone:
            return
        self._alone = True
        self._share_from = math.inf
        self.fallbacks += 1
        logger.info("Redis budget grants arrive too late: keeping this process's share")
        if not (self._claim is not None and not self._claim.done()):
            self._start_claim(now)

    async def _claim_share(self) -> None:
        """Claim (or renew the claim to) this process's share in Redis; if Redis answered
        in time, go back to shared tokens instead (the next refill gives the claim back)."""
        coordinator = self._coordinator
        loop = asyncio.get_running_loop()
        asked = loop.time()
        answer = await coordinator.take_budget(0, [], self._epoch, alone=ALONE_FOR)
        now = loop.time()
        try:
            if answer is None:  # Redis failed: the coordinator is degraded now
                return
            self._epoch, self._peers = answer.epoch, answer.peers
            if now - asked <= GRANT_LIFE and self._share_from < math.inf:
                self._alone = False  # quick again: back to shared tokens
            elif self._share_from == math.inf:
                self._share_from = now + WINDOW  # the others' grants from before the claim age out
        finally:
            coordinator.wake_poller()

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
            self._epoch, self._peers = answer.epoch, answer.peers
            if sent:
                self._backfill = False
            if now - asked > GRANT_LIFE:
                self._fall_back(now)  # every token it granted is already too old
                return
            got = answer.tokens
            if got > 0:
                self._tokens, self._expires = got, asked + GRANT_LIFE
            else:
                self._wait_until = now - got / 1000
        finally:
            coordinator.wake_poller()

    async def close(self) -> None:
        for task in (self._refill, self._claim):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
