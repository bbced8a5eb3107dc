"""The session end to end against the emulator over real loopback HTTP."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time

import pytest
from support.sessions import API_KEY, fast_session, stray_tasks

from kling_async import (
    AuthenticationError,
    IdempotencyConflictError,
    ImageToVideo,
    KlingError,
    NetworkError,
    PollPolicy,
    RateLimitError,
    RequestValidationError,
    RetryPolicy,
    SessionClosedError,
    SubmissionUncertainError,
    TaskFailedError,
    TaskNotFoundError,
    TaskStatus,
    TaskTimeoutError,
    TextToVideo,
    Video,
    VideoResult,
)
from kling_async.emulator import Emulator, EmulatorConfig, Fault
from kling_async.testing import FAST_RETRY


async def test_submit_returns_a_handle_and_awaiting_gives_the_video(session, emulator):
    """submit returns at once with an id; awaiting it gives video URLs on the storage host."""
    task = await session.submit(TextToVideo("a golden cat running on a meadow"))
    assert task.id.startswith("task_")
    assert emulator.stats.created_tasks[task.id] == "a golden cat running on a meadow"
    result = await task
    assert result.task_id == task.id
    assert result.url.startswith(emulator.storage_url)
    assert result.videos[0].expires_at is not None and result.videos[0].expires_at > time.time()
    assert task.status is TaskStatus.COMPLETED


@pytest.mark.slow
async def test_sent_body_is_the_validated_request(session, emulator):
    """The emulator records exactly the fields of the request, duration as an int."""
    task = await session.submit(
        ImageToVideo("the cat walks", ["https://example.com/cat.jpg"], mode="pro", duration=10)
    )
    body = emulator.task_record(task.id).request
    assert body == {
        "model": "kling-v3",
        "prompt": "the cat walks",
        "mode": "pro",
        "duration": 10,
        "aspect_ratio": "16:9",
        "image_urls": ["https://example.com/cat.jpg"],
    }
    await task


@pytest.mark.slow
async def test_wait_with_deadline_times_out_and_the_task_keeps_running(session, emulator):
    """A passed deadline raises TaskTimeoutError; waiting again still gets the result."""
    emulator.script(prompt_contains="slow", time_factor=4.0)
    task = await session.submit(TextToVideo("a slow sunrise"))
    with pytest.raises(TaskTimeoutError) as info:
        await task.wait(timeout=0.05)
    assert info.value.task_id == task.id
    assert isinstance(info.value, TimeoutError)
    result = await task.wait(timeout=10)
    assert result.task_id == task.id


@pytest.mark.slow
async def test_updates_stream_progress_until_terminal(session, emulator):
    """updates() yields changing snapshots, progress never falling, ending on the final one."""
    emulator.script(prompt_contains="watched", time_factor=3.0)
    task = await session.submit(TextToVideo("a watched pot"))
    seen = [snap async for snap in task.updates()]
    assert seen[-1].status is TaskStatus.COMPLETED
    assert all(not s.status.is_terminal for s in seen[:-1])
    progresses = [s.progress for s in seen]
    assert progresses == sorted(progresses)
    assert len(seen) >= 2
    assert all(a != b for a, b in itertools.pairwise(seen))


async def test_failed_task_raises_with_the_server_error(session):
    """A failed generation raises TaskFailedError carrying the id and the server's error."""
    task = await session.submit(TextToVideo("a cat [fail]"))
    with pytest.raises(TaskFailedError) as info:
        await task
    assert info.value.task_id == task.id
    assert info.value.code == "generation_failed"
    assert info.value.message


async def test_reattach_by_id_from_another_session(emulator):
    """A task id saved from one session is awaited from a brand-new session."""
    async with fast_session(emulator.url) as first:
        task_id = (await first.submit(TextToVideo("a boat"))).id
    async with fast_session(emulator.url) as second:
        result = await second.task(task_id)
    assert result.task_id == task_id
    assert emulator.stats.submissions == 1


async def test_unknown_task_id_raises_not_found(session):
    """Awaiting an id the API does not know raises TaskNotFoundError."""
    with pytest.raises(TaskNotFoundError):
        await session.task("task_doesnotexist").wait(timeout=5)


def test_task_id_with_path_characters_is_refused(session):
    """A task id that could rewrite the URL is refused before any request."""
    with pytest.raises(RequestValidationError, match="task_id"):
        session.task("../v1/videos/generations")


