"""Shared fixtures: an in-process emulator on loopback and a session bound to it.

The SDK's own testing kit (``kling_async.testing``) provides the fast policies and the
``kling_emulator`` / ``kling_session`` fixtures that users get; these tests use it too.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from cli_support import SHARED_EMULATOR, EmulatorProcess, emulator_running
from hypothesis import settings
from redis_server import RedisServer

from kling_async import KlingSession
from kling_async.emulator import Emulator
from kling_async.testing import FAST_POLL, FAST_RETRY, TEST_API_KEY, fast_config

pytest_plugins = ["kling_async.testing", "pytester"]

API_KEY = TEST_API_KEY
__all__ = ["API_KEY", "FAST_POLL", "FAST_RETRY", "fast_session", "stray_tasks"]

# One Hypothesis profile whether $CI is set or not, so CI runs exactly what a user's
# `pytest -q` runs. Hypothesis would otherwise switch to its "ci" profile under CI (which,
# among other things, hides the too_slow health check), and the two runs would differ.
# Built on the "default" profile, not on settings.default, which is already "ci" under CI.
# To hunt for new failing examples locally: pytest --hypothesis-profile default.
settings.register_profile(
    "kling_async",
    parent=settings.get_profile("default"),
    derandomize=True,  # the same examples on every machine and every run: a failure reproduces
    database=None,  # nothing is replayed from .hypothesis/, so a fresh clone runs the same
    deadline=None,  # these properties are about behaviour, not speed; a busy machine is slow
    max_examples=100,
    print_blob=True,
    suppress_health_check=(),  # keep every health check: strategies must stay cheap
)
settings.load_profile("kling_async")


def fast_session(url: str, **options: object) -> KlingSession:
    """A session on any URL (emulator or hand-made server) with test-speed policies."""
    options.setdefault("poll", FAST_POLL)
    options.setdefault("retry", FAST_RETRY)
    options.setdefault("request_timeout", 2.0)
    return KlingSession(api_key=API_KEY, base_url=url, **options)  # type: ignore[arg-type]


@pytest_asyncio.fixture
async def emulator() -> AsyncIterator[Emulator]:
    """An emulator where a 60 s job takes about 0.3 s, with a visible pending phase."""
    config = fast_config(time_scale=200.0, spread=0.1, queue_time=4.0, seed=7)
    async with Emulator(config) as emu:
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


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh redis-server on a free loopback port. Without the package: a failure in CI
    (``.ci/run`` installs it), elsewhere a skip naming it."""
    try:
        server = RedisServer()
    except FileNotFoundError as missing:
        if os.environ.get("CI"):
            pytest.fail(f"{missing}; .ci/run installs it", pytrace=False)
        pytest.skip(str(missing))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def emulator_process() -> Iterator[EmulatorProcess]:
    """One emulator process (time scale 200) per test module: the CLI tests' server."""
    with emulator_running(*SHARED_EMULATOR) as emulator:
        yield emulator


@pytest.fixture
def emu(emulator_process: EmulatorProcess) -> EmulatorProcess:
    """The module's emulator with its counters zeroed."""
    emulator_process.reset()
    return emulator_process
