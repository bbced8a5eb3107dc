"""Waiting in background loops without ever losing a cancellation.

A background loop that goes round again after a timeout, or after an error some library
handled, can miss the cancellation meant to end it (a ``TimeoutError`` that stood in for
it as a deadline passed, a client library that caught it mid-command); whoever awaits
the cancelled task then waits forever. The driver loops (the poller's, the Redis
coordinator's) wait through :func:`wait_event` and check :func:`stop_if_cancelled` on
every round, so a cancellation requested is a cancellation honoured.
"""

from __future__ import annotations

import asyncio

__all__ = ["stop_if_cancelled", "wait_event"]


def stop_if_cancelled() -> None:
    """Raise CancelledError if the current task was asked to stop, even if the request
    was swallowed on the way."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def wait_event(event: asyncio.Event, timeout: float | None) -> bool:
    """Wait until ``event`` is set (True) or ``timeout`` seconds pass (False). A
    cancellation is always raised, even one that lands as the deadline passes."""
    stop_if_cancelled()
    if timeout is None:
        await event.wait()
        return True
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        stop_if_cancelled()
        return False
    return True
