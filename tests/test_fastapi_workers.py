"""The FastAPI example under ``uvicorn --workers 4`` sharing a real redis-server, as its
README says to deploy it: a task submitted on one worker streams from another, and the
four workers awaiting it cost the API about the status requests of one."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.uvicorn import APP_DIR, service_env, serving

from kling_async import KlingSession, TextToVideo
from kling_async.emulator import Emulator
from kling_async.testing import fast_config

pytestmark = pytest.mark.slow  # uvicorn's workers and redis-server in child processes

TESTS = Path(__file__).resolve().parent
WORKERS = 4


@asynccontextmanager
async def uvicorn_workers(
    emulator: Emulator, redis_url: str, tmp_path: Path
) -> AsyncIterator[tuple[str, Path]]:
    """``uvicorn --workers 4`` in a child process, configured by environment like a
    deployment (``KLING_REDIS_URL`` included); yields its URL and log."""
    env = service_env(
        emulator.url,
        KLING_REDIS_URL=redis_url,
        # the example's app.py, and the wrapper naming the worker in a response header
        PYTHONPATH=os.pathsep.join([str(APP_DIR), str(TESTS), os.environ.get("PYTHONPATH", "")]),
    )
    log = tmp_path / "uvicorn.log"
    options = ["--workers", str(WORKERS)]
    options += ["--timeout-keep-alive", "600"]  # a pinned connection (below) stays with its worker
    async with serving("support.fastapi_worker_app:app", *options, env=env, log=log) as url:
        yield url, log


async def pinned_connections(
    url: str, per_worker: int, stack: AsyncExitStack
) -> dict[int, list[httpx.AsyncClient]]:
    """``per_worker`` clients for each worker, by pid: each holds one keep-alive connection
    that the worker accepted (uvicorn's workers race to accept each new one), so a request
    sent on it is served by that worker. Waits for every worker to be up."""
    pinned: dict[int, list[httpx.AsyncClient]] = {}
    # No expiry: httpx drops a connection idle for 5 s by default, and the next request
    # would open a new one that any worker may accept (pinning can take longer on a slow box).
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1, keepalive_expiry=None)
    async with asyncio.timeout(60):
        while len(pinned) < WORKERS or any(len(c) < per_worker for c in pinned.values()):
            client = httpx.AsyncClient(base_url=url, timeout=30, limits=limits)
            pid = int((await client.get("/static/page.css")).headers["x-worker-pid"])
            if len(pinned.setdefault(pid, [])) < per_worker:
                pinned[pid].append(client)
                stack.push_async_callback(client.aclose)
            else:
                await client.aclose()
    return pinned


async def open_stream(
    client: httpx.AsyncClient, task_id: str, stack: AsyncExitStack
) -> tuple[int, httpx.Response]:
    """``/videos/{id}/events`` on ``client``, its body not yet read (closed with
    ``stack``), and the pid of the worker serving it."""
    response = await stack.enter_async_context(client.stream("GET", f"/videos/{task_id}/events"))
    assert response.status_code == 200
    return int(response.headers["x-worker-pid"]), response


async def read_events(response: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    """Every (event, data) of a stream, until it ends."""
    events: list[tuple[str, dict[str, Any]]] = []
    kind = ""
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            kind = line.removeprefix("event: ")
        elif line.startswith("data: "):
            events.append((kind, json.loads(line.removeprefix("data: "))))
    return events


async def test_four_workers_stream_a_task_another_submitted_and_poll_it_once(
    redis_server, tmp_path
):
    """Under uvicorn --workers 4 with KLING_REDIS_URL: a task submitted on one worker
    streams its progress and its end from every worker, and the four awaiting it send
    about the status requests of one session alone, not four times as many."""
    tasks = 3
    config = fast_config(time_scale=4.0, spread=0.1, fail_marker=None, seed=21)
    async with (
        Emulator(config) as emu,
        uvicorn_workers(emu, redis_server.url, tmp_path) as (url, log),
        # The same kind of tasks, awaited by id by one session alone: the yardstick.
        KlingSession(api_key="alone-key", base_url=emu.url) as alone,
        AsyncExitStack() as stack,
    ):
        pinned = await pinned_connections(url, tasks, stack)
        submitter = next(iter(pinned))
        submitted = []
        for i in range(tasks):
            response = await pinned[submitter][0].post("/videos", json={"prompt": f"shared {i}"})
            assert response.status_code == 202, response.text
            assert int(response.headers["x-worker-pid"]) == submitter
            submitted.append(response.json()["id"])
        controls = [(await alone.submit(TextToVideo(f"alone {i}"))).id for i in range(tasks)]
        control = asyncio.gather(*(alone.task(task_id).wait(60) for task_id in controls))
        streams: dict[str, dict[int, httpx.Response]] = {task_id: {} for task_id in submitted}
        for i, task_id in enumerate(submitted):
            for pid, clients in pinned.items():
                served_by, response = await open_stream(clients[i], task_id, stack)
                assert served_by == pid  # the connection stayed with its worker
                streams[task_id][pid] = response
        heard = {
            task_id: dict(
                zip(by_pid, await asyncio.gather(*map(read_events, by_pid.values())), strict=True)
            )
            for task_id, by_pid in streams.items()
        }
        await control
        calls = emu.stats.status_calls
    for by_pid in heard.values():
        assert len(by_pid) == WORKERS  # the submitter and three workers that did not submit
        for events in by_pid.values():
            progress = [data["progress"] for kind, data in events if kind == "progress"]
            assert len(progress) >= 2 and progress == sorted(progress), events
            assert [kind for kind, _ in events] == ["progress"] * len(progress) + ["done"]
            assert events[-1][1]["status"] == "completed"
    shared = statistics.mean(calls[task_id] for task_id in submitted)
    one = statistics.mean(calls[task_id] for task_id in controls)
    print(f"status requests per task: {shared:.1f} by 4 workers, {one:.1f} by one session")
    # One session's polls, plus the status each stream fetches when it opens (one per
    # worker: the app's attach() refreshes): far from the 4x of four sessions on their own.
    assert shared <= one + WORKERS
    assert "Traceback" not in log.read_text()
