"""The shared poller through the public API, on a scripted transport: pauses, reschedules,
failures, bounds, and the races a busy service meets."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from conftest import FAST_POLL
from scripted import ScriptedTransport, scripted_session, status_body, task_of

from kling_async import (
    AuthenticationError,
    InvalidResponseError,
    KlingError,
    NetworkError,
    PollPolicy,
    RateLimitError,
    RetryPolicy,
    SessionClosedError,
    TaskNotFoundError,
    TaskTimeoutError,
)


def answers(script: dict[str, Any], default: Any = None):
    """An answer function: per task id, a value or a function of the attempt number;
    other ids get ``default`` (None: completed)."""

    def answer(method: str, path: str, n: int) -> Any:
        task_id = task_of(path)
        value = script.get(task_id, default)
        value = value(n) if callable(value) else value
        return status_body(task_id) if value is None else value

    return answer


def still_running(method: str, path: str, n: int) -> Any:
    """Every task is processing at 10 %."""
    return status_body(task_of(path), "processing", 10)


STEADY = PollPolicy(
    min_interval=0.01,
    max_interval=0.05,
    max_requests_per_second=10_000,
    max_concurrency=4,
    jitter=0.0,
)
"""Every task due at once: rounds as large as the concurrency allows."""


def rate_limited(after: float) -> Any:
    return (429, {"code": 429, "message": "slow down"}, {"Retry-After": str(after)})


async def wait_all(session, ids: list[str]) -> list[Any]:
    waits = (session.task(i).wait(timeout=10) for i in ids)
    return await asyncio.gather(*waits, return_exceptions=True)


async def test_a_429_pauses_every_check_for_retry_after():
    """After a 429 with Retry-After, no task is checked until the pause is over."""
    transport = ScriptedTransport(
        answers({"a": lambda n: rate_limited(0.2) if n == 1 else None}), delay=0.01
    )
    async with scripted_session(transport, poll=STEADY) as session:
        results = await wait_all(session, ["a", "b", "c"])
    assert [r.task_id for r in results] == ["a", "b", "c"]
    limited_at = transport.times()[0] + 0.01  # when the 429 came back
    later = [t for t in transport.times() if t > limited_at]
    assert later and min(later) - limited_at >= 0.2 - 0.01


async def test_a_5xx_reschedules_only_that_task():
    """A server error on one task delays it and never fails its waiter."""
    flaky = lambda n: (502, {"code": 502, "message": "bad gateway"}, {}) if n <= 3 else None  # noqa: E731
    transport = ScriptedTransport(answers({"flaky": flaky}))
    async with scripted_session(transport) as session:
        results = await wait_all(session, ["flaky", "steady"])
    assert [r.task_id for r in results] == ["flaky", "steady"]
    assert transport.paths().count("/v1/tasks/steady") == 1


async def test_a_401_fails_every_waiter_at_once():
    """A 401 on any status check fails all waiters with the authentication error."""
    refused = (401, {"code": 401, "message": "bad key"}, {})
    transport = ScriptedTransport(
        lambda m, path, n: refused if task_of(path) == "a" else still_running(m, path, n)
    )
    async with scripted_session(transport) as session:
        results = await asyncio.wait_for(wait_all(session, ["a", "b", "c"]), 5)
        assert session.poll_stats().tasks == 0
    assert all(isinstance(r, AuthenticationError) for r in results)


@pytest.mark.parametrize(
    ("status", "error"), [(403, AuthenticationError), (404, TaskNotFoundError)]
)
async def test_a_403_or_404_fails_only_that_task(status, error):
    """Someone else's (or an unknown) task id fails its own waiters; the others go on."""
    transport = ScriptedTransport(answers({"theirs": (status, {"message": "no"}, {})}))
    async with scripted_session(transport) as session:
        theirs, mine = await wait_all(session, ["theirs", "mine"])
    assert isinstance(theirs, error)
    assert mine.task_id == "mine"


async def test_an_unexpected_error_fails_one_task_and_the_poller_survives():
    """A bug-like exception fails that task's waiter with a KlingError; others resolve."""
    transport = ScriptedTransport(answers({"odd": ZeroDivisionError("boom")}))
    async with scripted_session(transport) as session:
        odd, fine = await wait_all(session, ["odd", "fine"])
        again = await session.task("later").wait(timeout=5)
    assert isinstance(odd, KlingError)
    assert fine.task_id == "fine" and again.task_id == "later"


