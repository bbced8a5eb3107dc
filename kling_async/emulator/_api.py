"""The API host: submit, status and upload routes as API.md describes (+ `_control`).

An API request goes: counted → fault drawn → rate limit → auth → the real work. The
control routes (see `_control`) skip all of that.
Every response of this host carries a ``Date`` header on the server clock, and every
error under ``/v1/`` (aiohttp's own 404, 405 and 413 included) has the configured
``error_style``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
from aiohttp import web

from ._config import Fault, format_seconds
from ._control import add_control_routes
from ._errors import json_response
from ._faultkinds import KINDS, FaultKind, Served
from ._faults import (
    cut_short,
    drop_connection,
    echo_error,
    rate_limited,
    still_connected,
    truncated_response,
)
from ._hostile import echo_key_in, garble, point_at, scramble
from ._idempotency import HEADER as KEY_HEADER
from ._idempotency import REPLAYED_HEADER, Remembered, fingerprint, key_error
from ._state import EmulatorState, bearer_token
from ._tasks import new_task_id
from ._uploads import UploadError, read_upload, sniff_image
from ._validation import prompt_of, submission_error

__all__ = ["VERSION_HEADER", "build_api_app"]

VERSION_HEADER = "X-APIMart-Response-Version"
_TERMINAL_FIELDS = ("completed", "actual_time", "result", "error")


def _dumps(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def _parse(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


async def _prompt_of(request: web.Request) -> str:
    """The prompt of a submit body (read once; aiohttp caches it for the handler)."""
    body = _parse(await request.read())
    return prompt_of(body) if isinstance(body, dict) else ""


def _token_of(request: web.BaseRequest) -> str:
    """The caller's API key as sent (what an "echo_key" fault repeats back)."""
    header = request.headers.get("Authorization", "")
    return bearer_token(header) or header


@attrs.frozen
class _Answer:
    """A route's real answer, and the id of what it created (task or upload), if anything."""

    response: web.Response
    created: str | None = None


