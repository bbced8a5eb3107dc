"""The session: lifecycle, submit, re-attach, status, download, and waiting on many tasks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

from ._config import PollPolicy, RetryPolicy, resolve_config
from ._convert import parse_snapshot, parse_submission, request_body
from ._download import ExpiredURLError, stream_to_file
from ._exceptions import (
    InvalidResponseError,
    KlingError,
    NetworkError,
    RequestTimeoutError,
    RequestValidationError,
    ServerError,
    SessionClosedError,
    SubmissionUncertainError,
)
from ._models import TaskSnapshot, VideoRequest, VideoResult, check_task_id
from ._poller import Poller
from ._retry import is_retryable_read, is_retryable_submit, retrying
from ._task import Task, result_of
from ._transport import Transport

__all__ = ["KlingSession"]

logger = logging.getLogger("kling_async")

SUBMIT_PATH = "/v1/videos/generations"


class KlingSession:
    """An async session with the Kling v3 API: submit jobs, await them, download results.

    ``api_key`` falls back to ``$APIMART_API_KEY``; ``base_url`` to ``$APIMART_BASE_URL``,
    then ``https://api.apimart.ai``. Use it as ``async with KlingSession() as session:``
    (or call :meth:`close`); one session shares one connection pool and one poller.
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
    ) -> None:
        self.config = resolve_config(
            api_key,
            base_url,
            allow_insecure=allow_insecure,
            poll=poll,
            retry=retry,
            request_timeout=request_timeout,
            download_timeout=download_timeout,
            max_download_bytes=max_download_bytes,
        )
        self._transport = Transport(self.config)
        self._poller: Poller | None = None
        self._closed = False
        self._post = retrying(self.config.retry, is_retryable_submit)(self._post_once)
        self._get = retrying(self.config.retry, is_retryable_read)(self._get_once)
        self._download = retrying(self.config.retry, is_retryable_read)(stream_to_file)

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

    @property
    def poller(self) -> Poller | None:
        """The shared poller, once something has been waited on (for inspection)."""
        return self._poller

    async def close(self) -> None:
        """Fail pending waits with SessionClosedError, stop the poller, close connections."""
        if self._closed:
            return
        self._closed = True
        if self._poller is not None:
            await self._poller.close()
        await self._transport.close()

    def _check_open(self) -> None:
        if self._closed:
            raise SessionClosedError("this KlingSession is closed; open a new one")

    def _live_poller(self) -> Poller:
        self._check_open()
        if self._poller is None:
            self._poller = Poller(self._transport, self.config.poll)
        return self._poller

    # -- submitting ----------------------------------------------------------------------

    async def _post_once(self, body: dict[str, Any]) -> str:
        return parse_submission(await self._transport.request_json("POST", SUBMIT_PATH, body))

    async def submit(self, request: VideoRequest) -> Task:
        """Submit one generation (paid) and return its handle at once.

        Retried only when the server surely did not take the request (connection refused,
        429). When it may have (timeout after sending, connection lost, 5xx, garbled
        answer), :class:`SubmissionUncertainError` carries the request: nothing is
        submitted twice behind your back.
        """
        self._check_open()
        if not isinstance(request, VideoRequest):
            raise TypeError(f"expected TextToVideo or ImageToVideo, got {type(request).__name__}")
        body = request_body(request)
        try:
            task_id = await self._post(body)
        except (ServerError, RequestTimeoutError, InvalidResponseError) as exc:
            raise SubmissionUncertainError(request, exc) from exc
        except NetworkError as exc:
            if exc.sent:
                raise SubmissionUncertainError(request, exc) from exc
            raise
        logger.debug("submitted %s", task_id)
        return Task(self, task_id, request)

    async def generate(self, request: VideoRequest, *, timeout: float | None = None) -> VideoResult:
        """Submit and wait: the result of one generation."""
        task = await self.submit(request)
        return await task.wait(timeout)

    # -- existing tasks ------------------------------------------------------------------

    def task(self, task_id: str) -> Task:
        """A handle on an existing task id (e.g. saved before a restart)."""
        self._check_open()
        return Task(self, check_task_id(task_id))

    async def _get_once(self, task_id: str) -> TaskSnapshot:
        return parse_snapshot(
            await self._transport.request_json("GET", self._transport.task_path(task_id))
        )

    async def status(self, task_id: str) -> TaskSnapshot:
        """The task's status now: one GET outside the poller, retried on transient errors."""
        self._check_open()
        snapshot: TaskSnapshot = await self._get(check_task_id(task_id))
        return snapshot

    async def as_completed(
        self, tasks: Iterable[Task], *, timeout: float | None = None
    ) -> AsyncIterator[Task]:
        """Yield each handle as its task ends (any outcome: ``await task`` tells which)."""

        async def settle(task: Task) -> Task:
            with contextlib.suppress(KlingError):
                await task.wait()
            return task

        pending = {asyncio.ensure_future(settle(t)) for t in tasks}
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while pending:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                done, pending = await asyncio.wait(
                    pending, timeout=left, return_when=asyncio.FIRST_COMPLETED
                )
                if not done:
                    raise TimeoutError(f"{len(pending)} tasks not finished within {timeout} s")
                for future in done:
                    yield future.result()
        finally:
            for future in pending:
                future.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)

    # -- downloading ---------------------------------------------------------------------

    async def download(
        self, task: Task | VideoResult | str, path: str | os.PathLike[str], *, index: int = 0
    ) -> Path:
        """Stream a task's video to ``path`` (waiting for the task first if needed).

        The file appears under ``path`` only once complete. If the URL has expired or the
        storage host refuses it, the task is refreshed once for a fresh URL.
        """
        self._check_open()
        if isinstance(task, str):
            task = self.task(task)
        result = task if isinstance(task, VideoResult) else await task
        if not 0 <= index < len(result.videos):
            raise RequestValidationError(
                "index", f"must pick one of the task's {len(result.videos)} videos", index
            )
        target = Path(path)
        fresh = False
        expires_at = result.videos[index].expires_at
        if expires_at is not None and expires_at <= time.time() + 5:
            result, fresh = await self._fresh_result(result.task_id), True
        while True:
            try:
                size = await self._download(
                    self._transport,
                    result.videos[index].url,
                    target,
                    max_bytes=self.config.max_download_bytes,
                )
            except ExpiredURLError:
                if fresh:
                    raise
                result, fresh = await self._fresh_result(result.task_id), True
                continue
            logger.info("downloaded %s (%d bytes) to %s", result.task_id, size, target)
            return target

    async def _fresh_result(self, task_id: str) -> VideoResult:
        logger.info("result URL of %s expired or refused; fetching a fresh one", task_id)
        return result_of(await self.status(task_id))
