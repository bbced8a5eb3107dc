"""One checker per task: the leases a process wants, holds and gives back in Redis.

A lease is a key per task (``SET NX PX``) naming the process that may check it; its holder
renews it every third of its life (``_redis.LEASE_TTL``) and deletes it when nobody there
waits any more (both by script, and only if it is still its own). When the holder dies the
lease lapses and another process takes over within its life. The same round trip counts
the processes alive (``peers``), which the budget divides its cap by when Redis is lost.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from redis.asyncio import Redis

__all__ = ["PEERS_TTL", "Leases"]

PEERS_TTL = 10.0
"""Seconds a process counts as alive after it last said so."""

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


class Leases:
    """The leases of one process: the tasks it watches, those it holds, those to release."""

    __slots__ = ("_held", "_key", "_me", "_redis", "_release", "_released", "_renew", "watched")

    def __init__(self, redis: Redis, key: Callable[..., str], me: str) -> None:
        self._redis = redis
        self._key = key
        self._me = me
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)
        self.watched: set[str] = set()
        """The tasks someone in this process awaits."""
        self._held: set[str] = set()
        self._released: set[str] = set()

    def __len__(self) -> int:
        return len(self._held)

    def holds(self, task_id: str) -> bool:
        """True if this process holds the lease of ``task_id``."""
        return task_id in self._held

    def watch(self, task_id: str) -> None:
        """Want the lease of ``task_id`` (claimed at the next :meth:`refresh`)."""
        self.watched.add(task_id)
        self._released.discard(task_id)

    def unwatch(self, task_id: str) -> bool:
        """Want it no more; True if it is held, so the next :meth:`refresh` releases it."""
        self.watched.discard(task_id)
        if task_id not in self._held:
            return False
        self._held.discard(task_id)
        self._released.add(task_id)
        return True

    def forget(self) -> None:
        """Hold nothing any more (Redis was lost: the leases lapse on their own)."""
        self._held.clear()

    async def refresh(self, life: float) -> tuple[list[str], int]:
        """Release the unwanted, renew the held, claim the wanted (each lease to live
        ``life`` seconds) and say this process is alive; the tasks newly claimed, and how
        many processes are alive."""
        ttl = int(life * 1000)
        released, self._released = list(self._released), set()
        if released:
            await self._release(keys=[self._key("lease", t) for t in released], args=[self._me])
        held = list(self._held)
        if held:
            keys = [self._key("lease", t) for t in held]
            renewed = {held[i - 1] for i in await self._renew(keys=keys, args=[self._me, ttl])}
            self._held &= renewed | (self._held - set(held))
        wanted = [t for t in self.watched if t not in self._held]
        async with self._redis.pipeline(transaction=False) as pipe:
            for task_id in wanted:
                pipe.set(self._key("lease", task_id), self._me, nx=True, px=ttl)
            pipe.zadd(self._key("peers"), {self._me: time.time()})
            pipe.zremrangebyscore(self._key("peers"), "-inf", time.time() - PEERS_TTL)
            pipe.zcard(self._key("peers"))
            pipe.pexpire(self._key("peers"), int(PEERS_TTL * 1000))
            results = await pipe.execute()
        claimed = []
        for task_id, taken in zip(wanted, results, strict=False):
            if taken and task_id in self.watched:
                self._held.add(task_id)
                claimed.append(task_id)
        return claimed, max(1, int(results[-2]))

    async def release_all(self) -> None:
        """Give back every lease held (closing)."""
        if self._held:
            keys = [self._key("lease", t) for t in self._held]
            await self._release(keys=keys, args=[self._me])
        self._held.clear()