class _ApiHandlers:
    __slots__ = ("_state",)

    def __init__(self, state: EmulatorState) -> None:
        self._state = state

    def _refusal(self, request: web.Request, now: float) -> web.Response | None:
        """The 429 or 401 a request gets before any real work, if any."""
        state = self._state
        if state.over_rate_limit(now):
            config = state.config
            return rate_limited(
                state.errors, format_seconds(config.retry_after), config.rate_limit_code
            )
        if not state.authorized(request.headers.get("Authorization")):
            state.stats.rejected_auth += 1
            return state.errors.response(401, "invalid or missing API key")
        return None

    async def _serve(
        self,
        request: web.Request,
        fault: Fault | None,
        answer: Callable[[], Awaitable[_Answer]],
        fake: Callable[[], bytes],
        on_created: Callable[[str], None],
    ) -> web.StreamResponse:
        """Serve a creating route (submit, upload) under `fault`.

        "before" fails the request and creates nothing (`fake` is the body a truncated
        answer cuts); "after" creates, reports it with `on_created`, then fails the answer.
        """
        if fault is None:
            return (await answer()).response
        state = self._state
        state.stats.count_fault(fault.kind)
        real: _Answer | None = None
        if fault.when == "after":
            real = await answer()
            if real.created is not None:
                on_created(real.created)
        early = await self._cut_short(fault, request)
        if early is not None:
            return early
        match KINDS[fault.kind].served:
            case Served.ECHO:
                return echo_error(state.errors, _token_of(request))
            case Served.TRUNCATED:
                body = real.response.body if real is not None else fake()
                return truncated_response(body if isinstance(body, bytes) else b"")
        await asyncio.sleep(state.config.slow_delay)  # "slow": answer late, if still wanted
        if real is not None:
            return real.response
        if not still_connected(request):
            return drop_connection(request, rst=False)
        return (await answer()).response

    async def _cut_short(self, fault: Fault, request: web.Request) -> web.StreamResponse | None:
        """A fault's whole answer in place of the real one, if it has one (``cut_short``)."""
        config = self._state.config
        errors = self._state.errors
        return await cut_short(fault, request, errors, config.retry_after, config.rate_limit_code)

    # -- submit -----------------------------------------------------------------

    async def _submit_answer(self, request: web.Request) -> _Answer:
        """Refuse, check the key, replay or validate and create."""
        state = self._state
        stats = state.stats
        refusal = self._refusal(request, time.monotonic())
        if refusal is not None:
            return _Answer(refusal)
        key = request.headers.get(KEY_HEADER)
        if key is not None and (problem := key_error(key)) is not None:
            stats.rejected_invalid += 1
            return _Answer(state.errors.response(400, problem, param=KEY_HEADER))
        raw = await request.read()
        body = _parse(raw)
        # No await from here on: looking the key up and recording it is one atomic step.
        token = _token_of(request)
        if key is not None and (known := state.keys.lookup(token, key)) is not None:
            if known.fingerprint == fingerprint(body, raw):
                stats.idempotent_replays += 1
                return _Answer(json_response(known.payload, headers={REPLAYED_HEADER: "true"}))
            stats.key_conflicts += 1
            message = (
                f"{KEY_HEADER}: this key was already used with a different request "
                "(send a new key for a changed request)"
            )
            return _Answer(state.errors.response(409, message, param=KEY_HEADER))
        error = submission_error(
            body, state.image_url_problem, unknown_fields=state.config.unknown_fields
        )
        if error is not None:
            stats.rejected_invalid += 1
            return _Answer(state.errors.invalid(error))
        task = state.create_task(body, key)
        payload = state.submit_payload(task.task_id, request.headers.get(VERSION_HEADER))
        if key is not None:
            entry = Remembered(fingerprint(body, raw), task.task_id, payload)
            state.keys.remember(token, key, entry)
        return _Answer(json_response(payload), task.task_id)

    async def submit(self, request: web.Request) -> web.StreamResponse:
        """`POST /v1/videos/generations`."""
        state = self._state
        stats = state.stats
        state.note_api_request("submit", time.monotonic())
        if KEY_HEADER in request.headers:
            stats.submits_with_key += 1
        else:
            stats.submits_without_key += 1
        fault = state.faults.draw("submit")
        if fault is not None:
            stats.faulted_submissions.append((await _prompt_of(request), fault.kind, fault.when))

        def fake() -> bytes:
            return _dumps(state.submit_payload(new_task_id(state.rng)))

        def created(task_id: str) -> None:
            stats.ambiguous_submissions.append((task_id, state.tasks[task_id].prompt))

        return await self._serve(
            request, fault, lambda: self._submit_answer(request), fake, created
        )

    # -- upload -----------------------------------------------------------------

    async def _upload_answer(self, request: web.Request) -> _Answer:
        """Refuse, read the multipart body, detect the image type and store it."""
        state = self._state
        refusal = self._refusal(request, time.monotonic())
        if refusal is not None:
            return _Answer(refusal)
        try:
            data, filename = await read_upload(request, state.config.max_upload_bytes)
            if sniff_image(data) is None:
                raise UploadError(
                    400, "file: not a JPEG, PNG, GIF or WebP image (detected from its bytes)"
                )
        except UploadError as exc:
            state.stats.rejected_uploads += 1
            return _Answer(state.errors.response(exc.status, exc.message, param="file"))
        upload = state.add_upload(data, filename)
        return _Answer(json_response(state.upload_payload(upload)), upload.upload_id)

    async def upload(self, request: web.Request) -> web.StreamResponse:
        """`POST /v1/uploads/images`."""
        state = self._state
        state.note_api_request("upload", time.monotonic())
        fault = state.faults.draw("upload")

        def fake() -> bytes:
            url = f"{state.storage_url}/uploads/img_{new_task_id(state.rng)[5:]}/x.png"
            return _dumps({"url": url, "filename": "x.png", "content_type": "image/png"})

        def created(_upload_id: str) -> None:
            state.stats.ambiguous_uploads += 1

        return await self._serve(
            request, fault, lambda: self._upload_answer(request), fake, created
        )

    # -- status -----------------------------------------------------------------

    def _other_task_id(self, task_id: str) -> str:
        """The newest task that is not `task_id`, or a made-up id if there is none."""
        for other in reversed(self._state.tasks):
            if other != task_id:
                return other
        return new_task_id(self._state.rng)

    async def status(self, request: web.Request) -> web.StreamResponse:
        """`GET /v1/tasks/{task_id}` (`?language=` is accepted and ignored)."""
        state = self._state
        state.note_api_request("status", time.monotonic())
        task = state.note_status_call(request.match_info["task_id"])
        fault = state.faults.draw("status")
        kind = fault.kind if fault is not None else None
        if fault is not None:
            state.stats.count_fault(fault.kind)
            early = await self._cut_short(fault, request)
            if early is not None:
                return early
            if kind is FaultKind.ECHO_KEY and (task is None or state.rng.random() < 0.5):
                return echo_error(state.errors, _token_of(request))
            if kind is FaultKind.SLOW:
                await asyncio.sleep(state.config.slow_delay)
        refusal = self._refusal(request, time.monotonic())
        if refusal is not None:
            return refusal
        if task is None:
            state.stats.not_found += 1
            return state.errors.response(404, "task not found")
        payload = state.status_payload(task, time.time())
        data = payload["data"]
        match kind:
            case FaultKind.UNKNOWN_STATUS:
                data["status"] = "mystery"
                for field in _TERMINAL_FIELDS:
                    data.pop(field, None)
            case FaultKind.GARBLED:
                garble(data, state.rng)
            case FaultKind.GARBAGE_FIELDS:
                scramble(data, state.rng)
            case FaultKind.WRONG_ID:
                point_at(data, self._other_task_id(task.task_id))
            case FaultKind.ECHO_KEY:
                echo_key_in(data, _token_of(request))
            case FaultKind.TRUNCATED:
                return truncated_response(_dumps(payload))
        return json_response(payload)

    @web.middleware
    async def styled_http_errors(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """aiohttp's own errors on API paths (404 no route, 405, 413 body too big) as JSON."""
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400 or not request.path.startswith("/v1/"):
                raise
            allow = exc.headers.get("Allow")
            return self._state.errors.response(
                exc.status, exc.reason.lower(), headers={"Allow": allow} if allow else None
            )

    async def date_header(self, _request: web.Request, response: web.StreamResponse) -> None:
        """Stamp every response with the server clock's ``Date`` (aiohttp's is replaced)."""
        response.headers["Date"] = self._state.clock.http_date(time.time())


def build_api_app(state: EmulatorState) -> web.Application:
    """The aiohttp application of the API host."""
    handlers = _ApiHandlers(state)
    app = web.Application(middlewares=[handlers.styled_http_errors])
    app.on_response_prepare.append(handlers.date_header)
    router = app.router
    router.add_post("/v1/videos/generations", handlers.submit)
    router.add_get("/v1/tasks/{task_id}", handlers.status, allow_head=False)
    router.add_post("/v1/uploads/images", handlers.upload)
    add_control_routes(router, state)
    return app
