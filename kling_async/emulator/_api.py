"""The API host: submit and status routes as API.md describes, plus control routes.

An API request goes: counted → fault drawn → rate limit → auth → the real work. The
control routes (`/_stats`, `/_reset`, `/_tasks/{id}`, `/_faults`, `/_scripts`) skip
all of that, so a benchmark can read and steer the emulator from another process.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import attrs
from aiohttp import web

from ._config import Fault, format_seconds
from ._faults import (
    ERROR_KINDS,
    drop_connection,
    error_response,
    json_response,
    truncated_response,
)
from ._state import EmulatorState
from ._tasks import Script, new_task_id
from ._validation import submission_error

__all__ = ["build_api_app"]

_TERMINAL_FIELDS = ("completed", "actual_time", "result", "error")


def _dumps(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def _still_connected(request: web.BaseRequest) -> bool:
    transport = request.transport
    return transport is not None and not transport.is_closing()


async def _prompt_of(request: web.Request) -> str:
    """The prompt of a submit body (read once; aiohttp caches it for the handler)."""
    try:
        body = await request.json()
    except ValueError:
        return ""
    prompt = body.get("prompt") if isinstance(body, dict) else None
    return prompt if isinstance(prompt, str) else ""


class _ApiHandlers:
    __slots__ = ("_state",)

    def __init__(self, state: EmulatorState) -> None:
        self._state = state

    def _refusal(self, request: web.Request, now: float) -> web.Response | None:
        """The 429 or 401 a request gets before any real work, if any."""
        state = self._state
        if state.over_rate_limit(now):
            return json_response(
                {"code": 429, "message": "rate limit exceeded, retry later"},
                429,
                {"Retry-After": format_seconds(state.config.retry_after)},
            )
        if not state.authorized(request.headers.get("Authorization")):
            state.stats.rejected_auth += 1
            return json_response({"code": 401, "message": "invalid or missing API key"}, 401)
        return None

    async def _answer(self, request: web.Request) -> tuple[web.Response, str | None]:
        """Refuse, validate and create: the response and the new task id, if one was made."""
        state = self._state
        refusal = self._refusal(request, time.monotonic())
        if refusal is not None:
            return refusal, None
        try:
            body = await request.json()
        except ValueError:
            body = None
        error = submission_error(body)
        if error is not None:
            state.stats.rejected_invalid += 1
            return json_response({"code": 400, "message": error}, 400), None
        task = state.create_task(body)
        return json_response(state.submit_payload(task.task_id)), task.task_id

    async def submit(self, request: web.Request) -> web.StreamResponse:
        """`POST /v1/videos/generations`."""
        state = self._state
        state.note_api_request("submit", time.monotonic())
        fault = state.faults.draw("submit")
        if fault is None:
            return (await self._answer(request))[0]
        state.stats.count_fault(fault.kind)
        state.stats.faulted_submissions.append((await _prompt_of(request), fault.kind, fault.when))
        config = state.config
        if fault.when == "before":
            if fault.kind == "reset":
                return drop_connection(request)
            if fault.kind in ERROR_KINDS:
                return error_response(fault.kind, config.retry_after)
            if fault.kind == "truncated":
                return truncated_response(_dumps(state.submit_payload(new_task_id(state.rng))))
            await asyncio.sleep(config.slow_delay)  # "slow": answer late, if still wanted
            if not _still_connected(request):
                return drop_connection(request, rst=False)
            return (await self._answer(request))[0]
        response, task_id = await self._answer(request)
        if task_id is not None:
            state.stats.ambiguous_submissions.append((task_id, state.tasks[task_id].prompt))
        if fault.kind == "reset":
            return drop_connection(request)
        if fault.kind in ERROR_KINDS:
            return error_response(fault.kind, config.retry_after)
        if fault.kind == "truncated":
            return truncated_response(response.body if isinstance(response.body, bytes) else b"")
        await asyncio.sleep(config.slow_delay)
        return response

    async def status(self, request: web.Request) -> web.StreamResponse:
        """`GET /v1/tasks/{task_id}` (`?language=` is accepted and ignored)."""
        state = self._state
        state.note_api_request("status", time.monotonic())
        task = state.note_status_call(request.match_info["task_id"])
        fault = state.faults.draw("status")
        if fault is not None:
            state.stats.count_fault(fault.kind)
            if fault.kind == "reset":
                return drop_connection(request)
            if fault.kind in ERROR_KINDS:
                return error_response(fault.kind, state.config.retry_after)
            if fault.kind == "slow":
                await asyncio.sleep(state.config.slow_delay)
        refusal = self._refusal(request, time.monotonic())
        if refusal is not None:
            return refusal
        if task is None:
            state.stats.not_found += 1
            return json_response({"code": 404, "message": "task not found"}, 404)
        payload = state.status_payload(task, time.time())
        if fault is not None and fault.kind == "unknown_status":
            data = payload["data"]
            data["status"] = "mystery"
            for field in _TERMINAL_FIELDS:
                data.pop(field, None)
        if fault is not None and fault.kind == "truncated":
            return truncated_response(_dumps(payload))
        return json_response(payload)

    # -- control routes ---------------------------------------------------------

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
        return json_response(task.record().to_json())

    async def inject(self, request: web.Request) -> web.Response:
        """`POST /_faults`: queue a fault, body `{"kind", "route", "times", "when"}`."""
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


def build_api_app(state: EmulatorState) -> web.Application:
    """The aiohttp application of the API host."""
    handlers = _ApiHandlers(state)
    app = web.Application()
    router = app.router
    router.add_post("/v1/videos/generations", handlers.submit)
    router.add_get("/v1/tasks/{task_id}", handlers.status, allow_head=False)
    router.add_get("/_stats", handlers.stats, allow_head=False)
    router.add_post("/_reset", handlers.reset)
    router.add_get("/_tasks/{task_id}", handlers.task, allow_head=False)
    router.add_post("/_faults", handlers.inject)
    router.add_post("/_scripts", handlers.script)
    return app
