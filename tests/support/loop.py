"""An event loop in a thread of its own, for synchronous tests that drive async things.

A test that blocks (a subprocess run to its end, a browser call) would stall anything
served on its own loop; on a :class:`LoopThread` an in-process emulator keeps serving,
and ``kling_async.testing.EmulatorProcess``'s control calls run to completion.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

__all__ = ["WAIT", "LoopThread", "loop_thread"]

T = TypeVar("T")

WAIT = 60.0
"""Seconds any one call on the loop may take: generous, the machine is busy."""


class LoopThread:
    """A running event loop and the thread it runs in."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and return its result (within :data:`WAIT`)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(WAIT)

    def call(self, function: Callable[..., T], *args: Any) -> T:
        """Run ``function(*args)`` on the loop (what is not thread-safe runs there)."""

        async def run() -> T:
            return function(*args)

        return self.run(run())

    @contextlib.contextmanager
    def entered(self, manager: AbstractAsyncContextManager[T]) -> Iterator[T]:
        """``async with manager`` on the loop, for as long as the block runs."""
        value = self.run(manager.__aenter__())
        try:
            yield value
        except BaseException as exc:
            if not self.run(manager.__aexit__(type(exc), exc, exc.__traceback__)):
                raise
        else:
            self.run(manager.__aexit__(None, None, None))


@contextlib.contextmanager
def loop_thread() -> Iterator[LoopThread]:
    """A loop running in a daemon thread until the block ends."""
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def main() -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(started.set)
        try:
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

    thread = threading.Thread(target=main, name="kling-test-loop", daemon=True)
    thread.start()
    assert started.wait(WAIT), "the loop thread did not start"
    try:
        yield LoopThread(loop)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(WAIT)
