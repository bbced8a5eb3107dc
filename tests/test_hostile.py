"""Hostile servers, races and bad input at the session's edge: nothing hangs, leaks or
pays twice (each test is a regression for a way it once went wrong)."""

from __future__ import annotations

import asyncio
import gc
import time
import warnings
from typing import Any

import pytest
from aiohttp import web
from support.scripted import ScriptedTransport, scripted_session, status_body, task_of
from support.sessions import stray_tasks

from kling_async import (
    DownloadError,
    KlingError,
    KlingSession,
    SessionClosedError,
    SubmissionUncertainError,
    TextToVideo,
    TransportError,
    Video,
    VideoResult,
)
from kling_async.testing import FAST_RETRY


async def test_closing_during_a_submits_backoff_sends_nothing_more():
    """close() while a submit waits out a 429 ends it with SessionClosedError at once;
    no POST goes out after close, and no aiohttp session is left unclosed."""
    posts: list[float] = []
    posted = asyncio.Event()

    async def limited(request: web.Request) -> web.StreamResponse:
        posts.append(time.monotonic())
        posted.set()
        return web.json_response(
            {"code": 429, "message": "later"}, status=429, headers={"Retry-After": "2"}
        )

    app = web.Application()
    app.router.add_post("/v1/videos/generations", limited)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            session = KlingSession(api_key="sk-test-key-1", base_url=url, retry=FAST_RETRY)
            submit = asyncio.ensure_future(session.submit(TextToVideo("a cat")))
            await posted.wait()
            started = time.monotonic()
            await session.close()
            with pytest.raises(SessionClosedError):
                await submit
            assert time.monotonic() - started < 1.0
            await asyncio.sleep(0.1)
            gc.collect()
        assert len(posts) == 1
        assert not [w for w in caught if "Unclosed" in str(w.message)]
        assert not stray_tasks()
    finally:
        await runner.cleanup()


async def test_a_submit_refused_before_sending_is_not_uncertain():
    """A request the transport refused before sending is 'not submitted', never
    'uncertain': no retry can have paid for it."""
    transport = ScriptedTransport(
        lambda method, path, n: TransportError("refused before sending", sent=False)
    )
    async with scripted_session(transport) as session:
        with pytest.raises(TransportError) as info:
            await session.submit(TextToVideo("x"))
    assert not isinstance(info.value, SubmissionUncertainError)


async def test_an_absurd_estimate_breaks_nothing():
    """A task with estimated_time 1e300 and actual_time 5 ends normally, and later waits in
    the same session still work (no OverflowError)."""
    absurd = status_body("absurd", estimated_time=1e300, actual_time=5)
    transport = ScriptedTransport(
        lambda method, path, n: absurd if task_of(path) == "absurd" else status_body(task_of(path))
    )
    async with scripted_session(transport) as session:
        assert (await session.task("absurd").wait(timeout=5)).task_id == "absurd"
        results = await asyncio.gather(*(session.task(f"t{i}").wait(timeout=5) for i in range(5)))
    assert len(results) == 5


@pytest.mark.slow
async def test_finished_tasks_leave_nothing_behind_without_estimates():
    """2,000 tasks whose server never sends estimated_time leave the session holding none."""

    def answer(method: str, path: str, n: int) -> Any:
        return status_body(task_of(path)) if n > 1 else status_body(task_of(path), "pending", 0)

    transport = ScriptedTransport(answer)
    async with scripted_session(transport) as session:
        await asyncio.gather(*(session.task(f"t{i}").wait(timeout=30) for i in range(2000)))
        assert session.poll_stats().tasks == 0


async def test_a_folder_in_the_videos_place_is_refused_before_downloading(tmp_path):
    """download() to a path that is a directory is a DownloadError, and nothing is fetched."""
    transport = ScriptedTransport(lambda method, path, n: status_body(task_of(path)))
    (tmp_path / "taken").mkdir()
    result = VideoResult("t", (Video("https://cdn.test/t.mp4"),))
    async with scripted_session(transport) as session:
        with pytest.raises(DownloadError, match="is a directory"):
            await session.download(result, tmp_path / "taken")


@pytest.mark.parametrize(
    ("refusal", "uncertain"),
    [
        ((401, {"code": 401, "message": "bad key"}, {}), True),
        ((402, {"code": 402, "message": "no credit"}, {}), True),
        ((400, {"code": 400, "message": "bad duration"}, {}), False),
    ],
    ids=["401", "402", "400"],
)
async def test_a_refusal_after_a_lost_answer_says_what_it_proves(refusal, uncertain):
    """After an attempt whose answer was lost, a 401 or 402 (refused before the key was
    looked at) leaves the submit uncertain, with its key; a 400 (the body itself refused,
    after the key) proves no task was made."""
    lost = (502, {"code": 502, "message": "bad gateway"}, {})
    transport = ScriptedTransport(lambda method, path, n: lost if n == 1 else refusal)
    async with scripted_session(transport) as session:
        with pytest.raises(KlingError) as info:
            await session.submit(TextToVideo("x"))
    assert isinstance(info.value, SubmissionUncertainError) is uncertain
    if uncertain:
        assert info.value.idempotency_key
