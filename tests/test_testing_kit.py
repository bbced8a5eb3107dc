"""kling_async.testing: the pytest fixtures, the scripting helpers and emulated_session."""

from __future__ import annotations

import sys
import textwrap
import time

import pytest

from kling_async import (
    KlingSession,
    NetworkError,
    PollPolicy,
    SubmissionUncertainError,
    TaskCancelledError,
    TaskFailedError,
    TaskTimeoutError,
    TextToVideo,
)
from kling_async.emulator import Emulator
from kling_async.testing import (
    FAST_POLL,
    FAST_RETRY,
    TEST_API_KEY,
    EmulatorProcess,
    cancel_prompt,
    connection_reset,
    emulated_session,
    fail_prompt,
    fast_config,
    rate_limit,
    scaled_poll,
    server_error,
    session_for,
    slow_prompt,
)


async def test_fixtures_give_a_session_bound_to_a_running_emulator(
    kling_session: KlingSession, kling_emulator: Emulator
) -> None:
    """kling_session talks to kling_emulator: a 60 s job completes in well under a second."""
    assert kling_session.config.base_url == kling_emulator.url
    assert kling_session.config.poll == FAST_POLL
    assert kling_session.config.retry == FAST_RETRY
    started = time.monotonic()
    result = await kling_session.generate(TextToVideo("a cat on a meadow"), timeout=5)
    assert time.monotonic() - started < 1.5
    assert result.url.startswith(kling_emulator.storage_url)
    assert kling_emulator.stats.submissions == 1
    assert kling_emulator.stats.status_calls[result.task_id] >= 1


def test_fast_config_defaults_and_overrides() -> None:
    """fast_config runs jobs 600x faster with short Retry-After, and takes any config field."""
    config = fast_config(rate_limit=3, seed=1)
    assert (config.time_scale, config.retry_after, config.rate_limit) == (600.0, 0.05, 3)
    assert config.estimated_time == 60.0


async def test_fail_prompt_fails_matching_tasks_only(
    kling_session: KlingSession, kling_emulator: Emulator
) -> None:
    """fail_prompt makes matching prompts end failed with the given code and message."""
    fail_prompt(kling_emulator, "forbidden", code="moderation", message="not allowed")
    doomed = await kling_session.submit(TextToVideo("a forbidden dance"))
    fine = await kling_session.submit(TextToVideo("a permitted dance"))
    with pytest.raises(TaskFailedError) as caught:
        await doomed.wait(5)
    assert (caught.value.code, caught.value.message) == ("moderation", "not allowed")
    assert (await fine.wait(5)).url


async def test_cancel_prompt_cancels_matching_tasks(
    kling_session: KlingSession, kling_emulator: Emulator
) -> None:
    """cancel_prompt makes matching prompts end cancelled."""
    cancel_prompt(kling_emulator, "abandon")
    task = await kling_session.submit(TextToVideo("abandon ship"))
    with pytest.raises(TaskCancelledError):
        await task.wait(5)


@pytest.mark.parametrize("kling_emulator_config", [fast_config(spread=0.0)])
async def test_slow_prompt_stretches_the_run_time(
    kling_session: KlingSession, kling_emulator: Emulator
) -> None:
    """slow_prompt multiplies a matching task's run time by its factor."""
    slow_prompt(kling_emulator, "glacier", factor=8.0)
    slow = await kling_session.submit(TextToVideo("a glacier calving"))
    quick = await kling_session.submit(TextToVideo("a hummingbird"))
    slow_record = kling_emulator.task_record(slow.id)
    quick_record = kling_emulator.task_record(quick.id)
    assert slow_record.run_time == pytest.approx(8.0 * quick_record.run_time, rel=0.01)
    await quick.wait(5)
    with pytest.raises(TaskTimeoutError):
        await slow.wait(0.05)


async def test_rate_limit_twice_is_absorbed_by_retries(
    kling_session: KlingSession, kling_emulator: Emulator
) -> None:
    """rate_limit(times=2) answers 429 twice; the session retries and the emulator counts it."""
    rate_limit(kling_emulator, times=2, route="submit")
    task = await kling_session.submit(TextToVideo("a patient robot"))
    stats = kling_emulator.stats
    assert (stats.submit_requests, stats.submissions) == (3, 1)
    assert stats.faults_injected == {"429": 2}
    assert kling_emulator.pending_faults() == []
    assert task.id in kling_emulator.task_ids()


async def test_rate_limit_on_status_route(
    kling_session: KlingSession, kling_emulator: Emulator
) -> None:
    """A 429 scripted on the status route hits status checks, not submits."""
    task = await kling_session.submit(TextToVideo("a busy street"))
    rate_limit(kling_emulator, times=1, route="status")
    snapshot = await kling_session.status(task.id)
    assert snapshot.id == task.id
    assert kling_emulator.stats.status_calls[task.id] == 2
    assert kling_emulator.stats.submit_requests == 1


async def test_server_error_on_submit_is_retried_then_uncertain(
    kling_session: KlingSession, kling_emulator: Emulator
) -> None:
    """One server_error on submit is retried with the same key; one per attempt leaves the
    submission uncertain; bad statuses are refused."""
    fault = server_error(kling_emulator, status=502, route="submit")
    assert fault.kind == "502"
    await kling_session.submit(TextToVideo("a passing storm"))
    server_error(kling_emulator, status=503, route="submit", times=FAST_RETRY.max_attempts)
    with pytest.raises(SubmissionUncertainError) as info:
        await kling_session.submit(TextToVideo("a storm"))
    assert info.value.idempotency_key
    with pytest.raises(ValueError, match="500, 502 or 503"):
        server_error(kling_emulator, status=404)


