"""Chaos: tasks through faulty and hostile answers lose nothing and pay for nothing twice."""

from __future__ import annotations

import asyncio
import gc
import random
import time
from typing import Any

import pytest
from support.sessions import API_KEY, stray_tasks

from kling_async import (
    GenericRequest,
    KlingSession,
    PollPolicy,
    RetryPolicy,
    Shot,
    TaskFailedError,
    TextToVideo,
    VideoRequest,
)
from kling_async.emulator import Emulator, EmulatorConfig, Fault

pytestmark = pytest.mark.slow  # a thousand tasks, and submits held for seconds

TASKS = 1000
DEADLINE = 30.0
RATE = 600


async def test_a_thousand_tasks_through_twenty_percent_faults():
    """Every task ends in its true outcome, each prompt paid once, rate and cleanup hold,
    through 429s, 5xx, resets, slow, truncated, HTML, garbled, junk-filled, wrong-task and
    key-echoing answers."""
    loop = asyncio.get_running_loop()
    loop_errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: loop_errors.append(context))
    config = EmulatorConfig(
        time_scale=200.0,
        spread=0.25,
        queue_time=4.0,
        fault_rate=0.2,
        fault_kinds=(
            "429",
            "500",
            "502",
            "503",
            "reset",
            "slow",
            "truncated",
            "html",
            "garbled",
            "garbage_fields",
            "wrong_id",
            "echo_key",
        ),
        # A "slow" answer outlasts the client's timeout; a busy machine that stalls the
        # loop past it too only costs a retry: the same key replays the same task.
        slow_delay=0.6,
        retry_after=0.05,
        seed=2026,
    )
    poll = PollPolicy(
        min_interval=0.02, max_interval=0.3, max_requests_per_second=RATE, max_concurrency=32
    )
    retry = RetryPolicy(max_attempts=10, base_delay=0.01, max_delay=0.1)
    prompts = [f"chaos {i}" + (" [fail]" if i % 10 == 0 else "") for i in range(TASKS)]
    async with Emulator(config) as emu:
        session = KlingSession(
            api_key=API_KEY, base_url=emu.url, poll=poll, retry=retry, request_timeout=0.3
        )
        handles = await asyncio.gather(*(session.submit(TextToVideo(p)) for p in prompts))
        started = time.monotonic()
        outcomes = await asyncio.gather(
            *(h.wait(timeout=DEADLINE) for h in handles), return_exceptions=True
        )
        waited = time.monotonic() - started
        stats = emu.stats
        records = {h.id: emu.task_record(h.id) for h in handles}
        await session.close()

    # Every task ended in its true outcome, well before its deadline.
    assert waited < DEADLINE
    for handle, outcome in zip(handles, outcomes, strict=True):
        if records[handle.id].outcome == "completed":
            assert not _is_error(outcome), outcome
            assert outcome.task_id == handle.id
        else:
            assert isinstance(outcome, TaskFailedError), outcome
    # Each prompt was paid for once, under its own key, and every task is known.
    created = stats.created_tasks
    assert sorted(created.values()) == sorted(prompts)
    assert set(created) == {h.id for h in handles}
    assert all(len(ids) == 1 for ids in stats.tasks_by_key.values())
    assert stats.submits_without_key == 0
    # The session-wide rate cap held in every 1 s window the emulator saw.
    assert 0 < stats.max_status_per_second <= RATE
    assert sum(stats.faults_injected.values()) > 0.1 * stats.requests_total
    # Nothing left running, nothing unretrieved.
    assert stray_tasks() == set()
    gc.collect()
    await asyncio.sleep(0)
    assert loop_errors == []


def paid_request(i: int) -> VideoRequest:
    """The i-th paid request: typed, a story in one shot, or another model's (generic)."""
    prompt = f"paid {i}"
    if i % 3 == 1:
        return TextToVideo(multi_prompt=[Shot(prompt, 5)], mode="4k")  # a story of one shot
    if i % 3 == 2:
        return GenericRequest(prompt, model="kling-3.0-turbo", extra_fields={"resolution": "720p"})
    return TextToVideo(prompt)


async def test_lost_submit_answers_never_pay_twice():
    """300 submits (typed, multi-shot and generic alike), 10 % of whose answers are lost
    after the task was created and 10 % failing before: no SubmissionUncertainError, no
    task created twice, every task known, every POST carrying a key."""
    submits = 300
    rng = random.Random(11)
    faults = [
        Fault(
            rng.choice(("500", "502", "reset", "truncated", "hang", "slow")),
            route="submit",
            when=when,
        )
        for when in ("after", "before")
        for _ in range(submits // 10)
    ]
    rng.shuffle(faults)
    config = EmulatorConfig(time_scale=200.0, slow_delay=0.5, retry_after=0.05, seed=7)
    retry = RetryPolicy(max_attempts=6, base_delay=0.01, max_delay=0.1)
    async with Emulator(config) as emu:
        emu.inject(*faults)
        async with KlingSession(
            api_key=API_KEY, base_url=emu.url, retry=retry, request_timeout=0.25
        ) as session:
            results = await asyncio.gather(
                *(session.submit(paid_request(i)) for i in range(submits)),
                return_exceptions=True,
            )
        stats = emu.stats
    assert [r for r in results if _is_error(r)] == []
    assert sorted(stats.created_tasks.values()) == sorted(f"paid {i}" for i in range(submits))
    assert set(stats.created_tasks) == {task.id for task in results}
    assert all(len(ids) == 1 for ids in stats.tasks_by_key.values())
    assert len(stats.tasks_by_key) == submits
    assert stats.submits_without_key == 0
    assert stats.idempotent_replays >= submits // 10 - 5  # the lost answers, replayed
    assert emu.pending_faults() == []


def _is_error(value: object) -> bool:
    return isinstance(value, BaseException)


async def test_queued_submits_get_their_whole_timeout():
    """Submits beyond the connection limit wait before their timeout starts: none look ambiguous."""
    config = EmulatorConfig(time_scale=200.0, slow_delay=0.2)
    async with Emulator(config) as emu:
        emu.inject(Fault("slow", route="submit", times=30))
        session = KlingSession(
            api_key=API_KEY,
            base_url=emu.url,
            poll=PollPolicy(max_concurrency=1),
            request_timeout=0.35,
        )
        async with session:
            tasks = await asyncio.gather(
                *(session.submit(TextToVideo(f"q {i}")) for i in range(30))
            )
        assert len({t.id for t in tasks}) == 30
        assert emu.stats.submissions == 30
