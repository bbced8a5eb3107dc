"""429s that never clear fail fast: the upstream account codes in an error body (1100-1102,
1304) are errors of their own, never waited out; 1303 (too many at once) is a rate limit
that makes a batch send fewer at once. Unknown 429 bodies are waited out as before."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support.batch import Recorder, batch_lines
from support.cli import batch_args, emulator_running, prompts, run_cli, summary_of, write_batch

from kling_async import (
    AuthenticationError,
    ConcurrencyLimitError,
    InsufficientCreditsError,
    PermissionDeniedError,
    RateLimitError,
    TextToVideo,
)
from kling_async._cli._batch import BatchRun
from kling_async._cli._gate import SubmitGate
from kling_async._cli._jobs import BatchOptions
from kling_async._cli._journal import Journal
from kling_async._client import error_from_response
from kling_async.emulator import Emulator, Fault
from kling_async.emulator._faults import UPSTREAM_CODES
from kling_async.testing import fast_config, session_for

RETRY_AFTER = {"Retry-After": "7"}


@pytest.mark.parametrize(
    ("body", "cls"),
    [
        ({"code": 1101, "message": "account in arrears"}, InsufficientCreditsError),
        ({"code": "1102", "message": "resource pack expired"}, InsufficientCreditsError),
        ({"error": {"code": 1101, "message": "x", "type": "t"}}, InsufficientCreditsError),
        ({"success": False, "message": "Your balance is exhausted"}, InsufficientCreditsError),
        ({"code": 429, "message": "insufficient quota for this request"}, InsufficientCreditsError),
        ({"code": 1100, "message": "account abnormal"}, PermissionDeniedError),
        ({"code": 1304, "message": "ip not allowed"}, PermissionDeniedError),
        ({"code": 1303, "message": "too many at once"}, ConcurrencyLimitError),
        ({"code": 1302, "message": "rate limit"}, RateLimitError),
        ({"code": 429, "message": "slow down"}, RateLimitError),
        ({"code": 4290, "message": "who knows"}, RateLimitError),
        (None, RateLimitError),
    ],
    ids=[
        "1101",
        "1102-as-text",
        "1101-error-object",
        "balance-message",
        "quota-message",
        "1100",
        "1304",
        "1303",
        "1302",
        "plain",
        "unknown-code",
        "no-body",
    ],
)
def test_a_429s_body_says_which_error_it_is(body: Any, cls: type[Exception]) -> None:
    """Arrears and exhausted quotas are InsufficientCreditsError, a refused account or IP
    a PermissionDeniedError (an AuthenticationError), 1303 a ConcurrencyLimitError (a
    RateLimitError keeping Retry-After); any other 429 stays a RateLimitError."""
    exc = error_from_response(429, body, RETRY_AFTER)
    assert type(exc) is cls
    assert exc.status == 429
    if isinstance(exc, RateLimitError):
        assert exc.retry_after == 7
    assert isinstance(PermissionDeniedError(429, 1100, "x"), AuthenticationError)


def test_the_codes_count_in_other_statuses_and_in_2xx_bodies() -> None:
    """An upstream account code means the same on a 400, a 403 or in a 200 body; a 5xx
    stays a server error (whether it took a POST is unknown)."""
    assert type(error_from_response(400, {"code": 1102, "message": "x"}, {})) is (
        InsufficientCreditsError
    )
    assert type(error_from_response(403, {"code": 1304, "message": "x"}, {})) is (
        PermissionDeniedError
    )
    assert type(error_from_response(200, {"code": 1101, "message": "x"}, {})) is (
        InsufficientCreditsError
    )
    assert not isinstance(
        error_from_response(502, {"code": 1101, "message": "x"}, {}), (InsufficientCreditsError)
    )


ACCOUNT_CODES = [
    (1101, "code", InsufficientCreditsError),
    (1102, "error_object", InsufficientCreditsError),
    (1101, "success_false", InsufficientCreditsError),  # only the message says why
    (1102, "success_false", InsufficientCreditsError),
    (1100, "code", PermissionDeniedError),
    (1304, "error_object", PermissionDeniedError),
]


@pytest.mark.parametrize(("code", "style", "cls"), ACCOUNT_CODES)
async def test_a_submit_refused_for_the_account_fails_at_once(
    code: int, style: str, cls: type[Exception]
) -> None:
    """One POST, no retry and no wait for the Retry-After: the account problem is raised
    as itself, and nothing is created."""
    async with Emulator(fast_config(error_style=style, retry_after=30)) as emulator:
        emulator.inject(Fault("429", route="submit", code=code, times=5))
        async with session_for(emulator) as session:
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(cls):
                await session.submit(TextToVideo("a cat"))
            assert loop.time() - started < 5
        assert (emulator.stats.submit_requests, emulator.stats.submissions) == (1, 0)


@pytest.mark.parametrize(("code", "style", "cls"), ACCOUNT_CODES)
async def test_a_status_refused_for_the_account_fails_that_task_without_a_pause(
    code: int, style: str, cls: type[Exception]
) -> None:
    """On a status check the account error fails that task's waiters at once; the session
    is not paused for the Retry-After, so another task still ends promptly."""
    async with Emulator(fast_config(error_style=style, retry_after=30)) as emulator:
        async with session_for(emulator) as session:
            doomed = await session.submit(TextToVideo("doomed"))
            fine = await session.submit(TextToVideo("fine"))
            emulator.inject(Fault("429", route="status", code=code))
            async with asyncio.timeout(10):
                with pytest.raises(cls):
                    await doomed.wait()
                assert session.poll_stats().paused_for == 0
                assert (await fine.wait()).task_id == fine.id


async def test_an_unknown_429_is_still_waited_out() -> None:
    """A 429 whose body names no account problem is retried after its Retry-After."""
    async with Emulator(fast_config(retry_after=0.2)) as emulator:
        emulator.inject(Fault("429", route="submit", code=1302, times=2))
        async with session_for(emulator) as session:
            loop = asyncio.get_running_loop()
            started = loop.time()
            await session.submit(TextToVideo("a cat"))
            assert loop.time() - started >= 0.4
        assert (emulator.stats.submit_requests, emulator.stats.submissions) == (3, 1)


async def test_every_upstream_code_reaches_the_wire_in_each_style(
    http: aiohttp.ClientSession,
) -> None:
    """A 429 fault's code (or the config's rate_limit_code) is the body's code, with its
    message, in the styles that carry a code; Retry-After is sent too."""
    for style in ("code", "error_object"):
        config = fast_config(error_style=style, rate_limit=1, rate_limit_code=1303)
        async with Emulator(config) as emulator:
            url = emulator.url + "/v1/videos/generations"
            auth = {"Authorization": "Bearer k"}
            for code in UPSTREAM_CODES:
                emulator.inject(Fault("429", route="submit", code=code))
                async with http.post(url, json={}, headers=auth) as response:
                    body = await response.json()
                assert response.status == 429 and "Retry-After" in response.headers
                error = body.get("error", body)
                assert (error["code"], error["message"]) == (code, UPSTREAM_CODES[code])
            async with http.post(url, json={}, headers=auth) as response:
                pass  # the rate limit's one request a second
            async with http.post(url, json={}, headers=auth) as response:
                body = await response.json()
            assert response.status == 429
            assert body.get("error", body)["code"] == 1303
    with pytest.raises(ValueError, match="only a 429"):
        Fault("500", code=1101)


# -- the batch -----------------------------------------------------------------------------


async def test_a_batch_stops_submitting_when_the_account_is_in_arrears(tmp_path: Path) -> None:
    """1101 on the first POST: that line keeps its key, no other line is sent, and the
    run says why."""
    lines = batch_lines(tmp_path, "one", "two", "three")
    async with Emulator(fast_config()) as emulator:
        emulator.inject(Fault("429", route="submit", code=1101))
        display = Recorder()
        with Journal(tmp_path / "j.sqlite3") as journal:
            async with session_for(emulator) as session:
                run = BatchRun(
                    session, journal, lines, BatchOptions(tmp_path, concurrency=1), display
                )
                await run.run()
            (row,) = journal.rows().values()
        assert [job.state for job in run.jobs] == ["error", "stopped", "stopped"]
        assert (row.state, row.key) == ("intent", lines[0].key)
        assert run.halted is not None and "1101" in run.halted
        assert any(note.startswith("stopping submissions:") for note in display.notes)
        assert "arrears" in (run.jobs[1].error or "")
        assert (emulator.stats.submit_requests, emulator.stats.submissions) == (1, 0)


async def test_too_many_at_once_sends_fewer_at_once_and_fails_no_line(tmp_path: Path) -> None:
    """1303 over and over: the batch halves its submit concurrency and sends the refused
    lines again with their own keys; every line is done, each paid once."""
    lines = batch_lines(tmp_path, *(f"line {i}" for i in range(8)))
    async with Emulator(fast_config(retry_after=0.01)) as emulator:
        emulator.inject(Fault("429", route="submit", code=1303, times=40))
        display = Recorder()
        with Journal(None) as journal:
            async with session_for(emulator) as session:
                run = BatchRun(
                    session, journal, lines, BatchOptions(tmp_path, concurrency=4), display
                )
                await run.run()
        assert [job.state for job in run.jobs] == ["done"] * 8
        assert any("submitting 2 at a time now" in note for note in display.notes)
        assert emulator.stats.submissions == 8
        assert all(len(ids) == 1 for ids in emulator.stats.tasks_by_key.values())
        assert emulator.pending_faults() == []


async def test_the_gate_halves_on_refusal_and_climbs_back() -> None:
    """Each refusal halves the limit (to one at least); a run of successes as long as the
    limit adds one, up to the limit asked for."""
    gate = SubmitGate(8)
    assert [gate.refused() for _ in range(5)] == [True, True, True, False, False]
    assert gate.limit == 1
    for _ in range(1 + 2 + 3 + 4 + 5 + 6 + 7 + 8):
        await gate.succeeded()
    assert gate.limit == 8
    held = 0

    async def hold() -> None:
        nonlocal held
        async with gate:
            held += 1
            await asyncio.sleep(0.01)

    gate.refused()
    tasks = [asyncio.ensure_future(hold()) for _ in range(6)]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert held == 4
    await asyncio.gather(*tasks)
    assert held == 6
    assert gate.limit == 4


@pytest.mark.slow
def test_the_batch_command_says_why_it_stopped_submitting(tmp_path: Path) -> None:
    """``kling-async emulator --rate-limit 1 --rate-limit-code 1101``: after the first POST
    every request is refused for the account: the first task's status checks fail it, the
    second POST stops the batch submitting, which says why and exits 1."""
    options = ("--time-scale", "200", "--rate-limit", "1", "--rate-limit-code", "1101")
    with emulator_running(*options) as emulator:
        file = write_batch(tmp_path / "b.jsonl", prompts(4))
        result = run_cli(
            *batch_args(file, tmp_path / "out", emulator, "--concurrency", "1"), cwd=tmp_path
        )
        submissions = emulator.stats()["submissions"]
    assert result.returncode == 1
    assert "submissions stopped: an earlier submission was refused" in result.stderr
    assert "1101" in result.stderr
    summary = summary_of(result.stdout)
    assert "arrears" in summary["stopped_submitting"]
    assert summary["counts"] == {"error": 2, "stopped": 2}
    assert submissions == 1