async def test_checks_in_flight_never_exceed_max_concurrency():
    """With 40 due tasks and slow answers, at most max_concurrency requests run at once."""
    transport = ScriptedTransport(answers({}), delay=0.02)
    async with scripted_session(transport, poll=STEADY) as session:
        results = await wait_all(session, [f"t{i}" for i in range(40)])
    assert len(results) == 40
    assert transport.max_in_flight == STEADY.max_concurrency


async def test_the_rate_cap_spaces_requests():
    """At 20 requests/s, 30 checks take over a second and no 1 s window holds 21."""
    policy = PollPolicy(min_interval=0.01, max_interval=0.05, max_requests_per_second=20)
    transport = ScriptedTransport(answers({}))
    async with scripted_session(transport, poll=policy) as session:
        await wait_all(session, [f"t{i}" for i in range(30)])
    times = transport.times()
    assert times[-1] - times[0] >= 0.5
    for i, start in enumerate(times):
        assert sum(1 for t in times[i:] if t - start < 1.0) <= 20


async def test_released_tasks_are_no_longer_checked():
    """When the last waiter leaves, the task drops out of the poller."""
    transport = ScriptedTransport(still_running)
    async with scripted_session(transport) as session:
        with pytest.raises(TaskTimeoutError):
            await session.task("t").wait(timeout=0.05)
        assert session.poll_stats().tasks == 0
        calls = len(transport.calls)
        await asyncio.sleep(0.1)
        assert len(transport.calls) <= calls + 1


async def test_close_fails_waiters_and_leaves_nothing_running():
    """close() fails pending waits with SessionClosedError and refuses new ones."""
    transport = ScriptedTransport(still_running)
    session = scripted_session(transport)
    waiting = asyncio.ensure_future(session.task("t").wait())
    await asyncio.sleep(0.03)
    await session.close()
    with pytest.raises(SessionClosedError):
        await waiting
    assert asyncio.all_tasks() == {asyncio.current_task()}
    with pytest.raises(SessionClosedError):
        session.task("u")


async def test_waiting_again_after_a_timeout_mid_check_never_hangs():
    """A wait that times out while its check is in flight, then waits again, gets the
    answer: the old check's answer never removes the new registration."""
    finished = status_body("t")
    transport = ScriptedTransport(
        answers({"t": lambda n: status_body("t", "processing", 50) if n == 1 else finished}),
        delay=0.3,
    )
    async with scripted_session(transport) as session:
        task = session.task("t")
        with pytest.raises(TaskTimeoutError):
            await task.wait(timeout=0.1)  # the first GET is still in flight
        result = await task.wait(timeout=5)
    assert result.task_id == "t"


@pytest.mark.parametrize(
    "garbage",
    [
        status_body("t", "completed", 100, result={"videos": [{"url": None}]}),
        status_body("t", "completed", 100, result={}),
        status_body("someone_else", "completed"),
    ],
    ids=["url-null", "no-videos", "other-task"],
)
async def test_a_status_that_stays_unreadable_fails_that_task(garbage):
    """An answer that cannot be read (or is about another task) is retried a bounded
    number of times, then fails that task with the parse error."""
    transport = ScriptedTransport(answers({"t": garbage}))
    async with scripted_session(transport) as session:
        broken, fine = await wait_all(session, ["t", "fine"])
    assert isinstance(broken, InvalidResponseError)
    assert transport.paths().count("/v1/tasks/t") == session.config.retry.max_attempts
    assert fine.task_id == "fine"


@pytest.mark.parametrize(
    "garbage",
    [
        {"progress": "abc"},
        {"estimated_time": "NaN"},
        {"created": "yesterday", "actual_time": [19], "cost": {"usd": "?"}},
        {"error": ["?"], "x_new": {"deep": [1, {"er": None}]}},
    ],
    ids=["progress-abc", "estimate-nan", "times-and-cost", "error-and-extras"],
)
async def test_garbage_in_optional_fields_never_costs_the_video(garbage):
    """A status whose status and videos are readable is delivered, whatever its optional
    fields hold: one check per task, no retry, no failure."""
    running, done = status_body("t", "processing", 50), status_body("t")
    running["data"].update(garbage)
    done["data"].update(garbage)
    transport = ScriptedTransport(answers({"t": lambda n: running if n == 1 else done}))
    async with scripted_session(transport) as session:
        result = await session.task("t").wait(timeout=5)
    assert result.url == "https://cdn.test/t.mp4"
    assert transport.paths().count("/v1/tasks/t") == 2


