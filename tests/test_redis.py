"""Sessions sharing a Redis: one check per task, shared sightings, one budget, hashed keys,
and polling on their own while Redis is away (a real redis-server, sessions in-process)."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable

import pytest
from redis.asyncio import Redis

from kling_async import KlingSession, PollPolicy, TextToVideo
from kling_async._redis import RedisCoordinator, namespace
from kling_async._redisbudget import HOLD
from kling_async._redisleases import Leases
from kling_async.emulator import Emulator
from kling_async.testing import fast_config, session_for

KEY = "sk-redis-test-0123456789"
POLL = PollPolicy(min_interval=0.02, max_interval=0.3, max_requests_per_second=200)


async def eventually(condition: Callable[[], object], timeout: float = 5.0) -> bool:
    """Whether ``condition`` becomes true within ``timeout`` seconds (checked every 50 ms)."""
    for _ in range(int(timeout / 0.05)):
        if condition():
            return True
        await asyncio.sleep(0.05)
    return bool(condition())


def session_on(emu: Emulator, redis_url: str, **options: object) -> KlingSession:
    options.setdefault("poll", POLL)
    return session_for(emu, api_key=KEY, redis=redis_url, **options)


@pytest.mark.slow
async def test_a_task_awaited_by_two_sessions_is_checked_by_one(redis_server):
    """Two sessions awaiting the same tasks send the status requests of about one: one of
    them checks each task, the other wakes from what it saw."""
    async with Emulator(fast_config(time_scale=60.0)) as emu:
        async with (
            session_on(emu, redis_server.url) as first,
            session_on(emu, redis_server.url) as second,
        ):
            tasks = [await first.submit(TextToVideo(f"shared {i}")) for i in range(20)]
            mine = [asyncio.ensure_future(t.wait(timeout=20)) for t in tasks]
            theirs = [asyncio.ensure_future(second.task(t.id).wait(timeout=20)) for t in tasks]
            results = await asyncio.gather(*mine, *theirs)
            first_sent = first.poll_stats().status_requests
            second_sent = second.poll_stats().status_requests
    assert {r.task_id for r in results} == {t.id for t in tasks}
    assert min(first_sent, second_sent) <= 0.1 * max(first_sent, second_sent)
    assert emu.stats.status_calls_total == first_sent + second_sent


@pytest.mark.slow
async def test_a_session_reattaching_late_reads_the_shared_result(redis_server):
    """A session that re-attaches to a task another session saw end gets its result from
    Redis, without asking the API."""
    async with Emulator(fast_config(time_scale=200.0)) as emu:
        async with session_on(emu, redis_server.url) as first:
            task = await first.submit(TextToVideo("seen once"))
            await task.wait(timeout=10)
        calls = emu.stats.status_calls_total
        async with session_on(emu, redis_server.url) as later:
            result = await later.task(task.id).wait(timeout=10)
    assert result.task_id == task.id
    assert emu.stats.status_calls_total == calls


@pytest.mark.slow
async def test_the_rate_budget_is_the_api_keys_across_sessions(redis_server):
    """Three sessions capped at 10 requests/s send at most 10 in any 1 s window together."""
    policy = PollPolicy(min_interval=0.02, max_interval=0.1, max_requests_per_second=10)
    async with Emulator(fast_config(time_scale=200.0)) as emu:
        sessions = [session_on(emu, redis_server.url, poll=policy) for _ in range(3)]
        try:
            tasks = [
                [await s.submit(TextToVideo(f"budget {i} {j}")) for j in range(8)]
                for i, s in enumerate(sessions)
            ]
            await asyncio.gather(*(t.wait(timeout=30) for group in tasks for t in group))
        finally:
            for s in sessions:
                await s.close()
    assert 0 < emu.stats.max_status_per_second <= 10


@pytest.mark.slow
async def test_a_budget_whose_window_was_lost_grants_nothing_for_a_hold(redis_server):
    """Once a process finds the budget's window lost (Redis flushed or restarted: the epoch
    it saw is gone), no process is granted anything for a hold of a window and a grant's
    life: sends counted in the lost window, or made on a process's share, leave every 1 s
    window at the server before new grants do. A first use waits for nothing."""
    hold_ms = math.ceil(HOLD * 1000)
    coordinator = RedisCoordinator(redis_server.url, KEY, POLL)
    other = RedisCoordinator(redis_server.url, KEY, POLL)
    try:
        first = await coordinator.take_budget(5, [])
        assert first is not None and first.tokens == 5
        epoch = first.epoch
        again = await coordinator.take_budget(5, [], epoch)
        assert again is not None and (again.tokens, again.epoch) == (5, epoch)
        assert redis_server.command("FLUSHALL") == b"+OK"
        newcomer = await other.take_budget(1, [])  # knew no epoch: no reason to hold
        assert newcomer is not None and newcomer.tokens == 1 and newcomer.epoch != epoch
        held = await coordinator.take_budget(5, [], epoch)  # knew the lost one: hold
        assert held is not None and -hold_ms <= held.tokens < -0.9 * hold_ms
        also = await other.take_budget(5, [], newcomer.epoch)  # the hold is everyone's
        assert also is not None and also.tokens < 0
        await asyncio.sleep(hold_ms / 1000)
        after = await coordinator.take_budget(5, [], held.epoch)
        assert after is not None and (after.tokens, after.epoch) == (5, newcomer.epoch)
    finally:
        await coordinator.close()
        await other.close()


async def test_a_process_keeping_to_its_share_claims_it_from_the_others(redis_server):
    """A process that keeps to its share (its grants came too late) claims it in Redis
    first: while the claim lasts, the others are granted the cap minus that share, and
    once it is given back (its next ordinary request), the whole cap again."""
    cap = 12
    policy = PollPolicy(min_interval=0.02, max_interval=0.3, max_requests_per_second=cap)
    slow = RedisCoordinator(redis_server.url, KEY, policy)
    quick = RedisCoordinator(redis_server.url, KEY, policy)
    redis = Redis.from_url(redis_server.url)
    try:
        peers = namespace(KEY) + ":peers"
        await redis.zadd(peers, {"slow": time.time(), "quick": time.time(), "third": time.time()})
        claim = await slow.take_budget(0, [], alone=3.0)
        assert claim is not None and (claim.tokens, claim.peers) == (0, 3)
        granted = await quick.take_budget(cap, [])
        assert granted is not None and granted.tokens == cap - cap // 3  # the share kept out
        back = await slow.take_budget(cap, [])  # an ordinary request gives the claim back
        assert back is not None and back.tokens == cap // 3  # what is left of the whole cap
    finally:
        await redis.aclose()
        await slow.close()
        await quick.close()


async def test_redis_keys_name_a_hash_of_the_key_and_all_expire(redis_server):
    """No Redis key contains the API key, and every key has a time to live."""
    async with Emulator(fast_config(time_scale=200.0)) as emu:
        async with session_on(emu, redis_server.url) as session:
            await asyncio.gather(
                *[(await session.submit(TextToVideo(f"k {i}"))).wait(timeout=10) for i in range(5)]
            )
    redis = Redis.from_url(redis_server.url)
    try:
        keys = [key.decode() for key in await redis.keys("*")]
        assert keys and all(key.startswith(namespace(KEY)) for key in keys)
        assert not any(KEY in key for key in keys)
        for key in keys:
            assert await redis.pttl(key) > 0, key
    finally:
        await redis.aclose()


@pytest.mark.slow
async def test_without_redis_sessions_poll_on_their_own_then_rejoin(redis_server, caplog):
    """Redis stopped mid-wait: every wait still ends, with one warning; Redis back: the
    sessions coordinate again."""
    caplog.set_level(logging.WARNING, "kling_async")
    async with Emulator(fast_config(time_scale=40.0)) as emu:
        async with (
            session_on(emu, redis_server.url) as first,
            session_on(emu, redis_server.url) as second,
        ):
            tasks = [await first.submit(TextToVideo(f"outage {i}")) for i in range(10)]
            waits = [
                asyncio.ensure_future(s.task(t.id).wait(timeout=30))
                for t in tasks
                for s in (first, second)
            ]
            await asyncio.sleep(0.3)
            redis_server.stop()
            results = await asyncio.gather(*waits)
            assert {r.task_id for r in results} == {t.id for t in tasks}
            redis_server.start()
            assert await eventually(lambda: first.poll_stats().shared, 10)
            again = await second.task((await first.submit(TextToVideo("back"))).id).wait(10)
    assert again.task_id
    warnings = [r for r in caplog.records if "Redis unreachable" in r.getMessage()]
    assert 1 <= len(warnings) <= 2  # one per session


@pytest.mark.slow
async def test_back_from_an_outage_a_session_stays_joined(redis_server):
    """Once Redis is back and the sessions rejoin, they stay joined: the connections left
    idle in their pools from before the outage (each would fail once, "closed by server")
    send nobody back to polling alone."""
    async with Emulator(fast_config(time_scale=60.0)) as emu:
        async with (
            session_on(emu, redis_server.url) as first,
            session_on(emu, redis_server.url) as second,
        ):
            sessions = (first, second)

            def joined() -> bool:
                return all(s.poll_stats().shared for s in sessions)

            async def await_in_both(label: str) -> None:
                tasks = [await first.submit(TextToVideo(f"{label} {i}")) for i in range(20)]
                await asyncio.gather(
                    *(s.task(t.id).wait(timeout=20) for t in tasks for s in sessions)
                )

            await await_in_both("before")  # the pools hold several connections now
            redis_server.stop()
            assert await eventually(lambda: not any(s.poll_stats().shared for s in sessions))
            redis_server.start()
            assert await eventually(joined, 10)
            fell_out = 0

            async def watch() -> None:
                nonlocal fell_out
                while True:
                    fell_out += not joined()
                    await asyncio.sleep(0.005)

            watcher = asyncio.ensure_future(watch())
            await await_in_both("after")
            watcher.cancel()
    assert fell_out == 0


class Sink:
    """Collects what a coordinator hands the poller."""

    def __init__(self) -> None:
        self.lessons: list[tuple[object, str, float]] = []
        self.pauses: list[float] = []
        self.claims: list[str] = []

    def on_claim(self, task_id: str) -> None:
        self.claims.append(task_id)

    def wake(self) -> None:
        pass

    def on_sighting(self, task_id, sighting) -> None:
        pass

    def on_pause(self, seconds: float) -> None:
        self.pauses.append(seconds)

    def on_lesson(self, kind, name, value) -> None:
        self.lessons.append((kind, name, value))


@pytest.mark.slow
async def test_lessons_and_pauses_reach_the_others_and_late_joiners(redis_server):
    """A lesson or a 429 pause one session shares reaches the others; lessons also reach a
    session that joins later."""
    a, b = (RedisCoordinator(redis_server.url, KEY, POLL) for _ in range(2))
    sink_a, sink_b = Sink(), Sink()
    a.bind(sink_a)
    b.bind(sink_b)
    try:
        b.watch("warm-up")  # starts b's listener
        await asyncio.sleep(0.3)
        kind = ("kling-v3", "std", 5, False)
        a.learned(kind, "run", 0.12)
        a.paused(2.5)
        await eventually(lambda: sink_b.lessons and sink_b.pauses)
        assert sink_b.lessons == [(kind, "run", 0.12)] and sink_b.pauses == [2.5]
        assert sink_a.lessons == [] and sink_a.pauses == []
        late, sink_late = RedisCoordinator(redis_server.url, KEY, POLL), Sink()
        late.bind(sink_late)
        late.watch("anything")
        await eventually(lambda: sink_late.lessons)
        assert sink_late.lessons == [(kind, "run", 0.12)]
        await late.close()
    finally:
        await a.close()
        await b.close()


@pytest.mark.slow
async def test_one_lease_per_task_and_a_released_one_is_taken_over(redis_server):
    """Of two coordinators watching a task one may check it; when it stops watching, the
    other is told it may, at once."""
    a, b = (RedisCoordinator(redis_server.url, KEY, POLL) for _ in range(2))
    sink_a, sink_b = Sink(), Sink()
    a.bind(sink_a)
    b.bind(sink_b)
    try:
        a.watch("task_x")
        await asyncio.sleep(0.2)
        b.watch("task_x")
        await asyncio.sleep(0.2)
        assert a.may_check("task_x") and not b.may_check("task_x")
        a.unwatch("task_x")
        await eventually(lambda: b.may_check("task_x"))
        assert b.may_check("task_x") and sink_b.claims == ["task_x"]
    finally:
        await a.close()
        await b.close()


async def test_the_redis_url_comes_from_the_environment(monkeypatch):
    """KLING_REDIS_URL turns coordination on without changing code."""
    monkeypatch.setenv("KLING_REDIS_URL", "redis://127.0.0.1:1/0")
    async with KlingSession(api_key=KEY, base_url="http://127.0.0.1:9") as session:
        assert session.poll_stats().shared
    monkeypatch.delenv("KLING_REDIS_URL")
    async with KlingSession(api_key=KEY, base_url="http://127.0.0.1:9") as alone:
        assert not alone.poll_stats().shared


@pytest.mark.slow
async def test_a_status_nobody_has_seen_is_fetched_at_once(redis_server):
    """refresh() of a task no session has checked yet sends its check at once, as without
    Redis, instead of waiting for the planned check once this session holds the lease."""
    policy = PollPolicy(min_interval=2.0, max_interval=10.0, max_requests_per_second=50)
    async with Emulator(fast_config(time_scale=1.0)) as emu:
        async with session_on(emu, redis_server.url, poll=policy) as first:
            task_id = (await first.submit(TextToVideo("asked about at once"))).id
            snapshot = await asyncio.wait_for(first.task(task_id).refresh(), 1.0)
    assert snapshot.id == task_id and not snapshot.status.is_terminal
    assert emu.stats.status_calls_total == 1


@pytest.mark.slow
async def test_close_returns_even_if_the_client_swallows_the_cancellation(
    redis_server, monkeypatch
):
    """A cancellation the Redis client swallows mid-command (as redis-py sometimes does)
    does not keep the coordinator's background loop running: close() still returns."""
    swallowed = asyncio.Event()
    refresh = Leases.refresh

    async def refresh_swallowing_one_cancel(self: Leases, life: float) -> tuple[list[str], int]:
        if swallowed.is_set():
            return await refresh(self, life)
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            swallowed.set()  # and carry on, as if the command had completed
        return [], 1

    monkeypatch.setattr(Leases, "refresh", refresh_swallowing_one_cancel)
    coordinator = RedisCoordinator(redis_server.url, KEY, POLL)
    coordinator.bind(Sink())
    coordinator.watch("task_x")
    await asyncio.sleep(0.2)
    closing = asyncio.ensure_future(coordinator.close())
    done, _ = await asyncio.wait({closing}, timeout=5)
    if not done:  # stop the loop that outlived its cancellation, then fail
        for task in asyncio.all_tasks():
            if task.get_name() == "kling_async-redis":
                task.cancel()
        await closing
    assert swallowed.is_set() and done
