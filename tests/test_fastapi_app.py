"""The FastAPI example service: in-process over ASGI (lifespan run) and under a real uvicorn."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from support.uvicorn import APP_DIR, service_env, serving

from kling_async import (
    AuthenticationError,
    BadRequestError,
    InsufficientCreditsError,
    InvalidResponseError,
    KlingError,
    KlingSession,
    RateLimitError,
    RequestTimeoutError,
    RequestValidationError,
    ServerError,
    SessionClosedError,
    SubmissionUncertainError,
    TaskCancelledError,
    TaskFailedError,
    TaskNotFoundError,
    TextToVideo,
)
from kling_async.emulator import Emulator
from kling_async.testing import (
    FAST_RETRY,
    fail_prompt,
    fast_config,
    rate_limit,
    server_error,
    session_for,
    slow_prompt,
)


def _load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("kling_fastapi_example", APP_DIR / "app.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # pydantic resolves the models' annotations through it
    spec.loader.exec_module(module)
    return module


example = _load_example()


@asynccontextmanager
async def in_process(
    emulator: Emulator, session_options: dict[str, Any] | None = None, **options: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """The example app with its lifespan run, served over httpx's ASGI transport."""
    app = example.create_app(lambda: session_for(emulator, **(session_options or {})), **options)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://service") as client,
    ):
        yield client
    assert app.state.kling.closed


@pytest.fixture
async def client(kling_emulator: Emulator) -> AsyncIterator[httpx.AsyncClient]:
    async with in_process(kling_emulator) as client:
        yield client


def sse_events(text: str) -> list[tuple[str, dict[str, Any] | None]]:
    """(event, data) pairs of a server-sent-events body; comments come as (":", None)."""
    events: list[tuple[str, dict[str, Any] | None]] = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        if block.startswith(":"):
            events.append((":", None))
            continue
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    return events


async def submit(client: httpx.AsyncClient, prompt: str, **fields: Any) -> str:
    response = await client.post("/videos", json={"prompt": prompt, **fields})
    assert response.status_code == 202, response.text
    task_id: str = response.json()["id"]
    return task_id


# -- in-process ---------------------------------------------------------------------------


async def test_submit_answers_202_with_the_id_and_links(
    client: httpx.AsyncClient, kling_emulator: Emulator
) -> None:
    """POST /videos submits once and answers 202 with the id, a Location and follow-up links."""
    response = await client.post("/videos", json={"prompt": "a cat", "mode": "pro"})
    assert response.status_code == 202
    body = response.json()
    task_id = body["id"]
    assert response.headers["location"] == f"/videos/{task_id}"
    assert body["events_url"] == f"/videos/{task_id}/events"
    assert body["result_url"] == f"/videos/{task_id}/result"
    assert kling_emulator.task_ids() == [task_id]
    assert kling_emulator.task_record(task_id).request["mode"] == "pro"


async def test_image_to_video_body_becomes_an_image_request(
    client: httpx.AsyncClient, kling_emulator: Emulator
) -> None:
    """A body with image_urls is sent as image-to-video, with its last frame."""
    task_id = await submit(
        client,
        "the cat walks",
        image_urls=["https://example.com/a.jpg"],
        last_frame_image="https://example.com/b.jpg",
    )
    request = kling_emulator.task_record(task_id).request
    assert request["image_urls"] == ["https://example.com/a.jpg"]
    assert request["last_frame_image"] == "https://example.com/b.jpg"


async def test_status_reattaches_by_id(client: httpx.AsyncClient, kling_emulator: Emulator) -> None:
    """GET /videos/{id} fetches the status now, from the id alone."""
    task_id = await submit(client, "a busy market")
    response = await client.get(f"/videos/{task_id}")
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == task_id
    assert body["status"] in {"pending", "processing", "completed"}
    assert 0 <= body["progress"] <= 100
    assert body["estimated_time"] > 0
    assert kling_emulator.stats.status_calls[task_id] == 1