async def test_one_unreadable_answer_then_a_good_one_succeeds():
    """A passing glitch costs a retry, not the task."""
    glitch = status_body("t", "completed", 100, result={"videos": [{"url": None}]})
    transport = ScriptedTransport(answers({"t": lambda n: glitch if n == 1 else None}))
    async with scripted_session(transport) as session:
        result = await session.task("t").wait(timeout=5)
    assert result.task_id == "t"


@pytest.mark.parametrize("retry_after", ["1e12", "inf", "120"])
async def test_a_retry_after_over_the_limit_fails_that_task_and_frees_the_session(retry_after):
    """A 429 asking for more than max_retry_after fails that task's waiters with the 429;
    the session pauses at most max_retry_after, then checks the others."""
    retry = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05, max_retry_after=0.3)
    greedy = (429, {"code": 429, "message": "go away"}, {"Retry-After": retry_after})
    transport = ScriptedTransport(answers({"greedy": greedy}))
    async with scripted_session(transport, retry=retry) as session:
        started = time.monotonic()
        greedy_result, other = await wait_all(session, ["greedy", "other"])
        took = time.monotonic() - started
    assert isinstance(greedy_result, RateLimitError)
    assert other.task_id == "other"
    assert took < 5


async def test_a_storm_of_429s_costs_seconds_not_minutes():
    """60 tasks through a 1 s storm of 429s at a 20/s cap all end soon after it."""
    policy = PollPolicy(min_interval=0.05, max_interval=0.2, max_requests_per_second=20)
    storm_until = time.monotonic() + 1.0

    def answer(method: str, path: str, n: int) -> Any:
        if time.monotonic() < storm_until:
            return rate_limited(0.05)
        return status_body(task_of(path))

    transport = ScriptedTransport(answer)
    async with scripted_session(transport, poll=policy) as session:
        await wait_all(session, [f"t{i}" for i in range(60)])
        rate = session.poll_stats().rate
    ended = time.monotonic() - storm_until
    assert ended < 8.0  # 60 checks at ~14-20/s after the storm, not a crawl at 1/s
    assert rate >= 14.0


async def test_status_and_refresh_obey_the_rate_cap_and_the_pause():
    """12 status calls with a cap of 5/s take seconds, not milliseconds."""
    policy = PollPolicy(min_interval=0.05, max_interval=0.2, max_requests_per_second=5)
    transport = ScriptedTransport(still_running)
    async with scripted_session(transport, poll=policy) as session:
        await asyncio.gather(*(session.status(f"t{i}") for i in range(12)))
    times = transport.times()
    assert times[-1] - times[0] >= 1.5
    for i, start in enumerate(times):
        assert sum(1 for t in times[i:] if t - start < 1.0) <= 5


async def test_status_gives_up_like_a_retried_get():
    """status() on a server that keeps failing raises after max_attempts, not forever."""
    transport = ScriptedTransport(answers({}, NetworkError("reset")))
    async with scripted_session(transport) as session:
        with pytest.raises(NetworkError):
            await session.status("t")
    assert len(transport.calls) == session.config.retry.max_attempts


async def test_as_completed_yields_each_task_as_it_ends():
    """Handles come back in the order their tasks end, failures included."""
    order = {"slow": 6, "fast": 1, "failed": 3}

    def answer(method: str, path: str, n: int) -> Any:
        task_id = task_of(path)
        if n < order[task_id]:
            return status_body(task_id, "processing", 10)
        if task_id == "failed":
            return status_body(task_id, "failed", 0, error={"code": "x", "message": "no"})
        return status_body(task_id)

    transport = ScriptedTransport(answer)
    async with scripted_session(transport) as session:
        tasks = [session.task(i) for i in order]
        seen = [task.id async for task in session.as_completed(tasks, timeout=10)]
    assert seen == ["fast", "failed", "slow"]


async def test_poll_stats_show_what_the_poller_does():
    """poll_stats() counts watched tasks and status requests, and shows the rate."""
    transport = ScriptedTransport(answers({}))
    async with scripted_session(transport) as session:
        assert session.poll_stats().tasks == 0
        await wait_all(session, ["a", "b"])
        stats = session.poll_stats()
    assert (stats.tasks, stats.status_requests) == (0, 2)
    assert stats.rate == FAST_POLL.max_requests_per_second and stats.paused_for == 0
