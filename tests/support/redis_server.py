"""A real redis-server on a free loopback port, stoppable and restartable: the Redis
tests' (through the ``redis_server`` fixture in ``conftest.py``) and ``benchmarks/redis.py``'s.
"""

from __future__ import annotations

import ctypes
import shutil
import signal
import socket
import subprocess
import time


def _die_with_parent() -> None:
    """In the child: be sent SIGTERM when the test process dies, even by SIGKILL, so a
    killed test run leaves no redis-server behind (Linux; elsewhere nothing)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """``redis-server`` in a child process with no persistence (``start()`` to run it)."""

    def __init__(self) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            raise FileNotFoundError("redis-server is not installed (Debian package: redis-server)")
        self.executable = executable
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.executable,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def command(self, *words: str) -> bytes:
        """Send one command (its words without spaces) and return the first line of the
        answer: ``command("SCRIPT", "FLUSH")``."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(" ".join(words).encode() + b"\r\n")
            return sock.recv(256).split(b"\r\n", 1)[0]

    def flush(self) -> None:
        """Empty every database (``FLUSHALL``)."""
        if self.command("FLUSHALL") != b"+OK":
            raise RuntimeError("FLUSHALL failed")