async def test_generate_submits_and_waits(session, emulator):
    """generate() is submit + wait in one call."""
    result = await session.generate(TextToVideo("a lighthouse"))
    assert result.url.startswith(emulator.storage_url)
    assert emulator.stats.submissions == 1


async def test_handles_on_one_id_share_one_status_check(session, emulator):
    """Many handles and awaiters on one task id cost the requests of one."""
    task = await session.submit(TextToVideo("shared"))
    handles = [session.task(task.id) for _ in range(5)]
    waits = [asyncio.ensure_future(h.wait()) for h in handles for _ in range(2)]
    await asyncio.sleep(0.02)
    assert session.poll_stats().tasks == 1
    results = await asyncio.gather(*waits)
    assert {r.task_id for r in results} == {task.id}
    sent = session.poll_stats().status_requests
    assert emulator.stats.status_calls[task.id] == sent
    assert sent <= 8


@pytest.mark.slow
async def test_five_hundred_tasks_at_once(emulator):
    """500 submits through one session all resolve, and the emulator counts exactly 500."""
    async with fast_session(emulator.url) as session:
        tasks = await asyncio.gather(
            *(session.submit(TextToVideo(f"prompt {i}")) for i in range(500))
        )
        results = await asyncio.gather(*tasks)
    assert len({r.task_id for r in results}) == 500
    assert emulator.stats.submissions == 500
    assert emulator.stats.status_calls_total <= 500 * 6


async def test_status_get_retries_5xx_and_bad_bodies(emulator):
    """A status GET is retried through 500, 503, truncated JSON, HTML and a body error code."""
    retry = RetryPolicy(max_attempts=6, base_delay=0.01, max_delay=0.05)
    async with fast_session(emulator.url, retry=retry) as session:
        task = await session.submit(TextToVideo("retry me"))
        for kind in ("500", "503", "truncated", "html", "body_error"):
            emulator.inject(Fault(kind, route="status"))
        snapshot = await session.status(task.id)
    assert snapshot.id == task.id
    assert emulator.pending_faults() == []
    assert sum(emulator.stats.faults_injected.values()) == 5


async def test_retry_after_is_honoured_exactly(emulator):
    """After a 429 with Retry-After, the retry waits at least what the server asked."""
    async with Emulator(EmulatorConfig(time_scale=200.0, retry_after=0.3)) as emu:
        async with fast_session(emu.url) as session:
            task = await session.submit(TextToVideo("patience"))
            emu.inject(Fault("429", route="status"))
            started = time.monotonic()
            await session.status(task.id)
            assert time.monotonic() - started >= 0.3


async def test_submit_retries_a_429_without_paying_twice(session, emulator):
    """A 429 on submit means the server did not take it: retried, one task created."""
    emulator.inject(Fault("429", route="submit", times=2))
    task = await session.submit(TextToVideo("throttled"))
    assert emulator.stats.submissions == 1
    assert list(emulator.stats.created_tasks) == [task.id]


@pytest.mark.parametrize(
    ("kind", "when"),
    [
        ("500", "after"),
        ("reset", "after"),
        ("truncated", "after"),
        pytest.param("hang", "after", marks=pytest.mark.slow),  # the client's 2 s timeout
        ("502", "before"),
    ],
)
async def test_a_lost_submit_answer_is_retried_with_its_key_and_paid_once(
    session, emulator, kind, when
):
    """A 5xx, reset, garbled or lost answer to a POST is retried with the same key and
    body; the server replays the task it created, so exactly one is paid for."""
    emulator.inject(Fault(kind, route="submit", when=when))
    task = await session.submit(TextToVideo("maybe paid"))
    assert emulator.stats.submissions == 1
    assert list(emulator.stats.created_tasks) == [task.id]
    assert emulator.stats.submit_requests == 2
    assert emulator.stats.tasks_by_key == {task.idempotency_key: [task.id]}
    assert emulator.stats.idempotent_replays == (1 if when == "after" else 0)


async def test_uncertain_only_when_retries_run_out_and_settled_by_its_key(session, emulator):
    """Every attempt's answer lost: SubmissionUncertainError carrying the key; submitting
    the same request with that key later returns the task that was created, unpaid."""
    emulator.inject(Fault("500", route="submit", when="after", times=FAST_RETRY.max_attempts))
    request = TextToVideo("maybe paid")
    with pytest.raises(SubmissionUncertainError) as info:
        await session.submit(request)
    error = info.value
    assert error.request == request and error.idempotency_key
    assert emulator.stats.submissions == 1
    task = await session.submit(error.request, idempotency_key=error.idempotency_key)
    assert emulator.stats.submissions == 1
    assert list(emulator.stats.created_tasks) == [task.id]


