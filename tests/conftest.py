"""Shared fixtures: emulators, sessions, a bare HTTP client and a real redis-server.

Emulators and sessions come from the SDK's own kit (``kling_async.testing``, loaded below
as users load it: its ``kling_emulator`` and ``kling_session`` fixtures, its fast
policies); the helpers behind these fixtures live in ``tests/support/``.

Tests marked ``slow`` (a child process, a browser, a real redis-server or seconds of
emulated work) are left out of the quick tier: ``pytest -m "not slow"``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
import pytest_asyncio
from hypothesis import settings
from support.cli import SHARED_EMULATOR, SyncEmulator, emulator_running
from support.redis_server import RedisServer
from support.sessions import fast_session

from kling_async import KlingSession
from kling_async.emulator import Emulator
from kling_async.testing import FAST_POLL, fast_config

pytest_plugins = ["kling_async.testing", "pytester"]

__all__ = ["FAST_POLL"]  # tests/test_poller.py imports it from here

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


@pytest_asyncio.fixture
async def emulator() -> AsyncIterator[Emulator]:
    """An emulator where a 60 s job takes about 0.3 s, with a visible pending phase."""
    config = fast_config(time_scale=200.0, spread=0.1, queue_time=4.0, seed=7)
    async with Emulator(config) as emu:
        yield emu


@pytest_asyncio.fixture
async def session(emulator: Emulator) -> AsyncIterator[KlingSession]:
    """A session bound to the emulator."""
    async with fast_session(emulator) as s:
        yield s


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A bare HTTP client, for tests that speak to the emulator directly."""
    async with aiohttp.ClientSession() as client:
        yield client


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
def emulator_process() -> Iterator[SyncEmulator]:
    """One emulator process (time scale 200) per test module: the CLI tests' server."""
    with emulator_running(*SHARED_EMULATOR) as emulator:
        yield emulator


@pytest.fixture
def emu(emulator_process: SyncEmulator) -> SyncEmulator:
    """The module's emulator with its counters zeroed."""
    emulator_process.reset()
    return emulator_process
