"""The suite's sessions and its check for leftovers.

Every session a test opens comes from ``kling_async.testing.session_for`` (the kit users
get): :func:`fast_session` is it with the suite's one default on top, a 2 s request
timeout, so a hostile server that never answers fails a test in seconds.
"""

from __future__ import annotations

import asyncio
import functools

from kling_async.testing import TEST_API_KEY, session_for

__all__ = ["API_KEY", "fast_session", "stray_tasks"]

API_KEY = TEST_API_KEY
"""The key the suite's sessions send."""

fast_session = functools.partial(session_for, request_timeout=2.0)
"""``session_for`` (fast poll and retry policies) with a 2 s request timeout: give it an
emulator, an ``EmulatorProcess`` or any base URL, and ``KlingSession`` keywords."""


def stray_tasks() -> set[asyncio.Task[object]]:
    """asyncio tasks still alive besides the current one, ignoring the emulator's server side."""
    stray = set()
    for task in asyncio.all_tasks():
        code = getattr(task.get_coro(), "cr_code", None)
        filename = code.co_filename if code is not None else ""
        if task is not asyncio.current_task() and "aiohttp/web_" not in filename:
            stray.add(task)
    return stray