async def test_result_waits_and_answers_with_the_url(
    client: httpx.AsyncClient, kling_emulator: Emulator
) -> None:
    """GET /result waits for the task and answers 200 with the storage URL."""
    task_id = await submit(client, "a sunrise")
    response = await client.get(f"/videos/{task_id}/result", params={"timeout": 5})
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == task_id
    assert body["url"].startswith(kling_emulator.storage_url)
    assert body["video_urls"] == [body["url"]]
    status = (await client.get(f"/videos/{task_id}")).json()
    assert (status["status"], status["progress"]) == ("completed", 100)
    assert status["video_urls"][0].startswith(f"{kling_emulator.storage_url}/files/{task_id}/")


async def test_result_answers_202_while_running(
    client: httpx.AsyncClient, kling_emulator: Emulator
) -> None:
    """GET /result answers 202 with the status and a Retry-After if the timeout passes first."""
    slow_prompt(kling_emulator, "glacier", factor=50)
    task_id = await submit(client, "a glacier")
    response = await client.get(f"/videos/{task_id}/result", params={"timeout": 0.05})
    assert response.status_code == 202
    assert response.headers["retry-after"] == example.STILL_RUNNING_RETRY_AFTER
    assert response.json()["status"] in {"pending", "processing"}


async def test_events_stream_progress_until_done(
    client: httpx.AsyncClient, kling_emulator: Emulator
) -> None:
    """GET /events streams text/event-stream progress events, ending with one done event."""
    slow_prompt(kling_emulator, "river", factor=4)
    task_id = await submit(client, "a river")
    response = await client.get(f"/videos/{task_id}/events")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "done"
    assert kinds.count("done") == 1
    assert set(kinds[:-1]) <= {"progress", ":"}
    data = [payload for _, payload in events if payload is not None]
    progress = [payload["progress"] for payload in data]
    assert progress == sorted(progress)
    assert len(data) >= 3
    assert data[-1]["status"] == "completed"
    assert data[-1]["video_urls"][0].startswith(kling_emulator.storage_url)


async def test_events_of_a_finished_task_is_one_done_event(client: httpx.AsyncClient) -> None:
    """A stream opened after the task ended holds just its final state."""
    task_id = await submit(client, "a rainbow")
    assert (await client.get(f"/videos/{task_id}/result?timeout=5")).status_code == 200
    events = sse_events((await client.get(f"/videos/{task_id}/events")).text)
    assert [kind for kind, _ in events] == ["done"]


@pytest.mark.slow
async def test_events_send_heartbeats_while_quiet(kling_emulator: Emulator) -> None:
    """A quiet stream carries keep-alive comments every `heartbeat` seconds."""
    slow_prompt(kling_emulator, "snail", factor=5)
    async with in_process(kling_emulator, heartbeat=0.01) as client:
        task_id = await submit(client, "a snail")
        events = sse_events((await client.get(f"/videos/{task_id}/events")).text)
    assert (":", None) in events
    assert events[-1][0] == "done"


async def test_failed_task_maps_to_422_everywhere(
    client: httpx.AsyncClient, kling_emulator: Emulator
) -> None:
    """A failed generation: /result is 422 with the server's error, status and events show it."""
    fail_prompt(kling_emulator, "forbidden", code="moderation", message="not allowed")
    task_id = await submit(client, "a forbidden dance")
    result = await client.get(f"/videos/{task_id}/result", params={"timeout": 5})
    assert result.status_code == 422
    assert result.json() == {
        "error": "task_failed",
        "message": "not allowed",
        "task_id": task_id,
        "code": "moderation",
    }
    status = (await client.get(f"/videos/{task_id}")).json()
    assert status["status"] == "failed"
    assert status["error"] == {"code": "moderation", "message": "not allowed"}
    events = sse_events((await client.get(f"/videos/{task_id}/events")).text)
    assert events[-1][0] == "done"
    assert events[-1][1] is not None
    assert events[-1][1]["status"] == "failed"


