"""The storage host: a separate origin that serves result videos and uploaded images.

`GET /files/{task_id}/{token}.mp4` streams the shipped sample MP4;
`GET /uploads/{upload_id}/{token}.{ext}` serves an uploaded image with its detected
content type. Both URLs are signed and expire (``url_ttl``). The host counts every
request and every one carrying an Authorization header (the API key must never travel
here). Answers: 404 for an unknown file or token, 403 for an expired token. Its error
bodies are always ``{"code", "message"}`` and its ``Date`` header is aiohttp's own: it is
another host than the API, with its own clock.
"""

from __future__ import annotations

import asyncio
import functools
import time
from importlib import resources

from aiohttp import web

from ._errors import ErrorWriter, json_response
from ._faultkinds import FaultKind
from ._faults import cut_short, drop_connection
from ._state import EmulatorState
from ._uploads import UPLOADS_PATH

__all__ = ["build_storage_app", "sample_video"]

_CHUNK = 16 * 1024


@functools.cache
def sample_video() -> bytes:
    """The bytes of the shipped sample MP4 (a 1 s, 160x90 H.264 clip)."""
    return resources.files(__package__).joinpath("data", "sample.mp4").read_bytes()


class _StorageHandlers:
    __slots__ = ("_errors", "_state")

    def __init__(self, state: EmulatorState) -> None:
        self._state = state
        self._errors = ErrorWriter("code", state.rng)

    async def _serve(
        self,
        request: web.Request,
        locate: tuple[bytes, str, float] | None,
        fault_kind: FaultKind | None,
    ) -> web.StreamResponse:
        """Stream `locate` = (content, content type, signed expiry) or answer 404/403."""
        if locate is None:
            return json_response({"code": 404, "message": "file not found"}, 404)
        content, content_type, expires_at = locate
        if time.time() >= expires_at:
            return json_response({"code": 403, "message": "signed URL expired"}, 403)
        response = web.StreamResponse(headers={"Content-Type": content_type})
        response.content_length = len(content)
        await response.prepare(request)
        if fault_kind is FaultKind.TRUNCATED:
            await response.write(content[: len(content) // 2])
            drop_connection(request, rst=False)
            return response
        for start in range(0, len(content), _CHUNK):
            await response.write(content[start : start + _CHUNK])
        await response.write_eof()
        return response

    async def _fault(
        self, request: web.Request
    ) -> tuple[web.StreamResponse | None, FaultKind | None]:
        """Count the request and serve a storage fault: (an early answer, the fault kind)."""
        state = self._state
        stats = state.stats
        stats.storage_requests += 1
        if "Authorization" in request.headers:
            stats.storage_auth_headers += 1
        fault = state.faults.draw("storage")
        if fault is None:
            return None, None
        stats.count_fault(fault.kind)
        early = await cut_short(fault, request, self._errors, state.config.retry_after)
        if early is None and fault.kind is FaultKind.SLOW:
            await asyncio.sleep(state.config.slow_delay)
        return early, fault.kind

    async def video(self, request: web.Request) -> web.StreamResponse:
        """`GET /files/{task_id}/{token}.mp4`: a completed task's video."""
        early, kind = await self._fault(request)
        if early is not None:
            return early
        state = self._state
        task_id = request.match_info["task_id"]
        file_name = request.match_info["file"]
        task = state.tasks.get(task_id)
        expires_at = None
        if task is not None and file_name.endswith(".mp4"):
            expires_at = state.signer.expiry(task_id, file_name.removesuffix(".mp4"))
        if task is None or expires_at is None or task.status(time.time()) != "completed":
            return await self._serve(request, None, kind)
        return await self._serve(request, (sample_video(), "video/mp4", expires_at), kind)

    async def image(self, request: web.Request) -> web.StreamResponse:
        """`GET /uploads/{upload_id}/{token}.{ext}`: an uploaded image."""
        early, kind = await self._fault(request)
        if early is not None:
            return early
        match = request.match_info
        found = self._state.uploads.find(match["upload_id"], match["file"])
        if found is None:
            return await self._serve(request, None, kind)
        upload, expires_at = found
        return await self._serve(request, (upload.data, upload.content_type, expires_at), kind)


def build_storage_app(state: EmulatorState) -> web.Application:
    """The aiohttp application of the storage host."""
    handlers = _StorageHandlers(state)
    app = web.Application()
    app.router.add_get("/files/{task_id}/{file}", handlers.video, allow_head=False)
    app.router.add_get(UPLOADS_PATH + "/{upload_id}/{file}", handlers.image, allow_head=False)
    return app
