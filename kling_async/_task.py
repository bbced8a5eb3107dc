"""The awaitable ``Task`` handle: ``result = await task``."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Generator, Hashable, Iterable
from typing import Any

from ._exceptions import (
    InvalidResponseError,
    KlingError,
    TaskCancelledError,
    TaskFailedError,
    TaskTimeoutError,
)
from ._models import ErrorInfo, TaskSnapshot, TaskStatus, VideoRequest, VideoResult
from ._poller import Poller

__all__ = ["Task", "as_completed", "result_of"]


def result_of(snapshot: TaskSnapshot) -> VideoResult:
    """The result of a terminal snapshot, or the error it stands for."""
    if snapshot.status == TaskStatus.FAILED:
        error = snapshot.error or ErrorInfo()
        raise TaskFailedError(snapshot.id, error.code, error.message)
    if snapshot.status == TaskStatus.CANCELLED:
        raise TaskCancelledError(snapshot.id)
    if not snapshot.videos:
        raise InvalidResponseError(f"task {snapshot.id} completed without any video")
    return VideoResult(task_id=snapshot.id, videos=snapshot.videos)


class Task:
    """A handle on one generation; many handles on one id share the session's checks.

    The id is known the moment the submit returns; ``session.task(id)`` makes a new handle
    for it later (after a restart). Awaiting waits through the session's shared poller.
    """

    __slots__ = ("_poller", "id", "idempotency_key", "request", "snapshot", "submitted_at")

    def __init__(
        self,
        poller: Poller,
        task_id: str,
        request: VideoRequest | None = None,
        *,
        submitted_at: float | None = None,
        idempotency_key: str | None = None,
    ) -> None:
        self._poller = poller
        #: The task id, known the moment the submit returns: keep it, and
        #: ``session.task(id)`` re-attaches to the task from anywhere, later.
        self.id = task_id
        #: The request this handle submitted, local images replaced by their uploaded
        #: URLs (None for a re-attached handle).
        self.request = request
        #: The key its submit carried: submitting the same request with it again returns
        #: this task instead of a new one (None for a re-attached handle).
        self.idempotency_key = idempotency_key
        #: The latest status seen through this handle (None before the first check).
        self.snapshot: TaskSnapshot | None = None
        #: When the submit went out (the event loop's clock): the schedule times the task
        #: from it, even when the wait starts long after (None for a re-attached handle).
        self.submitted_at = submitted_at

    def __repr__(self) -> str:
        status = self.snapshot.status.value if self.snapshot else "unchecked"
        return f"<Task {self.id} {status}>"

    @property
    def status(self) -> TaskStatus | None:
        """The latest status seen, or None before the first check."""
        return self.snapshot.status if self.snapshot else None

    @property
    def done(self) -> bool:
        """True once a terminal status has been seen."""
        return self.snapshot is not None and self.snapshot.status.is_terminal

    @property
    def _kind(self) -> Hashable | None:
        return self.request.kind if self.request is not None else None

    def __await__(self) -> Generator[Any, None, VideoResult]:
        return self.wait().__await__()

    async def wait(self, timeout: float | None = None) -> VideoResult:
        """Wait for the task to end; raise TaskTimeoutError after ``timeout`` seconds.

        A timeout or a cancelled wait leaves the task running remotely and the session's
        poller untouched; awaiting again resumes waiting.
        """
        if self.done:
            assert self.snapshot is not None
            return result_of(self.snapshot)
        future = self._poller.wait(self.id, self._kind, self.submitted_at)
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                self.snapshot = await future
        except TimeoutError:
            if deadline.expired():
                raise TaskTimeoutError(self.id, timeout or 0.0) from None
            raise
        finally:
            self._poller.release(self.id, future)
            if future.done() and not future.cancelled():
                future.exception()  # mark retrieved even if our waiter was cancelled
            else:
                future.cancel()
        return result_of(self.snapshot)

    async def updates(self) -> AsyncGenerator[TaskSnapshot, None]:
        """Yield each new status/progress until a terminal one (which is yielded last)."""
        if self.done:
            assert self.snapshot is not None
            yield self.snapshot
            return
        queue = self._poller.updates(self.id, self._kind, self.submitted_at)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                self.snapshot = item
                yield item
                if item.status.is_terminal:
                    return
        finally:
            self._poller.release(self.id, queue)

    async def refresh(self) -> TaskSnapshot:
        """Fetch the status now (one GET, within the session's rate cap), retried on
        transient errors."""
        self.snapshot = await self._poller.status(self.id)
        return self.snapshot


async def as_completed(
    tasks: Iterable[Task], timeout: float | None = None
) -> AsyncGenerator[Task, None]:
    """Each of ``tasks`` as it ends (any outcome), within ``timeout`` seconds for them all
    (TimeoutError naming how many were left); those left are cancelled on the way out."""

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