async def test_a_key_reused_for_another_request_is_a_typed_error(session, emulator):
    """Submitting a different request under a key already used is refused, saying so."""
    await session.submit(TextToVideo("first"), idempotency_key="order-42")
    with pytest.raises(IdempotencyConflictError, match="reused"):
        await session.submit(TextToVideo("second"), idempotency_key="order-42")
    assert emulator.stats.submissions == 1


@pytest.mark.parametrize("key", ["", "has space", "x" * 192, "ключ", 42])
async def test_a_bad_idempotency_key_is_refused_before_sending(session, emulator, key):
    """A key that cannot be a header value is a RequestValidationError; nothing is sent."""
    with pytest.raises(RequestValidationError, match="idempotency_key"):
        await session.submit(TextToVideo("x"), idempotency_key=key)
    assert emulator.stats.submit_requests == 0


async def test_a_submit_timeout_is_retried_with_its_key(emulator):
    """A submit answered slower than the request timeout is retried with the same key:
    the replay returns the task the first attempt created."""
    async with Emulator(EmulatorConfig(time_scale=200.0, slow_delay=1.0)) as emu:
        async with fast_session(emu.url, request_timeout=0.2) as session:
            emu.inject(Fault("slow", route="submit", when="after"))
            task = await session.submit(TextToVideo("slow answer"))
            assert emu.stats.submissions == 1
            assert emu.stats.created_tasks == {task.id: "slow answer"}


async def test_every_submit_carries_its_own_fresh_key(session, emulator):
    """Two submits of the same request are two tasks: each logical request has its key."""
    first = await session.submit(TextToVideo("twice"))
    second = await session.submit(TextToVideo("twice"))
    assert first.id != second.id and first.idempotency_key != second.idempotency_key
    assert emulator.stats.submits_without_key == 0


async def test_the_newer_response_shape_is_read_when_asked_for(emulator):
    """With response_version='2026-07-27' the object-shaped submit answer is read."""
    async with fast_session(emulator.url, response_version="2026-07-27") as session:
        task = await session.submit(TextToVideo("versioned"))
        assert (await task).task_id == task.id


async def test_refused_connection_is_retried_then_raised_as_not_sent(unused_tcp_port):
    """Connection refused: the submit surely did not land, so it is retried, then a
    NetworkError naming the URL tried and where that URL comes from."""
    url = f"http://127.0.0.1:{unused_tcp_port}"
    async with fast_session(url) as session:
        with pytest.raises(NetworkError) as info:
            await session.submit(TextToVideo("nobody home"))
    assert info.value.sent is False
    assert url in str(info.value) and "APIMART_BASE_URL" in str(info.value)


async def test_bad_key_is_an_authentication_error(emulator):
    """401 from the API raises AuthenticationError on submit, and is not retried."""
    async with Emulator(EmulatorConfig(time_scale=200.0, api_keys=["right"])) as emu:
        async with fast_session(emu.url) as session:
            with pytest.raises(AuthenticationError):
                await session.submit(TextToVideo("x"))
            assert emu.stats.rejected_auth == 1


async def test_rate_limited_submit_gives_up_after_the_retry_budget(emulator):
    """Persistent 429s on submit end in RateLimitError after max_attempts, with no task created."""
    async with Emulator(EmulatorConfig(time_scale=200.0, retry_after=0.01)) as emu:
        async with fast_session(emu.url, retry=RetryPolicy(max_attempts=3)) as session:
            emu.inject(Fault("429", route="submit", times=5))
            with pytest.raises(RateLimitError):
                await session.submit(TextToVideo("x"))
            assert emu.stats.submit_requests == 3 and emu.stats.submissions == 0


async def test_cancelling_one_awaiter_leaves_the_others(session):
    """Cancelling one waiter does not disturb the poller or other waiters on the same task."""
    task = await session.submit(TextToVideo("keep going"))
    doomed = asyncio.ensure_future(task.wait())
    survivor = asyncio.ensure_future(session.task(task.id).wait())
    await asyncio.sleep(0.02)
    doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert (await survivor).task_id == task.id


