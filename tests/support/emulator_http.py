"""Bare HTTP to an in-process emulator (a plain ``aiohttp`` client: the ``http`` fixture of
``conftest.py``), and the emulator's command in a child process, to read what it prints.

For everything else a test runs the emulator through ``kling_async.testing``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import attrs

from kling_async.emulator import Emulator, EmulatorConfig

__all__ = [
    "AUTH",
    "BODY",
    "REPO",
    "Command",
    "SUBMIT",
    "emulator_command",
    "fast",
    "post",
    "sleep_until",
    "status",
    "submit",
]

AUTH = {"Authorization": "Bearer test-key"}
BODY: dict[str, Any] = {"model": "kling-v3", "prompt": "a golden cat on a meadow"}
SUBMIT = "/v1/videos/generations"
REPO = Path(__file__).resolve().parents[2]


def fast(**overrides: Any) -> EmulatorConfig:
    """A config where a std 5 s job takes exactly 0.3 s of real time."""
    settings: dict[str, Any] = {"time_scale": 200.0, "spread": 0.0, "seed": 7}
    settings.update(overrides)
    return EmulatorConfig(**settings)


async def call(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> tuple[int, Any]:
    """One request with ``AUTH`` unless other headers are given: the HTTP status and the
    decoded JSON body (None if it is not JSON)."""
    async with http.request(
        method, url, headers=AUTH if headers is None else headers, **kwargs
    ) as response:
        return response.status, await response.json(content_type=None)


async def post(
    http: aiohttp.ClientSession,
    emu: Emulator,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """``POST`` a submit (``BODY`` unless given)."""
    return await call(http, "POST", emu.url + SUBMIT, headers, json=BODY if body is None else body)


async def status(
    http: aiohttp.ClientSession,
    emu: Emulator,
    task_id: str,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """``GET`` a task's status."""
    return await call(http, "GET", f"{emu.url}/v1/tasks/{task_id}", headers)


async def submit(http: aiohttp.ClientSession, emu: Emulator, **fields: Any) -> str:
    """Submit ``BODY`` with ``fields`` on top; the new task's id."""
    code, body = await post(http, emu, {**BODY, **fields})
    assert code == 200, body
    task_id: str = body["data"][0]["task_id"]
    return task_id


async def sleep_until(wall_time: float, margin: float = 0.02) -> None:
    """Sleep until a wall-clock instant (and ``margin`` seconds more)."""
    await asyncio.sleep(max(0.0, wall_time - time.time() + margin))


@attrs.define
class Command:
    """The emulator's command running: its process, and what it printed last."""

    process: asyncio.subprocess.Process
    rest: tuple[bytes, bytes] = (b"", b"")
    """Its stdout and stderr from where the block stopped reading to its end."""


@contextlib.asynccontextmanager
async def emulator_command(*flags: str) -> AsyncIterator[Command]:
    """``python -m kling_async.emulator --port 0 FLAGS`` with its stdout and stderr piped,
    to test what the command itself prints; stopped with SIGTERM when the block ends (its
    exit code, and the rest of its output, are the caller's to check)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kling_async.emulator", "--port", "0", *flags,
        cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    command = Command(process)
    try:
        yield command
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        command.rest = await asyncio.wait_for(process.communicate(), 20)