async def test_two_429s_are_absorbed_by_the_sdk(
    client: httpx.AsyncClient, kling_emulator: Emulator
) -> None:
    """A 429 twice from the API is retried by the SDK: the client sees a plain 202."""
    rate_limit(kling_emulator, times=2, route="submit")
    await submit(client, "a patient robot")
    assert kling_emulator.stats.submit_requests == 3


async def test_persistent_429_from_the_api_is_a_429_with_retry_after(
    client: httpx.AsyncClient, kling_emulator: Emulator
) -> None:
    """When the API keeps answering 429, the service answers 429 with a Retry-After."""
    rate_limit(kling_emulator, times=FAST_RETRY.max_attempts, route="submit")
    response = await client.post("/videos", json={"prompt": "an impatient robot"})
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"  # 0.05 s rounded up to whole seconds
    assert response.json()["error"] == "rate_limited"
    assert kling_emulator.stats.submissions == 0
    task_id = await submit(client, "a calm robot")
    rate_limit(kling_emulator, times=FAST_RETRY.max_attempts, route="status")
    assert (await client.get(f"/videos/{task_id}")).status_code == 429


@pytest.mark.parametrize("kling_emulator_config", [fast_config(retry_after=30.0)])
async def test_long_retry_after_goes_straight_back_to_the_client(kling_emulator: Emulator) -> None:
    """With the service's retry policy, a 429 asking for 30 s is answered at once, not waited."""
    rate_limit(kling_emulator, times=1, route="submit")
    started = time.monotonic()
    async with in_process(kling_emulator, {"retry": example.SERVICE_RETRY}) as client:
        response = await client.post("/videos", json={"prompt": "a cat"})
    assert time.monotonic() - started < 5
    assert response.status_code == 429
    assert response.headers["retry-after"] == "30"
    assert kling_emulator.stats.submit_requests == 1


async def test_unknown_and_malformed_ids(client: httpx.AsyncClient) -> None:
    """An unknown id is 404; an id that cannot be a task id is 422 naming the path field."""
    missing = await client.get("/videos/task_NOPE/result")
    assert missing.status_code == 404
    assert missing.json()["error"] == "task_not_found"
    malformed = await client.get("/videos/bad!id")
    assert malformed.status_code == 422
    assert malformed.json()["detail"][0]["loc"] == ["path", "task_id"]


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"prompt": "a cat", "duration": 16}, ["body", "duration"]),
        ({"prompt": "a cat", "mode": "pro", "duration": 15}, ["body", "duration"]),
        ({"prompt": "  "}, ["body", "prompt"]),
        (
            {"prompt": "a cat", "last_frame_image": "https://x.test/b.jpg"},
            ["body", "last_frame_image"],
        ),
        ({"prompt": "a cat", "image_urls": ["ftp://x.test/a.jpg"]}, ["body", "image_urls"]),
        ({"prompt": "a cat", "duraton": 5}, ["body", "duraton"]),
        ({"duration": 5}, ["body", "prompt"]),
    ],
)
async def test_bad_bodies_are_422_naming_the_field(
    client: httpx.AsyncClient, kling_emulator: Emulator, body: dict[str, Any], loc: list[str]
) -> None:
    """Rules broken in the body (SDK's or pydantic's) are 422 naming the field; nothing is sent."""
    response = await client.post("/videos", json=body)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == loc
    assert kling_emulator.stats.submit_requests == 0


@pytest.mark.parametrize("timeout", ["-1", "301", "soon"])
async def test_result_timeout_is_validated(client: httpx.AsyncClient, timeout: str) -> None:
    """?timeout= must be a number from 0 to MAX_WAIT."""
    response = await client.get("/videos/task_X/result", params={"timeout": timeout})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "timeout"]


