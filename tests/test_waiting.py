"""Background loops never lose the cancellation meant to end them."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from kling_async._waiting import stop_if_cancelled, wait_event


async def test_a_wait_returns_whether_the_event_came():
    """True when the event is set in time, False when the deadline passes first."""
    event = asyncio.Event()
    assert await wait_event(event, 0.01) is False
    asyncio.get_running_loop().call_later(0.01, event.set)
    assert await wait_event(event, 5) is True


async def test_a_loop_ends_even_when_its_cancellation_was_swallowed():
    """A loop whose cancellation a library caught (as some do mid-command) still ends at
    its next wait: the cancel request is honoured, not lost."""
    event = asyncio.Event()
    rounds = 0

    async def loop() -> None:
        nonlocal rounds
        while True:
            rounds += 1
            with contextlib.suppress(asyncio.CancelledError):  # a careless library
                await asyncio.sleep(0.01)
            await wait_event(event, 0.01)

    task = asyncio.ensure_future(loop())
    await asyncio.sleep(0.03)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 2)
    assert rounds < 50


async def test_stop_if_cancelled_is_silent_for_a_task_not_asked_to_stop():
    """Nothing happens while no cancellation is pending."""
    stop_if_cancelled()