async def test_connection_reset_on_status_is_retried(
    kling_session: KlingSession, kling_emulator: Emulator
) -> None:
    """connection_reset drops the next status request; the SDK retries the GET."""
    task = await kling_session.submit(TextToVideo("a quiet lake"))
    connection_reset(kling_emulator, times=1, route="status")
    assert (await kling_session.status(task.id)).id == task.id
    assert kling_emulator.stats.faults_injected == {"reset": 1}


async def test_emulated_session_without_pytest_fixtures() -> None:
    """emulated_session runs an emulator and a bound session, and closes both on exit."""
    async with emulated_session(fast_config(seed=3), api_key="custom") as (session, emulator):
        assert session.config.api_key == "custom"
        result = await session.generate(TextToVideo("a lighthouse"), timeout=5)
        assert result.url.startswith(emulator.storage_url)
        assert emulator.stats.submissions == 1
    assert session.closed
    async with session_for(emulator) as probe:  # the emulator no longer listens
        with pytest.raises(NetworkError):
            await probe.submit(TextToVideo("anyone there?"))


async def test_session_for_builds_an_unopened_session(kling_emulator: Emulator) -> None:
    """session_for binds a new session to the emulator with the test key; options override."""
    session = session_for(kling_emulator, request_timeout=3.0)
    async with session:
        assert (session.config.api_key, session.config.request_timeout) == (TEST_API_KEY, 3.0)
        await session.generate(TextToVideo("a kite"), timeout=5)
    assert session.closed


@pytest.mark.slow
async def test_emulator_process_serves_from_its_own_process_and_stops() -> None:
    """EmulatorProcess runs the emulator command in a child process: a generation through
    it is counted and recorded there, counters reset, and the child is gone on exit."""
    async with EmulatorProcess("--time-scale=600", "--seed=5") as emu:
        assert emu.url.startswith("http://127.0.0.1:") and emu.url in repr(emu)
        async with KlingSession(api_key=TEST_API_KEY, base_url=emu.url, poll=FAST_POLL) as s:
            result = await s.generate(TextToVideo("a heron"), timeout=10)
        stats = await emu.stats()
        assert stats["submissions"] == 1 and stats["status_calls_total"] >= 1
        record = await emu.record(result.task_id)
        assert record["outcome"] == "completed" and record["prompt"] == "a heron"
        assert (await emu.records([result.task_id])) == {result.task_id: record}
        await emu.reset_stats()
        assert (await emu.stats())["submissions"] == 0
        process = emu._process
    assert process is not None and process.returncode is not None


@pytest.mark.slow
async def test_emulator_process_that_cannot_start_says_so() -> None:
    """Flags the emulator command refuses end in a RuntimeError naming them."""
    with pytest.raises(RuntimeError, match="--time-scale=-1"):
        async with EmulatorProcess("--time-scale=-1"):
            pass


@pytest.mark.slow
async def test_emulator_process_that_never_starts_is_stopped_with_a_clear_error(
    tmp_path, monkeypatch
) -> None:
    """A child that prints no URL within startup_timeout is stopped, and the error says so."""
    silent = tmp_path / "silent-python"
    silent.write_text("#!/bin/sh\nexec sleep 60\n")
    silent.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(silent))
    monkeypatch.setattr(EmulatorProcess, "startup_timeout", 0.5)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"did not start within 0\.5 s"):
        async with EmulatorProcess("--seed=1"):
            pass
    assert time.monotonic() - started < 15


def test_scaled_poll_is_the_default_policy_on_a_faster_clock() -> None:
    """scaled_poll divides the default intervals by the time scale and multiplies the cap by
    it unless one is given; the rest of the policy is the default; a scale <= 0 is refused."""
    default = PollPolicy()
    policy = scaled_poll(20)
    assert policy.min_interval == default.min_interval / 20
    assert policy.max_interval == default.max_interval / 20
    assert policy.max_requests_per_second == default.max_requests_per_second * 20
    assert (policy.max_concurrency, policy.jitter) == (default.max_concurrency, default.jitter)
    assert scaled_poll(20, 100).max_requests_per_second == 100
    with pytest.raises(ValueError, match="time_scale: must be > 0"):
        scaled_poll(0)


@pytest.mark.slow
def test_documented_conftest_and_example_test_pass(pytester: pytest.Pytester) -> None:
    """The README's conftest line, example test and marker work in a fresh pytest run."""
    pytester.makeini(
        """
        [pytest]
        asyncio_mode = auto
        asyncio_default_fixture_loop_scope = function
        filterwarnings = error
        """
    )
    # Importing the module before naming it must not trip pytest's assertion rewriter.
    pytester.makeconftest(
        'from kling_async.testing import fast_config\npytest_plugins = ["kling_async.testing"]\n'
    )
    pytester.makepyfile(
        test_readme=textwrap.dedent(
            """
            import pytest
            from kling_async import TaskFailedError, TextToVideo
            from kling_async.testing import fail_prompt, rate_limit

            async def test_a_failed_generation(kling_session, kling_emulator):
                fail_prompt(kling_emulator, "forbidden", message="not allowed")
                task = await kling_session.submit(TextToVideo("a forbidden dance"))
                with pytest.raises(TaskFailedError, match="not allowed"):
                    await task

            @pytest.mark.kling_emulator(retry_after=0.01)
            async def test_two_429s_are_retried(kling_session, kling_emulator):
                rate_limit(kling_emulator, times=2)
                video = await kling_session.generate(TextToVideo("a cat"), timeout=5)
                assert kling_emulator.config.retry_after == 0.01
                assert video.url.startswith(kling_emulator.storage_url)
                assert kling_emulator.stats.faults_injected == {"429": 2}
            """
        )
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