async def test_uncertain_submission_is_a_502_saying_so(
    client: httpx.AsyncClient, kling_emulator: Emulator
) -> None:
    """A submit answered 5xx on every attempt is 502 'submission_uncertain'."""
    server_error(kling_emulator, status=503, route="submit", times=FAST_RETRY.max_attempts)
    response = await client.post("/videos", json={"prompt": "a storm"})
    assert response.status_code == 502
    assert response.json()["error"] == "submission_uncertain"
    assert kling_emulator.stats.submit_requests == FAST_RETRY.max_attempts
    assert kling_emulator.stats.submissions == 0


async def test_one_5xx_on_submit_is_retried_to_a_202(
    client: httpx.AsyncClient, kling_emulator: Emulator
) -> None:
    """A submit answered 5xx once is retried (same idempotency key) and accepted."""
    server_error(kling_emulator, status=503, route="submit")
    response = await client.post("/videos", json={"prompt": "a passing storm"})
    assert response.status_code == 202
    assert kling_emulator.stats.submit_requests == 2
    assert kling_emulator.stats.submissions == 1


@pytest.mark.parametrize(
    "kling_emulator_config",
    [fast_config(api_keys=["the-real-key"])],
)
async def test_refused_credentials_are_our_502(client: httpx.AsyncClient) -> None:
    """The API refusing our key is a 502 (our fault upstream), without leaking details."""
    response = await client.post("/videos", json={"prompt": "a cat"})
    assert response.status_code == 502
    assert response.json() == {
        "error": "upstream_auth",
        "message": "the video service is misconfigured",
    }


async def collect(events: AsyncIterator[str]) -> list[str]:
    return [event async for event in events]


async def test_stream_ends_with_an_error_event_when_the_session_closes(
    kling_emulator: Emulator,
) -> None:
    """A stream cut short by the session closing ends with an `error` event, not a crash."""
    slow_prompt(kling_emulator, "glacier", factor=50)
    async with session_for(kling_emulator) as session:
        task = await example.attach(session, (await session.submit(TextToVideo("a glacier"))).id)
        events = example.progress_events(task, heartbeat=10.0)
        collected = asyncio.ensure_future(collect(events))
        await asyncio.sleep(0.1)
        assert not collected.done()
        await session.close()
        received = await collected
    assert all(event.startswith("event: progress") for event in received[:-1])
    last = received[-1]
    assert last.startswith("event: error")
    assert json.loads(last.split("data: ", 1)[1])["status"] == 503


async def test_abandoned_stream_releases_the_poller(kling_emulator: Emulator) -> None:
    """A client going away mid-stream leaves nothing polling for it."""
    slow_prompt(kling_emulator, "glacier", factor=50)
    async with session_for(kling_emulator) as session:
        task = await example.attach(session, (await session.submit(TextToVideo("a glacier"))).id)
        events = example.progress_events(task, heartbeat=0.01)
        assert (await anext(events)).startswith("event: progress")
        assert await anext(events) == ": keep-alive\n\n"
        assert session.poll_stats().tasks == 1
        await events.aclose()
        await asyncio.sleep(0.01)
        assert session.poll_stats().tasks == 0


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (RequestValidationError("duration", "must be 5"), 422),
        (TaskFailedError("t", "c", "m"), 422),
        (TaskCancelledError("t"), 410),
        (TaskNotFoundError(404, 404, "no"), 404),
        (RateLimitError(429, 429, "slow down", retry_after=2.5), 429),
        (BadRequestError(400, 400, "bad"), 422),
        (AuthenticationError(401, 401, "who"), 502),
        (InsufficientCreditsError(402, 402, "broke"), 503),
        (SubmissionUncertainError(None, ServerError(500, 500, "x"), "key-1"), 502),
        (RequestTimeoutError("late"), 504),
        (SessionClosedError("closed"), 503),
        (ServerError(500, 500, "boom"), 502),
        (InvalidResponseError("html"), 502),
        (KlingError("other"), 502),
    ],
)
def test_every_sdk_error_has_an_http_answer(error: KlingError, status: int) -> None:
    """http_error maps each SDK error to its status; 429 carries a whole-second Retry-After."""
    got_status, body, headers = example.http_error(error)
    assert got_status == status
    assert body
    if status == 429:
        assert headers == {"Retry-After": "3"}


