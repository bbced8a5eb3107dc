"""One process awaiting tasks by id: the worker of the multi-process Redis tests.

    python tests/redis_worker.py '{"base_url": ..., "api_key": ..., "redis": ..., "poll": {...}}'

It opens a :class:`KlingSession` (``redis`` null: none, polling on its own; ``lease_ttl``
replaces the Redis lease's 3 s; ``rejoin_within`` waits up to that many seconds after the last
wake for the session to share through Redis again before ``done``), prints a
``ready`` line, reads one line of task ids (a JSON list) from stdin, re-attaches to each
with ``session.task(id)`` and awaits them all. Every line it prints is JSON on stdout:

    {"event": "ready", "pid": 1234}
    {"event": "woke", "id": "task_...", "at": <unix time>}
    {"event": "woke", "id": "task_...", "at": <unix time>, "error": "TaskTimeoutError: ..."}
    {"event": "sent", "status_requests": 97}        (every 0.25 s while waiting)
    {"event": "done", "status_requests": 412, "degraded": false}

so the parent can tell when each task woke this process, which process does the checking
(the one holding the leases), and kill it mid-wait.
Warnings of the SDK (such as "Redis unreachable") go to stderr.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from typing import Any

from kling_async import KlingSession, PollPolicy, RetryPolicy


def say(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


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
                say("sent", status_requests=session.poll_stats().status_requests)

        reporter = asyncio.ensure_future(report())
        await asyncio.gather(*(one(task_id) for task_id in ids))
        reporter.cancel()
        for _ in range(int(config.get("rejoin_within", 0.0) / 0.05)):
            if session.poll_stats().shared:  # the last wake can come before Redis is probed
                break
            await asyncio.sleep(0.05)
        stats = session.poll_stats()
        say("done", status_requests=stats.status_requests, degraded=not stats.shared)


if __name__ == "__main__":
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(message)s")
    asyncio.run(main(json.loads(sys.argv[1])))
