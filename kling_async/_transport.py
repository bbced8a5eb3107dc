"""HTTP transports: the protocol the SDK sends through, and its aiohttp implementation.

A transport moves bytes and nothing else: it never adds credentials (the API client adds
the key per request, to the API's own origin only), never follows redirects, and maps
every failure of its HTTP library to a :class:`TransportError` whose ``sent`` says
whether the request may have reached the server. Decoding answers and mapping HTTP error
statuses happen above it (``_client``), once, for every transport.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextvars import ContextVar
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit

import aiohttp
import attrs
from multidict import CIMultiDict, CIMultiDictProxy

from ._exceptions import (
    InvalidResponseError,
    KlingError,
    NetworkError,
    RequestTimeoutError,
    SessionClosedError,
    TransportError,
)

__all__ = [
    "AiohttpTransport",
    "DownloadStream",
    "RawResponse",
    "Transport",
    "map_exception",
    "pass_send_gate",
    "send_gate",
]

_gate: ContextVar[Callable[[], None] | None] = ContextVar("kling_async_send_gate", default=None)


@contextlib.contextmanager
def send_gate(gate: Callable[[], None] | None) -> Iterator[None]:
    """Within this block, the request being sent must pass ``gate`` as it leaves.

    The gate is the poller's rate-budget ticket (``_ratelimit``): it stamps the moment the
    request really leaves, or raises ``StaleGrant`` if its grant can no longer be used (the
    request is then not sent). A context variable, not a parameter, so that the
    :class:`Transport` protocol users implement stays as it is.
    """
    token = _gate.set(gate)
    try:
        yield
    finally:
        _gate.reset(token)


def pass_send_gate() -> None:
    """Pass the current request's gate (if any), once: a transport calls it at the last
    moment before the request goes to the network, after any wait of its own."""
    gate = _gate.get()
    if gate is not None:
        _gate.set(None)
        gate()


def _headers(headers: Mapping[str, str]) -> CIMultiDictProxy[str]:
    if isinstance(headers, CIMultiDictProxy):
        return headers
    return CIMultiDictProxy(CIMultiDict(headers))


@attrs.frozen
class RawResponse:
    """An HTTP answer as bytes: the status, case-insensitive headers, the whole body."""

    status: int
    headers: CIMultiDictProxy[str] = attrs.field(converter=_headers)
    body: bytes = b""


@runtime_checkable
class DownloadStream(Protocol):
    """A response being streamed (a result video): status, length, chunks."""

    @property
    def status(self) -> int:
        """The HTTP status."""

    @property
    def content_length(self) -> int | None:
        """The announced body length, if any."""

    def iter_chunks(self, size: int) -> AsyncIterator[bytes]:
        """The body in chunks of at most ``size`` bytes."""


@runtime_checkable
class Transport(Protocol):
    """What the SDK needs from an HTTP client. Pass your own as ``KlingSession(transport=)``.

    Implementations raise only :class:`TransportError` subclasses (``sent=False`` when
    the request surely never left) and :class:`SessionClosedError` after :meth:`close`.
    """

    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        body: bytes | None,
        timeout: float,
        max_bytes: int,
    ) -> RawResponse:
        """One request, the whole answer read (more than ``max_bytes`` is an
        InvalidResponseError); redirects are answers, not followed."""

    def download(
        self, url: str, *, timeout: float, read_timeout: float
    ) -> contextlib.AbstractAsyncContextManager[DownloadStream]:
        """A streamed GET with no credentials, whatever the host."""

    async def close(self) -> None:
        """Release connections; later calls raise SessionClosedError."""


def map_exception(exc: BaseException, url: str = "") -> KlingError:
    """The SDK error for an aiohttp / asyncio failure while talking to ``url``."""
    if isinstance(exc, KlingError):
        return exc
    where = f" to {url}" if url else ""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        # Timed out while connecting: the request was never sent.
        return NetworkError(f"timed out connecting{where}", sent=False)
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return RequestTimeoutError(f"the request{where} timed out")
    if isinstance(exc, aiohttp.ClientConnectorError):
        # The connection was never made, so the request was never sent.
        reason = exc.strerror or type(exc).__name__
        return NetworkError(f"cannot connect{where}: {reason}", sent=False)
    if isinstance(exc, aiohttp.InvalidURL):
        return TransportError(f"invalid URL{where}", sent=False)
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ServerDisconnectedError):
        return NetworkError(f"connection{where} lost mid-response: {type(exc).__name__}")
    if isinstance(exc, aiohttp.ClientError | OSError):
        return NetworkError(f"network error{where}: {type(exc).__name__}")
    if isinstance(exc, ValueError | TypeError):
        # aiohttp refuses a malformed request (a header, a URL) before writing it.
        return TransportError(
            f"the request{where} was refused before sending: {type(exc).__name__}", sent=False
        )
    return KlingError(f"unexpected error{where}: {type(exc).__name__}")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else "the storage host"


async def _read_capped(response: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    """The whole body, refusing more than ``max_bytes`` (a hostile or broken server)."""
    if (response.content_length or 0) > max_bytes:
        raise InvalidResponseError(f"response larger than {max_bytes} bytes")
    body = bytearray()
    async for chunk in response.content.iter_any():
        body += chunk
        if len(body) > max_bytes:
            raise InvalidResponseError(f"response larger than {max_bytes} bytes")
    return bytes(body)


@attrs.frozen
class _AiohttpStream:
    """A :class:`DownloadStream` over an aiohttp response, with errors mapped."""

    response: aiohttp.ClientResponse
    url: str

    @property
    def status(self) -> int:
        return self.response.status

    @property
    def content_length(self) -> int | None:
        return self.response.content_length

    async def iter_chunks(self, size: int) -> AsyncIterator[bytes]:
        try:
            async for chunk in self.response.content.iter_chunked(size):
                yield chunk
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise map_exception(exc, self.url) from exc


class AiohttpTransport:
    """The default transport: one long-lived aiohttp ClientSession.

    Requests wait for one of ``limit`` slots *before* aiohttp sees them, so they never
    queue in aiohttp's pool, whose waiting counts against the request timeout: a submit
    that timed out there was never sent, yet would look ambiguous. The send gate
    (``_transport.send_gate``) is passed once a slot is held: from there to the socket, a request
    on a pooled connection never waits on the event loop.
    """

    __slots__ = ("_closed", "_http", "_limit", "_slots")

    passes_send_gate = True
    """It calls ``_transport.pass_send_gate`` itself (so the caller need not, before its waits)."""

    def __init__(self, limit: int = 24) -> None:
        self._http: aiohttp.ClientSession | None = None
        self._limit = limit
        self._slots = asyncio.Semaphore(limit)
        self._closed = False

    def __repr__(self) -> str:
        return f"AiohttpTransport(limit={self._limit})"

    def _session(self) -> aiohttp.ClientSession:
        """The shared aiohttp session, created on first use inside the running loop."""
        if self._closed:
            raise SessionClosedError("the session is closed")
        if self._http is None:
            connector = aiohttp.TCPConnector(limit=self._limit, ttl_dns_cache=300)
            self._http = aiohttp.ClientSession(
                connector=connector, headers={"User-Agent": "kling-async-python"}
            )
        return self._http

    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        body: bytes | None,
        timeout: float,
        max_bytes: int,
    ) -> RawResponse:
        """One request, the whole answer read; errors mapped, redirects not followed."""
        limits = aiohttp.ClientTimeout(total=timeout, sock_connect=timeout / 2)
        async with self._slots:
            http = self._session()
            pass_send_gate()
            try:
                async with http.request(
                    method,
                    url,
                    data=body,
                    headers=headers,
                    timeout=limits,
                    allow_redirects=False,
                ) as response:
                    raw = await _read_capped(response, max_bytes)
                    return RawResponse(response.status, response.headers, raw)
            except KlingError:
                raise
            except Exception as exc:
                raise map_exception(exc, url) from exc

    @contextlib.asynccontextmanager
    async def download(
        self, url: str, *, timeout: float, read_timeout: float
    ) -> AsyncIterator[DownloadStream]:
        """A streamed GET of ``url`` that never carries the API key."""
        limits = aiohttp.ClientTimeout(
            total=timeout, sock_connect=read_timeout / 2, sock_read=read_timeout
        )
        where = _origin(url)  # a signed URL's path and query stay out of messages
        async with self._slots:
            http = self._session()
            try:
                response = await http.get(url, timeout=limits)
            except Exception as exc:
                raise map_exception(exc, where) from exc
            async with response:
                yield _AiohttpStream(response, where)

    async def close(self) -> None:
        """Close the connection pool; later requests raise SessionClosedError."""
        self._closed = True
        if self._http is not None:
            http, self._http = self._http, None
            await http.close()
