"""Cancellation and closing at awkward moments: nothing breaks, hangs or is left behind."""

from __future__ import annotations

import asyncio
import random
import time

import pytest
from support.sessions import fast_session, stray_tasks

from kling_async import KlingError, RetryPolicy, SessionClosedError, TextToVideo
from kling_async.emulator import Emulator, EmulatorConfig, Fault


@pytest.mark.slow
async def test_random_cancellations_never_disturb_other_awaiters(session, emulator):
    """Cancelling one of two awaiters per task at random moments leaves every other one whole."""
    emulator.script(prompt_contains="cancel-me", time_factor=2.0)
    tasks = await asyncio.gather(
        *(session.submit(TextToVideo(f"cancel-me {i}")) for i in range(60))
    )
    rng = random.Random(5)
    doomed = [asyncio.ensure_future(t.wait()) for t in tasks]
    kept = [asyncio.ensure_future(session.task(t.id).wait()) for t in tasks]

    async def cancel_later(future: asyncio.Future[object]) -> None:
        await asyncio.sleep(rng.uniform(0.0, 0.5))
        future.cancel()

    await asyncio.gather(*(cancel_later(f) for f in doomed))
    results = await asyncio.gather(*kept)
    assert [r.task_id for r in results] == [t.id for t in tasks]
    await asyncio.gather(*doomed, return_exceptions=True)
    assert session.poll_stats().tasks == 0


@pytest.mark.slow
async def test_cancel_mid_request_then_the_session_still_works(emulator):
    """A status call cancelled while its request is in flight leaves the session usable."""
    async with Emulator(EmulatorConfig(time_scale=200.0, slow_delay=0.3)) as emu:
        async with fast_session(emu.url) as session:
            task = await session.submit(TextToVideo("mid-request"))
            emu.inject(Fault("slow", route="status"))
            call = asyncio.ensure_future(session.status(task.id))
            await asyncio.sleep(0.05)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            assert (await task).task_id == task.id


async def test_cancel_mid_backoff_leaves_nothing_running(emulator):
    """A status call cancelled while sleeping between retries stops cleanly."""
    retry = RetryPolicy(max_attempts=5, base_delay=2.0, max_delay=2.0)
    async with fast_session(emulator.url, retry=retry) as session:
        task = await session.submit(TextToVideo("mid-backoff"))
        emulator.inject(Fault("503", route="status", times=4))
        call = asyncio.ensure_future(session.status(task.id))
        await asyncio.sleep(0.05)
        assert 1 <= emulator.stats.status_calls[task.id] < 4  # sleeping before a retry
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
    assert stray_tasks() == set()


@pytest.mark.slow
async def test_cancel_during_download_leaves_no_file(emulator, tmp_path):
    """A download cancelled mid-stream leaves neither the target nor a temporary file."""
    async with Emulator(EmulatorConfig(time_scale=200.0, slow_delay=0.5)) as emu:
        async with fast_session(emu.url) as session:
            result = await session.generate(TextToVideo("downloading"))
            emu.inject(Fault("slow", route="storage"))
            download = asyncio.ensure_future(session.download(result, tmp_path / "v.mp4"))
            await asyncio.sleep(0.1)
            download.cancel()
            with pytest.raises(asyncio.CancelledError):
                await download
    assert list(tmp_path.iterdir()) == []


async def test_closing_mid_flight_fails_every_waiter_promptly(emulator):
    """close() with slow requests in flight ends all waits within a fraction of a second."""
    async with Emulator(EmulatorConfig(time_scale=200.0, slow_delay=5.0)) as emu:
        session = fast_session(emu.url, request_timeout=10.0)
        emu.script(prompt_contains="endless", time_factor=1000.0)
        tasks = [await session.submit(TextToVideo(f"endless {i}")) for i in range(20)]
        waits = [asyncio.ensure_future(t.wait()) for t in tasks]
        await asyncio.sleep(0.05)
        emu.inject(Fault("slow", route="status", times=100))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        await session.close()
        outcomes = await asyncio.gather(*waits, return_exceptions=True)
        assert time.monotonic() - started < 1.0
    assert all(isinstance(o, SessionClosedError) for o in outcomes)
    assert stray_tasks() == set()


async def test_reattach_after_the_session_was_closed(emulator):
    """Task ids from a session closed mid-wait are awaited to the end from a new session."""
    first = fast_session(emulator.url)
    ids = [(await first.submit(TextToVideo(f"survivor {i}"))).id for i in range(5)]
    waits = [asyncio.ensure_future(first.task(i).wait()) for i in ids]
    await first.close()
    assert all(
        isinstance(o, SessionClosedError)
        for o in await asyncio.gather(*waits, return_exceptions=True)
    )
    async with fast_session(emulator.url) as second:
        results = await asyncio.gather(*(second.task(i) for i in ids))
    assert [r.task_id for r in results] == ids
    assert emulator.stats.submissions == 5


async def test_download_cut_off_part_way_leaves_no_partial_file(session, emulator, tmp_path):
    """A body cut off mid-stream on every attempt raises and leaves the directory empty."""
    result = await session.generate(TextToVideo("cut off"))
    emulator.inject(Fault("truncated", route="storage", times=20))
    target = tmp_path / "v.mp4"
    with pytest.raises(KlingError):
        await session.download(result, target)
    assert list(tmp_path.iterdir()) == []
    emulator.clear_faults()
    await session.download(result, target)
    assert target.read_bytes()[4:8] == b"ftyp"
