"""A scripted Transport: the documented seam for testing the SDK without a server.

``KlingSession(transport=ScriptedTransport(answer))`` sends every request to
``answer(method, path, n)`` (``n``: how many times that path was asked, this time
included), which returns a JSON-able body (HTTP 200), a ``(status, body, headers)``
tuple, a ``RawResponse``, or an exception to raise (a ``TransportError`` as a real
transport would). Every call is recorded (:class:`Call`) with its monotonic time.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from kling_async import KlingSession, RawResponse, SessionClosedError
from kling_async.testing import session_for

__all__ = [
    "Answer",
    "Call",
    "ScriptedTransport",
    "one_answer",
    "scripted_session",
    "status_body",
    "task_of",
]

Answer = Callable[[str, str, int], Any]


class Call(NamedTuple):
    """One request the transport was asked to send."""

    at: float
    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes | None
    url: str


def status_body(task_id: str, status: str = "completed", progress: int = 100, **extra: Any):
    """A status answer for ``task_id`` (a completed one carries a video)."""
    data: dict[str, Any] = {"id": task_id, "status": status, "progress": progress, **extra}
    if status == "completed":
        data.setdefault("result", {"videos": [{"url": f"https://cdn.test/{task_id}.mp4"}]})
    return {"code": 200, "data": data}


def task_of(path: str) -> str:
    """The task id a status path names."""
    return path.rsplit("/", 1)[-1]


class ScriptedTransport:
    """Answers requests from a script and records when each one was made."""

    def __init__(self, answer: Answer, delay: float = 0.0) -> None:
        self.answer = answer
        self.delay = delay
        self.calls: list[Call] = []
        self.counts: dict[str, int] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.closed = False

    def paths(self, method: str = "GET") -> list[str]:
        """The paths asked with ``method``, in order."""
        return [call.path for call in self.calls if call.method == method]

    def times(self, method: str = "GET") -> list[float]:
        """When each ``method`` request was made (monotonic), in order."""
        return [call.at for call in self.calls if call.method == method]

    async def send(self, method, url, *, headers, body, timeout, max_bytes):
        if self.closed:
            raise SessionClosedError("transport closed")
        path = urlsplit(url).path
        self.calls.append(Call(time.monotonic(), method, path, dict(headers), body, url))
        self.counts[path] = self.counts.get(path, 0) + 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            result = self.answer(method, path, self.counts[path])
        finally:
            self.in_flight -= 1
        if isinstance(result, BaseException):
            raise result
        if isinstance(result, RawResponse):
            return result
        status, payload, extra = result if isinstance(result, tuple) else (200, result, {})
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return RawResponse(status, {"Content-Type": "application/json", **extra}, raw)

    def download(self, url, *, timeout, read_timeout):
        raise AssertionError("this script serves no downloads")

    async def close(self) -> None:
        self.closed = True


def one_answer(status: int, body: Any, headers: Mapping[str, str] | None = None):
    """A transport that answers every request with the same raw response."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = RawResponse(status, dict(headers or {}), raw)
    return ScriptedTransport(lambda method, path, n: response)


def scripted_session(transport: ScriptedTransport, **options: Any) -> KlingSession:
    """A session on a scripted transport (``session_for`` on a made-up API URL)."""
    options.setdefault("api_key", "sk-scripted-test-key")
    return session_for("https://api.test", transport=transport, **options)
