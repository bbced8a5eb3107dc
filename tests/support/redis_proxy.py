"""A TCP proxy in front of a redis-server that can make it sick: slow answers, or cut off.

    async with RedisProxy(redis_server.port) as proxy:   # redis://127.0.0.1:{proxy.port}/0
        proxy.delay = (0.0, 0.2)   # hold each answer 0-200 ms (in order), until set back
        proxy.cut()                # drop every connection and refuse new ones
        proxy.restore()            # accept again

It runs in the test's event loop: what it slows is the workers' Redis, never the
emulator (in a process of its own) that counts their requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from types import TracebackType


class RedisProxy:
    """Forwards loopback connections to ``127.0.0.1:target``, answers held ``delay``."""

    def __init__(self, target: int, seed: int = 1) -> None:
        self.target = target
        self.delay = (0.0, 0.0)
        """Seconds each answer from Redis is held, uniform in this range (order kept)."""
        self.port = 0
        self._rng = random.Random(seed)
        self._server: asyncio.Server | None = None
        self._open = True
        self._links: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def __aenter__(self) -> RedisProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        self.cut()
        await asyncio.gather(*self._links, return_exceptions=True)
        await self._server.wait_closed()

    def cut(self) -> None:
        """Drop every connection now and refuse new ones (until :meth:`restore`)."""
        self._open = False
        for link in self._links:
            link.cancel()

    def restore(self) -> None:
        self._open = True

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._open:
            writer.close()
            return
        link = asyncio.current_task()
        assert link is not None
        self._links.add(link)
        upstream: asyncio.StreamWriter | None = None
        try:
            up_reader, upstream = await asyncio.open_connection("127.0.0.1", self.target)
            await asyncio.gather(
                self._pipe(reader, upstream, held=False), self._pipe(up_reader, writer, held=True)
            )
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self._links.discard(link)
            for end in (writer, upstream):
                if end is not None:
                    end.close()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, held: bool
    ) -> None:
        """Copy ``reader`` to ``writer``; with ``held``, each chunk leaves after its delay
        (never before the chunk ahead of it)."""
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def release() -> None:
            while True:
                due, chunk = await chunks.get()
                if not chunk:
                    break
                await asyncio.sleep(max(0.0, due - loop.time()))
                writer.write(chunk)
                await writer.drain()

        releaser = asyncio.ensure_future(release())
        try:
            last = 0.0
            while True:
                chunk = await reader.read(65536)
                low, high = self.delay if held else (0.0, 0.0)
                last = max(last, loop.time() + self._rng.uniform(low, high))
                chunks.put_nowait((last, chunk))
                if not chunk:
                    break
            await releaser
        finally:
            releaser.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await releaser
            with contextlib.suppress(OSError):
                writer.write_eof()