# -- under a real uvicorn ----------------------------------------------------------------


@asynccontextmanager
async def uvicorn_service(
    emulator: Emulator, tmp_path: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, Path]]:
    """`uvicorn app:app` in a subprocess, configured by environment like a deployment."""
    env = service_env(emulator.url)
    log = tmp_path / "uvicorn.log"
    async with (
        serving("app:app", "--app-dir", str(APP_DIR), env=env, log=log) as url,
        httpx.AsyncClient(base_url=url, timeout=20) as client,
    ):
        yield client, log


@pytest.mark.slow
@pytest.mark.parametrize("kling_emulator_config", [fast_config(spread=0.0)])
async def test_under_uvicorn_end_to_end(kling_emulator: Emulator, tmp_path: Path) -> None:
    """Under uvicorn: submit, status, a live SSE stream, result, a failed task, an API 429."""
    fail_prompt(kling_emulator, "forbidden", message="not allowed")
    slow_prompt(kling_emulator, "river", factor=10)  # 1 s, done by the first 2 s poll
    async with uvicorn_service(kling_emulator, tmp_path) as (client, log):
        river = await submit(client, "a river")
        quick = await submit(client, "a sparrow")
        doomed = await submit(client, "a forbidden dance")

        status = (await client.get(f"/videos/{river}")).json()
        assert status["status"] in {"pending", "processing"}

        kinds: list[str] = []
        arrivals: list[float] = []
        async with client.stream("GET", f"/videos/{river}/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            async for line in stream.aiter_lines():
                if line.startswith("event: "):
                    kinds.append(line.removeprefix("event: "))
                    arrivals.append(time.monotonic())
                if kinds[-1:] == ["done"] and line.startswith("data: "):
                    assert json.loads(line.removeprefix("data: "))["status"] == "completed"
        assert kinds[0] == "progress"
        assert kinds[-1] == "done"
        assert arrivals[-1] - arrivals[0] > 0.3  # streamed as it happened, not buffered

        result = await client.get(f"/videos/{quick}/result", params={"timeout": 10})
        assert result.status_code == 200
        assert result.json()["url"].startswith(kling_emulator.storage_url)

        failed = await client.get(f"/videos/{doomed}/result", params={"timeout": 10})
        assert (failed.status_code, failed.json()["message"]) == (422, "not allowed")

        rate_limit(kling_emulator, times=example.SERVICE_RETRY.max_attempts, route="submit")
        limited = await client.post("/videos", json={"prompt": "one too many"})
        assert limited.status_code == 429
        assert limited.headers["retry-after"] == "1"
    text = log.read_text()
    assert "Application shutdown complete" in text
    assert "Unclosed" not in text
    assert "Traceback" not in text
    assert kling_emulator.stats.created_tasks.keys() == {river, quick, doomed}


async def test_lifespan_owns_the_session(kling_emulator: Emulator) -> None:
    """The lifespan opens one session for every request and closes it at shutdown."""
    sessions: list[KlingSession] = []

    def factory() -> KlingSession:
        sessions.append(session_for(kling_emulator))
        return sessions[-1]

    app = example.create_app(factory)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s") as client,
    ):
        await submit(client, "one")
        await submit(client, "two")
        assert len(sessions) == 1
        assert not sessions[0].closed
    assert sessions[0].closed
    with pytest.raises(SessionClosedError):
        await sessions[0].submit(TextToVideo("after shutdown"))
