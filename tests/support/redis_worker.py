"""One process awaiting tasks by id: the worker of the multi-process Redis tests.

    python tests/support/redis_worker.py '{"base_url": ..., "api_key": ..., "redis": ...,
                                           "poll": {...}}'

It opens a :class:`KlingSession` (``redis`` null: none, polling on its own; ``lease_ttl``
replaces the Redis lease's 3 s; ``rejoin_within`` waits up to that many seconds after the last
wake for the session to share through Redis again before ``done``; ``stalls``, ``{"longest":
0.2, "every": 0.3, "seed": 1}``, blocks its event loop with ``time.sleep`` for up to
``longest`` seconds at random moments, ``every`` seconds apart on average; ``submit``, a
number, submits that many tasks at once while it waits), prints a
``ready`` line, reads one line of task ids (a JSON list) from stdin, re-attaches to each
with ``session.task(id)`` and awaits them all. Every line it prints is JSON on stdout:

    {"event": "ready", "pid": 1234}
    {"event": "woke", "id": "task_...", "at": <unix time>}
    {"event": "woke", "id": "task_...", "at": <unix time>, "error": "TaskTimeoutError: ..."}
    {"event": "sent", "status_requests": 97, "alone": false, "fallbacks": 0}   (every 0.25 s)
    {"event": "submitted", "ids": ["task_...", ...]}  (with ``submit``)
    {"event": "done", "status_requests": 412, "degraded": false, "alone": false, ...}

so the parent can tell when each task woke this process, which process does the checking
(the one holding the leases), and kill it mid-wait.
Warnings of the SDK (such as "Redis unreachable") go to stderr.

The parent's side is here too (:class:`Worker`), one program for the multi-process tests
and ``benchmarks/redis.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

import attrs

from kling_async import KlingSession, PollPolicy, RetryPolicy, TextToVideo


def say(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


async def stall(longest: float, every: float, seed: int) -> None:
    """Block the event loop now and then, as a busy process's own work would."""
    rng = random.Random(seed)
    while True:
        await asyncio.sleep(rng.uniform(0, 2 * every))
        time.sleep(rng.uniform(0, longest))  # noqa: ASYNC251 (the point: block the loop)


async def main(config: dict[str, Any]) -> None:
    if "lease_ttl" in config:  # a test on a compressed clock compresses the lease with it
        from kling_async import _redis

        _redis.LEASE_TTL = float(config["lease_ttl"])
    session = KlingSession(
        api_key=config["api_key"],
        base_url=config["base_url"],
        poll=PollPolicy(**config["poll"]),
        retry=RetryPolicy(max_attempts=8, base_delay=0.05, max_delay=1.0),
        redis=config.get("redis"),
    )
    async with session:
        stalls = config.get("stalls")
        staller = None
        if stalls is not None:  # each worker of a test stalls at moments of its own
            seed = stalls["seed"] + config.get("worker", 0)
            staller = asyncio.ensure_future(stall(stalls["longest"], stalls["every"], seed))
        say("ready", pid=os.getpid())
        ids: list[str] = json.loads(await asyncio.to_thread(sys.stdin.readline))

        async def one(task_id: str) -> None:
            try:
                await session.task(task_id).wait(timeout=config["timeout"])
            except Exception as exc:
                say("woke", id=task_id, at=time.time(), error=f"{type(exc).__name__}: {exc}")
            else:
                say("woke", id=task_id, at=time.time())

        async def report() -> None:
            while True:
                await asyncio.sleep(0.25)
                say("sent", status_requests=session.poll_stats().status_requests, **budget())

        def budget() -> dict[str, Any]:
            """Whether the budget keeps this process's share now, and how often it fell back
            to it because Redis's grants came too late (a test's look inside)."""
            shared = session._coordinator.budget
            return {
                "alone": getattr(shared, "alone", False),
                "fallbacks": getattr(shared, "fallbacks", 0),
            }

        async def submit(count: int) -> None:
            """Submit ``count`` tasks at once, as a service does while it waits on others:
            with slow submit answers they hold the transport's slots, and status checks
            wait for one."""
            label = f"worker {config.get('worker', 0)} extra"
            tasks = [session.submit(TextToVideo(f"{label} {i}")) for i in range(count)]
            submitted = await asyncio.gather(*tasks)
            say("submitted", ids=[task.id for task in submitted])

        reporter = asyncio.ensure_future(report())
        extra = [submit(config["submit"])] if config.get("submit") else []
        await asyncio.gather(*(one(task_id) for task_id in ids), *extra)
        reporter.cancel()
        if staller is not None:
            staller.cancel()
        for _ in range(int(config.get("rejoin_within", 0.0) / 0.05)):
            if session.poll_stats().shared:  # the last wake can come before Redis is probed
                break
            await asyncio.sleep(0.05)
        stats = session.poll_stats()
        say("done", status_requests=stats.status_requests, degraded=not stats.shared, **budget())


# -- the parent's side: starting workers and reading what they report -----------------------

PROGRAM = str(Path(__file__).resolve())

STARTUP = 30.0
"""Seconds a worker may take to import and say it is ready (a busy 2-core machine)."""


class Worker:
    """One ``redis_worker.py`` process and what it reported."""

    def __init__(self, config: dict[str, Any], log: Path) -> None:
        self.config = config
        self.log = log
        self.woke: dict[str, float] = {}
        self.errors: dict[str, str] = {}
        self.sent = 0
        self.submitted: list[str] = []
        self.reports: list[dict[str, Any]] = []
        """Every periodic report (``sent``, with the budget's ``alone`` and ``fallbacks``)."""
        self.done: dict[str, Any] | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    @property
    def process(self) -> asyncio.subprocess.Process:
        assert self._process is not None
        return self._process

    async def start(self) -> None:
        with self.log.open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable, PROGRAM, json.dumps(self.config, default=attrs.asdict),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log,
            )  # fmt: skip
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), STARTUP)
        if json.loads(line or b"{}").get("event") != "ready":
            raise RuntimeError(f"a worker did not start: {self.stderr()}")
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            message = json.loads(line)
            event = message["event"]
            if event == "woke" and "error" in message:
                self.errors[message["id"]] = message["error"]
            elif event == "woke":
                self.woke[message["id"]] = message["at"]
            elif event == "sent":
                self.sent = message["status_requests"]
                self.reports.append(message)
            elif event == "submitted":
                self.submitted = message["ids"]
            elif event == "done":
                self.done = message

    async def attach(self, ids: list[str]) -> None:
        """Send the task ids to await."""
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(ids).encode() + b"\n")
        await self.process.stdin.drain()

    async def finish(self, timeout: float) -> None:
        """Wait for the process to end and its reports to be read."""
        assert self._reader is not None
        await asyncio.wait_for(asyncio.gather(self.process.wait(), self._reader), timeout)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)

    def stderr(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    async def stop(self) -> None:
        """Kill it if still running (a test that failed half-way)."""
        if self._process is not None and self._process.returncode is None:
            self._process.kill()
            await self._process.wait()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, ValueError):
                await self._reader


if __name__ == "__main__":
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(message)s")
    asyncio.run(main(json.loads(sys.argv[1])))
