"""The session: lifecycle, submit, re-attach, status, upload, download, waiting on many.

What the work is lives beside its subject: uploads in ``_upload`` (``with_uploads``),
downloads with a fresh URL when one expired in ``_download`` (``save_video``), waiting on
many handles in ``_task`` (``as_completed``); the session runs them as its own requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Coroutine, Iterable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from ._client import ApiClient
from ._clock import ServerClock
from ._config import PollPolicy, RetryPolicy, header_token, resolve_config
from ._coordination import Coordinator, LocalCoordinator
from ._download import save_video
from ._exceptions import (
    KlingError,
    RequestValidationError,
    SessionClosedError,
)
from ._forecast import Forecaster
from ._models import TaskSnapshot, VideoRequest, VideoResult, check_task_id
from ._poller import Poller, PollStats
from ._submission import check_idempotency_key, new_idempotency_key, post_generation
from ._task import Task, as_completed, result_of
from ._transport import AiohttpTransport, Transport
from ._upload import upload_image, with_uploads

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["KlingSession"]

logger = logging.getLogger("kling_async")

T = TypeVar("T")

REDIS_URL_ENV = "KLING_REDIS_URL"


def _coordinator(redis: str | Redis | None, api_key: str, poll: PollPolicy) -> Coordinator:
    """Who the poller coordinates with: the sessions sharing a Redis (the ``[redis]``
    extra; ``redis=`` or ``$KLING_REDIS_URL``), or nobody."""
    if redis is None:
        redis = os.environ.get(REDIS_URL_ENV) or None
    if redis is None:
        return LocalCoordinator(poll.max_requests_per_second)
    try:
        from ._redis import RedisCoordinator
    except ImportError as exc:
        raise KlingError(
            "redis=... needs the redis extra: pip install -e '.[redis]' (from a clone)"
        ) from exc
    return RedisCoordinator(redis, api_key, poll)


class KlingSession:
    """An async session with the Kling v3 API: submit jobs, await them, download results.

    ``api_key`` falls back to ``$APIMART_API_KEY``; ``base_url`` to ``$APIMART_BASE_URL``,
    then ``https://api.apimart.ai``. Use it as ``async with KlingSession() as session:``
    (or call :meth:`close`); one session shares one connection pool and one poller.
    ``response_version="2026-07-27"`` opts in to the API's newer response shapes (both
    are read either way); ``transport`` replaces the aiohttp client; ``redis`` (a URL or a
    ``redis.asyncio.Redis``, else ``$KLING_REDIS_URL``) makes sessions in many processes
    that share it and the API key check each task once between them, within one budget.
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        poll: PollPolicy = PollPolicy(),  # noqa: B008 - frozen, so a shared default is safe
        *,
        retry: RetryPolicy = RetryPolicy(),  # noqa: B008
        request_timeout: float = 30.0,
        download_timeout: float = 600.0,
        max_download_bytes: int = 2 * 1024**3,
        allow_insecure: bool = False,
        response_version: str | None = None,
        transport: Transport | None = None,
        redis: str | Redis | None = None,
    ) -> None:
        if response_version is not None:
            rule = "must be a version string such as '2026-07-27'"
            header_token(response_version, "response_version", rule)
        self.config = resolve_config(
            api_key,
            base_url,
            allow_insecure=allow_insecure,
            poll=poll,
            retry=retry,
            request_timeout=request_timeout,
            download_timeout=download_timeout,
            max_download_bytes=max_download_bytes,
            response_version=response_version,
        )
        clock = ServerClock()
        self._transport = transport or AiohttpTransport(limit=poll.max_concurrency + 8)
        self._client = ApiClient(self.config, self._transport, clock)
        self._coordinator = _coordinator(redis, self.config.api_key, poll)
        forecaster = Forecaster(poll, clock)
        self._poller = Poller(self._client, poll, retry, forecaster, self._coordinator)
        self._closed = False
        self._ops: set[asyncio.Task[Any]] = set()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<KlingSession {self.config.base_url} {state}>"

    async def __aenter__(self) -> KlingSession:
        self._check_open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has been called."""
        return self._closed

    def poll_stats(self) -> PollStats:
        """What the shared poller is doing: tasks watched, requests sent, the rate now."""
        return self._poller.stats()

    async def close(self) -> None:
        """End the session: nothing new is sent; a POST already on the wire finishes
        (so its task id is not lost); requests waiting to retry end with
        SessionClosedError, as do pending waits; then connections close."""
        if self._closed:
            return
        self._closed = True
        client = self._client
        client.closing = True
        pending = {op for op in self._ops if not op.done()}
        while pending:
            for op in pending:
                if not client.sending_paid(op):
                    op.cancel()  # asleep before a retry, or not paid: end it now
            client.paid_sent.clear()
            answered = asyncio.ensure_future(client.paid_sent.wait())
            await asyncio.wait({*pending, answered}, return_when=asyncio.FIRST_COMPLETED)
            answered.cancel()
            pending = {op for op in pending if not op.done()}
        await self._poller.close()
        await self._coordinator.close()
        await self._transport.close()

    def _check_open(self) -> None:
        if self._closed:
            raise SessionClosedError("this KlingSession is closed; open a new one")

    async def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a request of the session's own as a task that :meth:`close` can end: a
        close cancels it (SessionClosedError here) unless a paid POST is on the wire."""
        self._check_open()
        op = asyncio.ensure_future(coro)
        self._ops.add(op)
        op.add_done_callback(self._ops.discard)
        try:
            return await asyncio.shield(op)
        except asyncio.CancelledError:
            if op.cancelled() and self._closed:
                raise SessionClosedError("the session was closed during the request") from None
            op.cancel()  # our caller was cancelled: the request goes too
            raise

    # -- submitting ----------------------------------------------------------------------

    async def submit(self, request: VideoRequest, *, idempotency_key: str | None = None) -> Task:
        """Submit one generation (paid) and return its handle at once.

        Every submit carries an ``Idempotency-Key`` (a fresh random one unless you pass
        your own); a submit whose outcome is unknown (timeout, lost connection, 408, 429,
        5xx) is retried with the same key and body, and the server answers with the
        original task instead of a second one. Only when retries run out is it
        :class:`SubmissionUncertainError`, whose ``idempotency_key`` settles it later at
        no extra cost. Local images (``pathlib.Path`` values: in an :class:`ImageToVideo`,
        in any request's ``extra_fields``) are uploaded first; a failed upload submits
        nothing. ``request`` is a :class:`TextToVideo`, an :class:`ImageToVideo` or, for any
        other model, a :class:`GenericRequest`.
        """
        self._check_open()
        if not isinstance(request, VideoRequest):
            raise TypeError(
                "expected a TextToVideo, ImageToVideo or GenericRequest, got "
                f"{type(request).__name__}"
            )
        if idempotency_key is None:
            key = new_idempotency_key()
        else:
            key = check_idempotency_key(idempotency_key)
        return await self._run(self._submit(request, key))

    async def _submit(self, request: VideoRequest, key: str) -> Task:
        request = await with_uploads(self._client, self.config.retry, request)
        task_id, submitted_at = await post_generation(
            self._client, self.config.retry, request, key, closed=lambda: self._closed
        )
        return Task(self._poller, task_id, request, submitted_at=submitted_at, idempotency_key=key)

    async def upload_images(self, request: VideoRequest) -> VideoRequest:
        """``request`` with its local images uploaded and replaced by their URLs (a
        request without local images comes back as it is). ``submit`` does this itself;
        call it first to keep the exact request sent, e.g. to journal it with its key."""
        return await self._run(with_uploads(self._client, self.config.retry, request))

    async def upload_image(self, path: str | os.PathLike[str]) -> str:
        """Upload a local JPEG, PNG, GIF or WebP image; return its URL (valid 72 hours)
        for ``image_urls`` or ``last_frame_image``. Not retried once it may have been
        stored (uploads have no idempotency key); a 413 is ImageTooLargeError."""
        return await self._run(upload_image(self._client, self.config.retry, path))

    async def generate(
        self,
        request: VideoRequest,
        *,
        timeout: float | None = None,
        idempotency_key: str | None = None,
    ) -> VideoResult:
        """Submit and wait: the result of one generation."""
        task = await self.submit(request, idempotency_key=idempotency_key)
        return await task.wait(timeout)

    # -- existing tasks ------------------------------------------------------------------

    def task(self, task_id: str) -> Task:
        """A handle on an existing task id (e.g. saved before a restart)."""
        self._check_open()
        return Task(self._poller, check_task_id(task_id))

    async def status(self, task_id: str) -> TaskSnapshot:
        """The task's status now: one GET within the session's rate cap (and any 429
        pause), retried on transient errors."""
        self._check_open()
        return await self._poller.status(check_task_id(task_id))

    async def as_completed(
        self, tasks: Iterable[Task], *, timeout: float | None = None
    ) -> AsyncIterator[Task]:
        """Yield each handle as its task ends (any outcome: ``await task`` tells which)."""
        async with contextlib.aclosing(as_completed(tasks, timeout)) as ended:
            async for task in ended:
                yield task

    # -- downloading ---------------------------------------------------------------------

    async def download(
        self, task: Task | VideoResult | str, path: str | os.PathLike[str], *, index: int = 0
    ) -> Path:
        """Stream a task's video to ``path`` (waiting for the task first if needed).

        The file appears under ``path`` only once complete. If the URL has expired or the
        storage host refuses it, the task is refreshed once for a fresh URL. Problems on
        this side (a folder in the file's place, a full disk) are DownloadErrors too.
        """
        self._check_open()
        if isinstance(task, str):
            task = self.task(task)
        result = task if isinstance(task, VideoResult) else await task
        if not 0 <= index < len(result.videos):
            raise RequestValidationError(
                "index", f"must pick one of the task's {len(result.videos)} videos", index
            )
        save = save_video(
            self._transport, self.config, result, Path(path), index, self._fresh_result
        )
        return await self._run(save)

    async def _fresh_result(self, task_id: str) -> VideoResult:
        return result_of(await self._poller.status(task_id))
