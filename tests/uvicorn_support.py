"""The FastAPI example under a real uvicorn in a child process, configured like a deployment."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path


@asynccontextmanager
async def uvicorn(app: str, *options: str, env: Mapping[str, str], log: Path) -> AsyncIterator[str]:
    """``uvicorn APP OPTIONS`` serving a loopback socket this process opened (so the port is
    known before it starts); yields its URL and stops it with SIGINT, as a deployment would.
    Its output goes to ``log``; a uvicorn that does not stop within 20 s fails the test."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    with log.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "uvicorn", app, "--fd", str(listener.fileno()), *options,
            env=dict(env), pass_fds=[listener.fileno()],
            stdin=asyncio.subprocess.DEVNULL, stdout=log_file, stderr=log_file,
        )  # fmt: skip
    listener.close()  # the child holds it: if it dies, connections fail instead of hanging
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(process.wait(), 20)
            except TimeoutError:
                process.kill()
                await process.wait()
                raise