async def test_closing_fails_pending_waiters_and_leaves_no_task(emulator):
    """close() ends every pending wait with SessionClosedError and stops every asyncio task."""
    session = fast_session(emulator.url)
    emulator.script(prompt_contains="long", time_factor=50.0)
    tasks = [await session.submit(TextToVideo(f"long {i}")) for i in range(3)]
    waits = [asyncio.ensure_future(t.wait()) for t in tasks]
    updates = asyncio.ensure_future(_collect(tasks[0]))
    await asyncio.sleep(0.05)
    await session.close()
    outcomes = await asyncio.gather(*waits, updates, return_exceptions=True)
    assert all(isinstance(o, SessionClosedError) for o in outcomes)
    assert stray_tasks() == set()
    with pytest.raises(SessionClosedError):
        await session.submit(TextToVideo("after close"))
    with pytest.raises(SessionClosedError):
        session.task(tasks[0].id)
    with pytest.raises(SessionClosedError):
        await tasks[1].wait()


async def _collect(task):
    return [snap async for snap in task.updates()]


async def test_download_streams_a_real_mp4_without_the_key(session, emulator, tmp_path):
    """download() writes the MP4 atomically and never sends the key to the storage host."""
    task = await session.submit(TextToVideo("download me"))
    path = await session.download(task, tmp_path / "out" / "cat.mp4")
    data = path.read_bytes()
    assert data[4:8] == b"ftyp"
    assert [p.name for p in path.parent.iterdir()] == ["cat.mp4"]
    assert emulator.stats.storage_requests == 1
    assert emulator.stats.storage_auth_headers == 0


async def test_download_refreshes_an_expired_url_once(tmp_path):
    """A URL refused by the storage host (expired) is refreshed once through the API."""
    async with Emulator(EmulatorConfig(time_scale=200.0)) as emu:
        async with fast_session(emu.url) as session:
            result = await session.generate(TextToVideo("expiring"))
            # The same video's URL as signed to expire a second ago, so the fresh one stays
            # valid for minutes: a short url_ttl raced a busy machine, which let the fresh
            # URL expire as well before it was fetched.
            token = emu._state.signer.mint(result.task_id, time.time() - 1)
            url = result.url.rsplit("/", 1)[0] + f"/{token}.mp4"
            stale = VideoResult(result.task_id, (Video(url=url, expires_at=None),))
            path = await session.download(stale, tmp_path / "v.mp4")
            assert path.read_bytes()[4:8] == b"ftyp"
            assert emu.stats.storage_requests == 2
            assert emu.stats.status_calls[result.task_id] >= 1


async def test_cut_off_download_leaves_no_file(session, emulator, tmp_path):
    """A download cut off part-way (every retry) leaves nothing under the target name."""
    result = await session.generate(TextToVideo("fragile"))
    emulator.inject(Fault("truncated", route="storage", times=10))
    with pytest.raises(KlingError):
        await session.download(result, tmp_path / "v.mp4")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
async def test_rate_cap_holds_for_the_whole_session(emulator):
    """With 100 tasks in flight, status requests never exceed max_requests_per_second."""
    poll = PollPolicy(min_interval=0.01, max_interval=0.2, max_requests_per_second=40)
    async with fast_session(emulator.url, poll=poll) as session:
        emulator.script(prompt_contains="capped", time_factor=2.0)
        tasks = await asyncio.gather(
            *(session.submit(TextToVideo(f"capped {i}")) for i in range(100))
        )
        emulator.reset_stats()
        await asyncio.gather(*tasks)
    assert 0 < emulator.stats.max_status_per_second <= 40


async def test_logs_never_contain_the_key(emulator, caplog, tmp_path):
    """At DEBUG level, nothing the SDK logs contains the API key."""
    caplog.set_level(logging.DEBUG, logger="kling_async")
    async with fast_session(emulator.url) as session:
        emulator.inject(Fault("500", route="status"), Fault("429", route="status"))
        result = await session.generate(TextToVideo("log me"))
        await session.download(result, tmp_path / "v.mp4")
    assert caplog.records
    assert all(API_KEY not in r.getMessage() for r in caplog.records)


async def test_download_index_out_of_range_is_a_validation_error(session, tmp_path):
    """Asking for a video the task does not have names the index, before any download."""
    result = await session.generate(TextToVideo("one video"))
    with pytest.raises(RequestValidationError, match="index"):
        await session.download(result, tmp_path / "v.mp4", index=1)
    assert list(tmp_path.iterdir()) == []
