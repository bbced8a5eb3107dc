"""Test your own code against the local emulator: no API key, no credits, no network.

With pytest, load the plugin once in your top-level ``conftest.py``::

    pytest_plugins = ["kling_async.testing"]

The fixtures are async, so they need pytest-asyncio. Its settings go in your
``pyproject.toml``: ``asyncio_mode = "auto"`` runs ``async def`` tests without a marker
(otherwise mark them ``@pytest.mark.asyncio``), and setting the fixture loop scope keeps
pytest-asyncio from warning that it is unset::

    [tool.pytest.ini_options]
    asyncio_mode = "auto"
    asyncio_default_fixture_loop_scope = "function"

Then use the fixtures::

    async def test_my_app(kling_session, kling_emulator):
        fail_prompt(kling_emulator, "forbidden")
        task = await kling_session.submit(TextToVideo("a forbidden dance"))
        with pytest.raises(TaskFailedError):
            await task

``kling_emulator`` is a running :class:`~kling_async.emulator.Emulator` at a fast time
scale (a 60 s job takes 0.1 s), ``kling_session`` a :class:`~kling_async.KlingSession`
bound to it with fast poll and retry policies. Tune the emulator per test with
``@pytest.mark.kling_emulator(rate_limit=5, ...)`` (any :class:`EmulatorConfig` field, on
top of :func:`fast_config`), or for a whole directory by overriding the
``kling_emulator_config`` fixture (return :func:`realistic_config` there to test against
variable queues, wide run times and a skewed server clock).

Without pytest: ``async with emulated_session() as (session, emu): ...``. To hand a
session to your own app (a FastAPI lifespan, a worker), build one with :func:`session_for`.

To measure rates and delays that your test process's own pauses (a busy loop, garbage
collection late in a long suite) must not blur, run the emulator as the server it stands
for, in a process of its own: ``async with EmulatorProcess("--time-scale=20") as emu:``
(flags of ``kling-async emulator``; ``await emu.stats()``, ``await emu.record(task_id)``).

The scripting helpers (:func:`fail_prompt`, :func:`slow_prompt`, :func:`rate_limit`, ...)
are thin names for ``emu.script(...)`` and ``emu.inject(Fault(...))``; the counters are
``emu.stats`` (``submissions``, ``status_calls_total``, ``max_requests_per_second``, ...).

(PYTEST_DONT_REWRITE: no asserts here; this keeps pytest quiet when a conftest imports the
module before naming it in ``pytest_plugins``.)
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import sys
from collections.abc import AsyncIterator, Iterable
from types import TracebackType
from typing import Any

import aiohttp

from ._config import PollPolicy, RetryPolicy, scaled_poll
from ._session import KlingSession
from .emulator import Emulator, EmulatorConfig, Fault, Script
from .emulator._config import Route

__all__ = [
    "FAST_POLL",
    "EmulatorProcess",
    "FAST_RETRY",
    "TEST_API_KEY",
    "cancel_prompt",
    "connection_reset",
    "emulated_session",
    "fail_prompt",
    "fast_config",
    "rate_limit",
    "realistic_config",
    "scaled_poll",
    "server_error",
    "session_for",
    "slow_prompt",
]

TEST_API_KEY = "kling-test-key"
"""The key :func:`session_for` sends; the emulator accepts any key unless ``api_keys`` is set."""

FAST_POLL = PollPolicy(
    min_interval=0.01, max_interval=0.2, max_requests_per_second=1000, max_concurrency=32
)
"""Poll every 10-200 ms: right for an emulator that finishes jobs in a fraction of a second."""

FAST_RETRY = RetryPolicy(max_attempts=5, base_delay=0.01, max_delay=0.1)
"""Retry transient errors within milliseconds (a 429's Retry-After is still honoured)."""


_FAST_DEFAULTS: dict[str, Any] = {"time_scale": 600.0, "retry_after": 0.05, "slow_delay": 0.5}


def fast_config(**overrides: Any) -> EmulatorConfig:
    """An :class:`EmulatorConfig` for tests: a 60 s job in 0.1 s, ``Retry-After: 0.05``.

    ``overrides`` are any ``EmulatorConfig`` fields, e.g. ``fast_config(rate_limit=5)``.
    """
    return EmulatorConfig(**{**_FAST_DEFAULTS, **overrides})


def realistic_config(**overrides: Any) -> EmulatorConfig:
    """:meth:`EmulatorConfig.realistic` at the test time scale of :func:`fast_config`.

    Variable queues (some long), run times 0.5-1.5x the estimate, a server clock 3
    emulated seconds ahead; ``overrides`` are any ``EmulatorConfig`` fields and win.
    """
    return EmulatorConfig.realistic(**{**_FAST_DEFAULTS, **overrides})


def session_for(emulator: Emulator | EmulatorProcess | str, **options: Any) -> KlingSession:
    """A new (not yet entered) session bound to ``emulator`` with fast poll and retry policies.

    ``emulator`` is an :class:`~kling_async.emulator.Emulator`, an :class:`EmulatorProcess`
    or the base URL of any server that speaks the API. ``options`` are
    :class:`KlingSession` keywords and override the defaults (``api_key=TEST_API_KEY``,
    ``poll=FAST_POLL``, ``retry=FAST_RETRY``).
    """
    settings: dict[str, Any] = {"api_key": TEST_API_KEY, "poll": FAST_POLL, "retry": FAST_RETRY}
    settings.update(options)
    url = emulator if isinstance(emulator, str) else emulator.url
    return KlingSession(base_url=url, **settings)


@contextlib.asynccontextmanager
async def emulated_session(
    config: EmulatorConfig | None = None, **options: Any
) -> AsyncIterator[tuple[KlingSession, Emulator]]:
    """Run an emulator (default :func:`fast_config`) and a session bound to it; close both.

    For any test runner: ``async with emulated_session() as (session, emu): ...``.
    ``options`` go to :func:`session_for`.
    """
    async with (
        Emulator(config if config is not None else fast_config()) as emulator,
        session_for(emulator, **options) as session,
    ):
        yield session, emulator


class EmulatorProcess:
    """The emulator in a child process (``python -m kling_async.emulator``), read through
    its control routes: a server apart from the test, as the real API is.

    ``flags`` are the ``kling-async emulator`` command's (``"--time-scale=20"``,
    ``"--seed=7"``, ``"--preset=realistic"``, ...); it listens on a free loopback port,
    at :attr:`url`. Stopped on exit.
    """

    startup_timeout = 60.0
    """Seconds the child may take to print its URL before it is stopped."""

    def __init__(self, *flags: str) -> None:
        self.flags = flags
        self.url = ""
        self._process: asyncio.subprocess.Process | None = None
        self._http: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"<EmulatorProcess {self.url or 'not started'}>"

    async def __aenter__(self) -> EmulatorProcess:
        self._process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "kling_async.emulator", "--port=0", *self.flags,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        assert self._process.stdout is not None
        try:  # a child that neither starts nor exits must not hang the test
            startup = self.startup_timeout
            line = (await asyncio.wait_for(self._process.stdout.readline(), startup)).decode()
        except TimeoutError:
            line = ""
        if not line.startswith("KLING_EMULATOR_URL="):
            await self._stop()
            raise RuntimeError(
                f"the emulator did not start within {self.startup_timeout:g} s with flags "
                f"{list(self.flags)} "
                f"(exit code {self._process.returncode}); run `kling-async emulator` "
                "with them to see why"
            )
        self.url = line.strip().split("=", 1)[1]
        self._http = aiohttp.ClientSession()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._http is not None:
            await self._http.close()
        await self._stop()

    async def _stop(self) -> None:
        process = self._process
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()

    async def control(self, method: str, path: str, body: Any = None) -> Any:
        """Call a control route (``GET /_stats``, ``POST /_reset``, ``GET /_tasks/{id}``,
        ``POST /_faults``, ``POST /_scripts``) and return its JSON."""
        if self._http is None:
            raise RuntimeError("use `async with EmulatorProcess(...)` before calling it")
        async with self._http.request(method, self.url + path, json=body) as response:
            response.raise_for_status()
            return await response.json()

    async def stats(self) -> dict[str, Any]:
        """The counters (``status_calls_total``, ``max_status_per_second``, ...)."""
        stats: dict[str, Any] = await self.control("GET", "/_stats")
        return stats

    async def reset_stats(self) -> None:
        """Zero the counters (``POST /_reset``); tasks, scripts and faults are kept."""
        await self.control("POST", "/_reset")

    async def record(self, task_id: str) -> dict[str, Any]:
        """The emulator's record of a task: the truth (``completes_at``,
        ``estimated_time``, ...) and what it reported."""
        record: dict[str, Any] = await self.control("GET", f"/_tasks/{task_id}")
        return record

    async def records(self, task_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """:meth:`record` of each task, 32 at a time."""
        gate = asyncio.Semaphore(32)

        async def one(task_id: str) -> tuple[str, dict[str, Any]]:
            async with gate:
                return task_id, await self.record(task_id)

        return dict(await asyncio.gather(*(one(task_id) for task_id in task_ids)))


# -- scripting a task's fate -----------------------------------------------------------


def fail_prompt(
    emulator: Emulator,
    prompt_contains: str,
    *,
    code: str | int | None = "generation_failed",
    message: str = "video generation failed (scripted)",
) -> Script:
    """Later tasks whose prompt contains ``prompt_contains`` end ``failed`` with this error."""
    return emulator.script(
        prompt_contains=prompt_contains, outcome="failed", error_code=code, error_message=message
    )


def cancel_prompt(emulator: Emulator, prompt_contains: str) -> Script:
    """Later tasks whose prompt contains ``prompt_contains`` end ``cancelled``."""
    return emulator.script(prompt_contains=prompt_contains, outcome="cancelled")


def slow_prompt(emulator: Emulator, prompt_contains: str, factor: float = 10.0) -> Script:
    """Later tasks whose prompt contains ``prompt_contains`` run ``factor`` times longer."""
    return emulator.script(prompt_contains=prompt_contains, time_factor=factor)


def rate_limit(emulator: Emulator, times: int = 2, *, route: Route = "any") -> Fault:
    """The next ``times`` API requests (on ``route``) get 429 with the config's Retry-After."""
    return _inject(emulator, Fault("429", route=route, times=times))


def server_error(
    emulator: Emulator, times: int = 1, *, status: int = 503, route: Route = "any"
) -> Fault:
    """The next ``times`` requests (on ``route``) get HTTP ``status`` (500, 502 or 503).

    A submit answered this way may or may not have been taken: the SDK retries it with the
    same idempotency key, and raises :class:`~kling_async.SubmissionUncertainError` only
    when every attempt got such an answer.
    """
    if status not in (500, 502, 503):
        raise ValueError(f"status: must be 500, 502 or 503 (got {status!r})")
    return _inject(emulator, Fault(str(status), route=route, times=times))


def connection_reset(emulator: Emulator, times: int = 1, *, route: Route = "any") -> Fault:
    """The next ``times`` requests (on ``route``) have their connection reset, no answer."""
    return _inject(emulator, Fault("reset", route=route, times=times))


def _inject(emulator: Emulator, fault: Fault) -> Fault:
    emulator.inject(fault)
    return fault


# -- the pytest plugin -----------------------------------------------------------------

_MARKER = "kling_emulator"


def pytest_configure(config: Any) -> None:
    """Register the ``kling_emulator`` marker; refuse clearly if pytest-asyncio is missing."""
    if importlib.util.find_spec("pytest_asyncio") is None:
        import pytest

        raise pytest.UsageError("kling_async.testing's fixtures need pytest-asyncio installed")
    config.addinivalue_line(
        "markers",
        f"{_MARKER}(**config): EmulatorConfig fields for this test's kling_emulator fixture",
    )


if importlib.util.find_spec("pytest_asyncio") is not None:
    import pytest
    import pytest_asyncio

    @pytest.fixture
    def kling_emulator_config(request: pytest.FixtureRequest) -> EmulatorConfig:
        """:func:`fast_config`, updated by the test's ``@pytest.mark.kling_emulator(...)``."""
        overrides: dict[str, Any] = {}
        for marker in reversed(list(request.node.iter_markers(_MARKER))):
            if marker.args:
                raise pytest.UsageError(f"@pytest.mark.{_MARKER} takes keyword arguments only")
            overrides.update(marker.kwargs)
        return fast_config(**overrides)

    @pytest_asyncio.fixture
    async def kling_emulator(
        kling_emulator_config: EmulatorConfig,
    ) -> AsyncIterator[Emulator]:
        """A running emulator on a free loopback port, closed after the test."""
        async with Emulator(kling_emulator_config) as emulator:
            yield emulator

    @pytest_asyncio.fixture
    async def kling_session(kling_emulator: Emulator) -> AsyncIterator[KlingSession]:
        """A session bound to ``kling_emulator`` (fast poll and retry), closed after the test."""
        async with session_for(kling_emulator) as session:
            yield session
