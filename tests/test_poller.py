"""The shared poller against a scripted transport: pauses, reschedules, failures, bounds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from kling_async import (
    AuthenticationError,
    KlingError,
    PollPolicy,
    RateLimitError,
    ServerError,
    SessionClosedError,
    TaskNotFoundError,
    TaskStatus,
)
from kling_async._poller import Poller

POLICY = PollPolicy(
    min_interval=0.01, max_interval=0.05, max_requests_per_second=10_000, max_concurrency=4
)


def done(task_id: str) -> dict[str, Any]:
    return {"code": 200, "data": {"id": task_id, "status": "completed", "progress": 100}}


def running(task_id: str) -> dict[str, Any]:
    return {"code": 200, "data": {"id": task_id, "status": "processing", "progress": 10}}


class ScriptedTransport:
    """Answers status GETs from a per-call script and records when each call happened."""

    def __init__(self, answer: Callable[[str, int], Any], delay: float = 0.0) -> None:
        self.answer = answer
        self.delay = delay
        self.calls: list[tuple[float, str]] = []
        self.raised_at: list[float] = []
        self.in_flight = 0
        self.max_in_flight = 0

    def task_path(self, task_id: str) -> str:
        return task_id

    async def request_json(self, method: str, path: str, body: Any = None) -> Any:
        assert method == "GET"
        self.calls.append((time.monotonic(), path))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            result = self.answer(path, sum(1 for _, p in self.calls if p == path))
        finally:
            self.in_flight -= 1
        if isinstance(result, BaseException):
            self.raised_at.append(time.monotonic())
            raise result
        return result


async def wait_all(poller: Poller, ids: list[str]) -> list[Any]:
    futures = [poller.wait(i) for i in ids]
    return await asyncio.gather(*futures, return_exceptions=True)


async def test_a_429_pauses_every_check_for_retry_after():
    """After a 429 with Retry-After, no task is checked until the pause is over."""

    def answer(task_id: str, n: int) -> Any:
        if task_id == "a" and n == 1:
            return RateLimitError(429, 429, "slow down", retry_after=0.2)
        return done(task_id) if n >= 2 else running(task_id)

    transport = ScriptedTransport(answer)
    poller = Poller(transport, POLICY)  # type: ignore[arg-type]
    try:
        results = await wait_all(poller, ["a", "b", "c"])
    finally:
        await poller.close()
    assert all(r.status is TaskStatus.COMPLETED for r in results)
    (limited_at,) = transport.raised_at
    later = [t for t, _ in transport.calls if t > limited_at]
    assert len(later) >= 3
    assert min(later) - limited_at >= 0.2


async def test_a_5xx_reschedules_only_that_task():
    """A server error on one task delays it and never fails its waiter."""

    def answer(task_id: str, n: int) -> Any:
        if task_id == "flaky" and n <= 3:
            return ServerError(502, 502, "bad gateway")
        return done(task_id)

    transport = ScriptedTransport(answer)
    poller = Poller(transport, POLICY)  # type: ignore[arg-type]
    try:
        flaky, steady = await wait_all(poller, ["flaky", "steady"])
    finally:
        await poller.close()
    assert flaky.status is TaskStatus.COMPLETED
    assert steady.status is TaskStatus.COMPLETED
    assert sum(1 for _, p in transport.calls if p == "steady") == 1


async def test_auth_failure_fails_every_waiter_at_once():
    """A 401 on any status check fails all waiters with the authentication error."""

    def answer(task_id: str, n: int) -> Any:
        return AuthenticationError(401, 401, "bad key") if task_id == "a" else running(task_id)

    poller = Poller(ScriptedTransport(answer), POLICY)  # type: ignore[arg-type]
    try:
        results = await asyncio.wait_for(wait_all(poller, ["a", "b", "c"]), 2)
    finally:
        await poller.close()
    assert all(isinstance(r, AuthenticationError) for r in results)
    assert len(poller) == 0


async def test_not_found_fails_only_that_task():
    """A 404 fails the waiters of that id; the others go on."""

    def answer(task_id: str, n: int) -> Any:
        if task_id == "gone":
            return TaskNotFoundError(404, 404, "no such task")
        return done(task_id)

    poller = Poller(ScriptedTransport(answer), POLICY)  # type: ignore[arg-type]
    try:
        gone, fine = await wait_all(poller, ["gone", "fine"])
    finally:
        await poller.close()
    assert isinstance(gone, TaskNotFoundError)
    assert fine.status is TaskStatus.COMPLETED


async def test_an_unexpected_error_fails_one_task_and_the_poller_survives():
    """A bug-like exception fails that task's waiter with a KlingError; others still resolve."""

    def answer(task_id: str, n: int) -> Any:
        return ZeroDivisionError("boom") if task_id == "odd" else done(task_id)

    poller = Poller(ScriptedTransport(answer), POLICY)  # type: ignore[arg-type]
    try:
        odd, fine = await wait_all(poller, ["odd", "fine"])
        again = await poller.wait("later")
    finally:
        await poller.close()
    assert isinstance(odd, KlingError)
    assert fine.status is TaskStatus.COMPLETED
    assert again.status is TaskStatus.COMPLETED


