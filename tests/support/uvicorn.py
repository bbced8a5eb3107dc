"""The FastAPI example under a real uvicorn in a child process, configured like a deployment.

One launcher (:func:`uvicorn`) for the synchronous browser tests, and the same launcher
for async tests (:func:`serving`), whose stop is awaited in a thread so that their loop
(and the in-process emulator on it) keeps serving while uvicorn shuts down.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

__all__ = ["APP_DIR", "serving", "service_env", "uvicorn"]

APP_DIR = Path(__file__).resolve().parents[2] / "examples" / "fastapi_app"
"""The example service: ``uvicorn app:app --app-dir APP_DIR``."""


def service_env(emulator_url: str, **extra: str) -> dict[str, str]:
    """This process's environment with the service's settings, as a deployment sets them:
    a key, the emulator as the API, and ``extra``."""
    return {
        **os.environ,
        "APIMART_API_KEY": "service-key",
        "APIMART_BASE_URL": emulator_url,
        **extra,
    }


@contextmanager
def uvicorn(
    app: str,
    *options: str,
    env: Mapping[str, str],
    log: Path,
    port: int = 0,
    stop_within: float = 20.0,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``uvicorn APP OPTIONS`` serving a loopback socket this process opened on ``port``
    (0: a free one; the port is known before it starts, and a restart may take it again);
    yields its URL and process, and stops it with SIGINT as a deployment would. Its output
    is appended to ``log``; a uvicorn that does not stop within ``stop_within`` seconds
    fails the test."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart takes the port
    listener.bind(("127.0.0.1", port))
    listener.listen(64)
    port = listener.getsockname()[1]
    with log.open("ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", app, "--fd", str(listener.fileno()), *options],
            env=dict(env), pass_fds=[listener.fileno()],
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
        )  # fmt: skip
    listener.close()  # the child holds it: if it dies, connections fail instead of hanging
    try:
        yield f"http://127.0.0.1:{port}", process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        try:
            process.wait(stop_within)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise


@asynccontextmanager
async def serving(app: str, *options: str, env: Mapping[str, str], log: Path) -> AsyncIterator[str]:
    """:func:`uvicorn` in an async test: its URL; its stop awaited without blocking."""
    manager = uvicorn(app, *options, env=env, log=log)
    url, _process = manager.__enter__()
    try:
        yield url
    except BaseException as exc:
        if not await asyncio.to_thread(manager.__exit__, type(exc), exc, exc.__traceback__):
            raise
    else:
        await asyncio.to_thread(manager.__exit__, None, None, None)
