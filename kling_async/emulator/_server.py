"""`Emulator`: runs the API host and the storage host on two loopback sockets."""

from __future__ import annotations

from types import TracebackType

from aiohttp import web

from ._api import build_api_app
from ._config import EmulatorConfig, Fault, Outcome
from ._state import EmulatorState
from ._stats import Stats
from ._storage import build_storage_app
from ._tasks import Script, TaskRecord

__all__ = ["Emulator"]

_SHUTDOWN_TIMEOUT = 0.25  # real seconds in-flight handlers (e.g. "slow" faults) get on close


def _base_url(host: str, port: int) -> str:
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


async def _serve(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_port: int = runner.addresses[0][1]
    except BaseException:
        await runner.cleanup()
        raise
    return runner, _base_url(host, bound_port)


class Emulator:
    """A local fake of the Kling v3 API, in-process: `async with Emulator(cfg) as emu`.

    `port=0` / `storage_port=0` pick free ports. The storage host listens on its own
    port, so result and upload URLs are a different origin from `url`, as with the real
    service.
    """

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        storage_port: int = 0,
    ) -> None:
        self.config = config if config is not None else EmulatorConfig()
        self._host = host
        self._port = port
        self._storage_port = storage_port
        self._state = EmulatorState(self.config)
        self._runners: list[web.AppRunner] = []
        self._url: str | None = None
        self._storage_url: str | None = None

    def __repr__(self) -> str:
        where = self._url if self._url is not None else "not started"
        return f"<Emulator {where}>"

    async def start(self) -> None:
        """Bind both sockets and start serving."""
        if self._runners:
            raise RuntimeError("the emulator is already running")
        storage_runner, self._storage_url = await _serve(
            build_storage_app(self._state), self._host, self._storage_port
        )
        self._runners.append(storage_runner)
        self._state.storage_url = self._storage_url
        try:
            api_runner, self._url = await _serve(build_api_app(self._state), self._host, self._port)
        except BaseException:
            await self.close()
            raise
        self._runners.append(api_runner)

    async def close(self) -> None:
        """Stop serving; safe to call twice. Tasks and counters stay readable."""
        runners, self._runners = self._runners, []
        for runner in reversed(runners):
            await runner.cleanup()

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def url(self) -> str:
        """The API base URL, e.g. ``http://127.0.0.1:43121`` (clients append ``/v1/...``)."""
        if self._url is None:
            raise RuntimeError("the emulator has not been started")
        return self._url

    @property
    def storage_url(self) -> str:
        """The base URL of the storage host that serves result videos."""
        if self._storage_url is None:
            raise RuntimeError("the emulator has not been started")
        return self._storage_url

    @property
    def stats(self) -> Stats:
        """The live counters."""
        return self._state.stats

    def reset_stats(self) -> None:
        """Zero the counters (tasks, scripts and queued faults are kept)."""
        self._state.stats.reset()

    def task_ids(self) -> list[str]:
        """Ids of every task created, oldest first (not cleared by `reset_stats`)."""
        return list(self._state.tasks)

    def task_record(self, task_id: str) -> TaskRecord:
        """The emulator's record of a task; KeyError for an unknown id."""
        task = self._state.tasks.get(task_id)
        if task is None:
            raise KeyError(task_id)
        return task.record(self._state.clock)

    def inject(self, *faults: Fault) -> None:
        """Queue scripted faults; they are served in order, before any random ones."""
        for fault in faults:
            self._state.faults.inject(fault)

    def pending_faults(self) -> list[tuple[Fault, int]]:
        """Scripted faults not yet fully served, with how many times each is left."""
        return self._state.faults.pending()

    def clear_faults(self) -> None:
        """Drop scripted faults not yet served."""
        self._state.faults.clear()

    def script(
        self,
        *,
        prompt_contains: str,
        outcome: Outcome = "completed",
        time_factor: float = 1.0,
        error_code: str | int | None = None,
        error_message: str | None = None,
    ) -> Script:
        """Fix the fate of later jobs whose prompt contains `prompt_contains`.

        The first matching script wins. `time_factor` multiplies the job's run time.
        """
        script = Script(
            prompt_contains=prompt_contains,
            outcome=outcome,
            time_factor=time_factor,
            error_code=error_code,
            error_message=error_message,
        )
        self._state.add_script(script)
        return script
