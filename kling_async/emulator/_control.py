"""Control routes of the API host: read and steer the emulator from another process.

``GET /_stats`` (the counters), ``POST /_reset`` (zero them), ``GET /_tasks/{id}`` (a
task's `TaskRecord`: the truth and what was reported), ``POST /_faults`` (queue a
`Fault`) and ``POST /_scripts`` (add a `Script`). They need no key, count nowhere and
are never faulted or rate limited, so a benchmark can use them freely.
"""

from __future__ import annotations

import attrs
from aiohttp import web

from ._config import Fault
from ._errors import json_response
from ._state import EmulatorState
from ._tasks import Script

__all__ = ["add_control_routes"]


class _ControlHandlers:
    __slots__ = ("_state",)

    def __init__(self, state: EmulatorState) -> None:
        self._state = state

    async def stats(self, _request: web.Request) -> web.Response:
        """`GET /_stats`: the counters."""
        return json_response(self._state.stats.to_json())

    async def reset(self, _request: web.Request) -> web.Response:
        """`POST /_reset`: zero the counters."""
        self._state.stats.reset()
        return json_response({"ok": True})

    async def task(self, request: web.Request) -> web.Response:
        """`GET /_tasks/{task_id}`: the emulator's record of a task."""
        task = self._state.tasks.get(request.match_info["task_id"])
        if task is None:
            return json_response({"code": 404, "message": "task not found"}, 404)
        return json_response(task.record(self._state.clock).to_json())

    async def inject(self, request: web.Request) -> web.Response:
        """`POST /_faults`: queue a fault, body `{"kind", "route", "times", "when", ...}`."""
        try:
            fields = await request.json()
            fault = Fault(**fields)
        except (ValueError, TypeError) as exc:
            return json_response({"code": 400, "message": str(exc)}, 400)
        self._state.faults.inject(fault)
        return json_response({"ok": True, "fault": attrs.asdict(fault)})

    async def script(self, request: web.Request) -> web.Response:
        """`POST /_scripts`: add a script, body as `Emulator.script`'s keywords."""
        try:
            fields = await request.json()
            script = Script(**fields)
        except (ValueError, TypeError) as exc:
            return json_response({"code": 400, "message": str(exc)}, 400)
        self._state.add_script(script)
        return json_response({"ok": True, "script": attrs.asdict(script)})


def add_control_routes(router: web.UrlDispatcher, state: EmulatorState) -> None:
    """Add the control routes to the API host's `router`."""
    handlers = _ControlHandlers(state)
    router.add_get("/_stats", handlers.stats, allow_head=False)
    router.add_post("/_reset", handlers.reset)
    router.add_get("/_tasks/{task_id}", handlers.task, allow_head=False)
    router.add_post("/_faults", handlers.inject)
    router.add_post("/_scripts", handlers.script)
