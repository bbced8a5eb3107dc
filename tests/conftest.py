"""Shared fixtures: an in-process emulator on loopback and a session bound to it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest_asyncio

from kling_async import KlingSession, PollPolicy, RetryPolicy
from kling_async.emulator import Emulator, EmulatorConfig

API_KEY = "sk-test-0123456789abcdef"
#: A poll policy for the compressed clock: a 60 s job takes 0.3 s at time_scale=200.
FAST_POLL = PollPolicy(
    min_interval=0.01, max_interval=0.2, max_requests_per_second=5000, max_concurrency=32
)
FAST_RETRY = RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.05)


def fast_session(url: str, **options: object) -> KlingSession:
    """A session with test-speed polling and retries."""
    options.setdefault("poll", FAST_POLL)
    options.setdefault("retry", FAST_RETRY)
    options.setdefault("request_timeout", 2.0)
    return KlingSession(api_key=API_KEY, base_url=url, **options)  # type: ignore[arg-type]


@pytest_asyncio.fixture
async def emulator() -> AsyncIterator[Emulator]:
    """An emulator where a 60 s job takes about 0.3 s."""
    async with Emulator(
        EmulatorConfig(time_scale=200.0, spread=0.1, queue_time=4.0, retry_after=0.05, seed=7)
    ) as emu:
        yield emu


@pytest_asyncio.fixture
async def session(emulator: Emulator) -> AsyncIterator[KlingSession]:
    """A session bound to the emulator."""
    async with fast_session(emulator.url) as s:
        yield s


def stray_tasks() -> set[asyncio.Task[object]]:
    """asyncio tasks still alive besides the current one, ignoring the emulator's server side."""
    stray = set()
    for task in asyncio.all_tasks():
        code = getattr(task.get_coro(), "cr_code", None)
        filename = code.co_filename if code is not None else ""
        if task is not asyncio.current_task() and "aiohttp/web_" not in filename:
            stray.add(task)
    return stray
