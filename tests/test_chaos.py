"""Chaos: 1,000 tasks through 20 % faulty requests lose nothing and pay for nothing twice."""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

from conftest import API_KEY, stray_tasks

from kling_async import (
    KlingSession,
    PollPolicy,
    RetryPolicy,
    SubmissionUncertainError,
    TaskFailedError,
    TextToVideo,
)
from kling_async.emulator import Emulator, EmulatorConfig, Fault

TASKS = 1000
DEADLINE = 30.0
RATE = 600


async def test_a_thousand_tasks_through_twenty_percent_faults():
    """Every task ends in its true outcome; ambiguity, rate, deadlines and cleanup all hold."""
    loop = asyncio.get_running_loop()
    loop_errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: loop_errors.append(context))
    config = EmulatorConfig(
        time_scale=200.0,
        spread=0.25,
        queue_time=4.0,
        fault_rate=0.2,
        fault_kinds=("429", "500", "502", "503", "reset", "slow", "truncated", "html"),
        # A "slow" answer must outlast the client's timeout, and an ordinary one must never
        # reach it: both margins are 1.5 s, as a busy machine stalls the loop for 0.4 s+.
        slow_delay=3.0,
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
            api_key=API_KEY, base_url=emu.url, poll=poll, retry=retry, request_timeout=1.5
        )
        submitted = await asyncio.gather(
            *(session.submit(TextToVideo(p)) for p in prompts), return_exceptions=True
        )
        known = {t.id: p for p, t in zip(prompts, submitted, strict=True) if not _is_error(t)}
        uncertain = {p for p, t in zip(prompts, submitted, strict=True) if _is_error(t)}
        other = [
            t for t in submitted if _is_error(t) and not isinstance(t, SubmissionUncertainError)
        ]
        assert other == []

        started = time.monotonic()
        handles = [t for t in submitted if not _is_error(t)]
        outcomes = await asyncio.gather(
            *(h.wait(timeout=DEADLINE) for h in handles), return_exceptions=True
        )
        waited = time.monotonic() - started
        stats = emu.stats
        records = {h.id: emu.task_record(h.id) for h in handles}
        await session.close()

    # Every known task ended in its true outcome, well before its deadline.
    assert waited < DEADLINE
    for handle, outcome in zip(handles, outcomes, strict=True):
        truth = records[handle.id].outcome
        if truth == "completed":
            assert not _is_error(outcome), outcome
            assert outcome.task_id == handle.id
        else:
            assert isinstance(outcome, TaskFailedError), outcome
    # Uncertainty was raised exactly where a POST was faulted ambiguously (not on 429s).
    ambiguous = {prompt for prompt, kind, _ in stats.faulted_submissions if kind != "429"}
    assert uncertain == ambiguous
    assert len(known) + len(uncertain) == TASKS
    # No task created twice, none the client does not know of beyond the ambiguous ones.
    created = stats.created_tasks
    assert len(set(created.values())) == len(created)
    after_fault_ids = {task_id for task_id, _ in stats.ambiguous_submissions}
    assert set(created) - set(known) <= after_fault_ids
    assert set(known) <= set(created)
    # The session-wide rate cap held in every 1 s window the emulator saw.
    assert 0 < stats.max_status_per_second <= RATE
    assert sum(stats.faults_injected.values()) > 0.1 * stats.requests_total
    # Nothing left running, nothing unretrieved.
    assert stray_tasks() == set()
    gc.collect()
    await asyncio.sleep(0)
    assert loop_errors == []


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