async def test_checks_in_flight_never_exceed_max_concurrency():
    """With 40 due tasks and slow answers, at most max_concurrency requests run at once."""
    transport = ScriptedTransport(lambda task_id, n: done(task_id), delay=0.02)
    poller = Poller(transport, POLICY)  # type: ignore[arg-type]
    try:
        results = await wait_all(poller, [f"t{i}" for i in range(40)])
    finally:
        await poller.close()
    assert len(results) == 40
    assert transport.max_in_flight == POLICY.max_concurrency


async def test_rate_cap_spaces_requests():
    """At 20 requests/s, 30 checks take more than a second and no 1.05 s window holds 21."""
    policy = PollPolicy(min_interval=0.01, max_interval=0.05, max_requests_per_second=20)
    transport = ScriptedTransport(lambda task_id, n: done(task_id))
    poller = Poller(transport, policy)  # type: ignore[arg-type]
    try:
        await wait_all(poller, [f"t{i}" for i in range(30)])
    finally:
        await poller.close()
    times = [t for t, _ in transport.calls]
    assert times[-1] - times[0] >= 0.5
    for i, start in enumerate(times):
        assert sum(1 for t in times[i:] if t - start < 1.0) <= 20


async def test_released_tasks_are_no_longer_checked():
    """When the last listener leaves, the task drops out of the poller."""
    transport = ScriptedTransport(lambda task_id, n: running(task_id))
    poller = Poller(transport, POLICY)  # type: ignore[arg-type]
    try:
        future = poller.wait("t")
        await asyncio.sleep(0.05)
        poller.release("t", future)
        future.cancel()
        calls = len(transport.calls)
        await asyncio.sleep(0.1)
        assert len(poller) == 0
        assert len(transport.calls) <= calls + 1
    finally:
        await poller.close()


async def test_close_fails_waiters_and_stops_the_driver():
    """close() fails pending futures with SessionClosedError and refuses new waits."""
    poller = Poller(ScriptedTransport(lambda task_id, n: running(task_id)), POLICY)  # type: ignore[arg-type]
    future = poller.wait("t")
    await asyncio.sleep(0.03)
    await poller.close()
    with pytest.raises(SessionClosedError):
        await future
    assert asyncio.all_tasks() == {asyncio.current_task()}
    with pytest.raises(SessionClosedError):
        poller.wait("u")


async def test_a_late_wait_aims_from_the_submit_time():
    """A wait started long after the submit keeps the submit time as the task's start."""
    poller = Poller(ScriptedTransport(lambda task_id, n: running(task_id)), POLICY)  # type: ignore[arg-type]
    try:
        submitted = time.time() - 30.0
        future = poller.wait("t", ("kling-v3", "std", 5, False), submitted)
        assert poller._entries["t"].created == submitted
        poller.release("t", future)
        future.cancel()
    finally:
        await poller.close()
