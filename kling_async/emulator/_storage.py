"""The storage host: a separate origin that serves result videos from signed URLs.

`GET /files/{task_id}/{token}.mp4` streams the shipped sample MP4. It counts every
request and every one carrying an Authorization header (the API key must never
travel here). Answers: 404 for an unknown task or token, 403 for an expired token.
"""

from __future__ import annotations

import asyncio
import functools
import time
from importlib import resources

from aiohttp import web

from ._faults import ERROR_KINDS, drop_connection, error_response, json_response
from ._state import EmulatorState

__all__ = ["build_storage_app", "sample_video"]

_CHUNK = 16 * 1024


@functools.cache
def sample_video() -> bytes:
    """The bytes of the shipped sample MP4 (a 1 s, 160x90 H.264 clip)."""
    return resources.files(__package__).joinpath("data", "sample.mp4").read_bytes()


class _StorageHandlers:
    __slots__ = ("_state",)

    def __init__(self, state: EmulatorState) -> None:
        self._state = state

    async def download(self, request: web.Request) -> web.StreamResponse:
        state = self._state
        stats = state.stats
        stats.storage_requests += 1
        if "Authorization" in request.headers:
            stats.storage_auth_headers += 1
        fault = state.faults.draw("storage")
        if fault is not None:
            stats.count_fault(fault.kind)
            if fault.kind == "reset":
                return drop_connection(request)
            if fault.kind in ERROR_KINDS:
                return error_response(fault.kind, state.config.retry_after)
            if fault.kind == "slow":
                await asyncio.sleep(state.config.slow_delay)
        task_id = request.match_info["task_id"]
        file_name = request.match_info["file"]
        task = state.tasks.get(task_id)
        token = file_name.removesuffix(".mp4")
        expires_at = None
        if task is not None and file_name.endswith(".mp4"):
            expires_at = state.signer.expiry(task_id, token)
        if task is None or expires_at is None or task.status(time.time()) != "completed":
            return json_response({"code": 404, "message": "file not found"}, 404)
        if time.time() >= expires_at:
            return json_response({"code": 403, "message": "signed URL expired"}, 403)
        video = sample_video()
        response = web.StreamResponse(headers={"Content-Type": "video/mp4"})
        response.content_length = len(video)
        await response.prepare(request)
        if fault is not None and fault.kind == "truncated":
            await response.write(video[: len(video) // 2])
            drop_connection(request, rst=False)
            return response
        for start in range(0, len(video), _CHUNK):
            await response.write(video[start : start + _CHUNK])
        await response.write_eof()
        return response


def build_storage_app(state: EmulatorState) -> web.Application:
    """The aiohttp application of the storage host."""
    handlers = _StorageHandlers(state)
    app = web.Application()
    app.router.add_get("/files/{task_id}/{file}", handlers.download, allow_head=False)
    return app
