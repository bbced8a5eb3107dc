"""The FastAPI example as deployed, plus one header naming the worker process that answered.

``uvicorn support.fastapi_worker_app:app --workers 4``, with ``examples/fastapi_app`` and
``tests/`` on the import path, serves the example's app unchanged but for an
``X-Worker-Pid`` header on every answer, so a test can tell uvicorn's workers apart.
"""

from __future__ import annotations

import os
from typing import Any

from app import app as example  # examples/fastapi_app/app.py

__all__ = ["app"]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The example's ASGI app, its answers' headers naming this process."""

    async def named(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            pid = (b"x-worker-pid", str(os.getpid()).encode())
            message = {**message, "headers": [*message.get("headers", ()), pid]}
        await send(message)

    await example(scope, receive, named if scope["type"] == "http" else send)
