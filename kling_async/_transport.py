"""HTTP on aiohttp: one long-lived ClientSession, per-request auth, one error mapping.

The API key is added per request, and only to URLs on the API's own origin; downloads and
anything else never carry it. Every aiohttp and JSON failure leaves this module as one of
the SDK's own errors (:func:`map_exception`, :func:`error_from_response`).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import quote

import aiohttp

from ._config import SessionConfig
from ._exceptions import (
    APIError,
    AuthenticationError,
    BadRequestError,
    InsufficientCreditsError,
    InvalidResponseError,
    KlingError,
    NetworkError,
    RateLimitError,
    RequestTimeoutError,
    ServerError,
    TaskNotFoundError,
)

__all__ = ["Transport", "error_from_response", "map_exception", "parse_retry_after"]

logger = logging.getLogger("kling_async")

MAX_JSON_BYTES = 1024 * 1024  # a status answer is a few hundred bytes; refuse absurd ones
_STATUS_ERRORS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    402: InsufficientCreditsError,
    403: AuthenticationError,
    404: TaskNotFoundError,
    429: RateLimitError,
}


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


def _message(body: Any, fallback: str) -> tuple[Any, str]:
    if not isinstance(body, Mapping):
        return None, fallback
    error = body.get("error")
    nested = error if isinstance(error, Mapping) else {}
    message = body.get("message") or body.get("msg") or nested.get("message") or fallback
    code = body.get("code", nested.get("code"))
    return code, str(message)[:500]


def error_from_response(
    status: int, body: Any, headers: Mapping[str, str], secret: str = ""
) -> KlingError:
    """The SDK error for an HTTP error status (or a 200 whose body ``code`` is not 200)."""
    code, message = _message(body, f"HTTP {status}")
    if secret:
        message = message.replace(secret, "***")
    if status == 429:
        return RateLimitError(status, code, message, parse_retry_after(headers.get("Retry-After")))
    cls = _STATUS_ERRORS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 or status == 200 else APIError
    return cls(status, code, message)


def map_exception(exc: BaseException) -> KlingError:
    """The SDK error for an aiohttp / asyncio / JSON failure."""
    if isinstance(exc, KlingError):
        return exc
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        # Timed out while connecting: the request was never sent.
        return NetworkError("timed out connecting", sent=False)
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return RequestTimeoutError("the request timed out")
    if isinstance(exc, aiohttp.ClientConnectorError):
        # The connection was never made, so the request was never sent.
        return NetworkError(f"cannot connect: {exc.strerror or type(exc).__name__}", sent=False)
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ServerDisconnectedError):
        return NetworkError(f"connection lost mid-response: {type(exc).__name__}")
    if isinstance(exc, aiohttp.ClientError | OSError):
        return NetworkError(f"network error: {type(exc).__name__}")
    if isinstance(exc, ValueError | UnicodeDecodeError):
        return InvalidResponseError(f"response is not valid JSON: {type(exc).__name__}")
    return KlingError(f"unexpected error: {type(exc).__name__}")


async def _read_capped(response: aiohttp.ClientResponse) -> bytes:
    """The whole body, refusing more than MAX_JSON_BYTES (a hostile or broken server)."""
    if (response.content_length or 0) > MAX_JSON_BYTES:
        raise InvalidResponseError(f"response larger than {MAX_JSON_BYTES} bytes")
    body = bytearray()
    async for chunk in response.content.iter_any():
        body += chunk
        if len(body) > MAX_JSON_BYTES:
            raise InvalidResponseError(f"response larger than {MAX_JSON_BYTES} bytes")
    return bytes(body)


class Transport:
    """The session's HTTP client: JSON calls to the API, streamed GETs for downloads.

    Requests wait for one of ``limit`` slots *before* aiohttp sees them, so they never
    queue in aiohttp's pool, whose waiting counts against the request timeout: a submit
    that timed out there was never sent, yet would look ambiguous.
    """

    __slots__ = ("_auth", "_config", "_http", "_limit", "_slots")

    def __init__(self, config: SessionConfig) -> None:
        self._config = config
        self._auth = f"Bearer {config.api_key}"
        self._http: aiohttp.ClientSession | None = None
        self._limit = config.poll.max_concurrency + 8
        self._slots = asyncio.Semaphore(self._limit)

    def __repr__(self) -> str:
        return f"Transport(base_url={self._config.base_url!r})"

    @property
    def http(self) -> aiohttp.ClientSession:
        """The shared aiohttp session, created on first use inside the running loop."""
        if self._http is None:
            connector = aiohttp.TCPConnector(limit=self._limit, ttl_dns_cache=300)
            self._http = aiohttp.ClientSession(
                connector=connector,
                headers={"User-Agent": "kling-async-python"},
                json_serialize=json.dumps,
            )
        return self._http

    async def request_json(
        self, method: str, path: str, body: Mapping[str, Any] | None = None
    ) -> Any:
        """One call to the API: auth header, timeout, JSON in and out, errors mapped."""
        url = self._config.base_url + path
        headers = {"Authorization": self._auth, "Accept": "application/json"}
        timeout = aiohttp.ClientTimeout(
            total=self._config.request_timeout, sock_connect=self._config.request_timeout / 2
        )
        async with self._slots:
            try:
                async with self.http.request(
                    method, url, json=body, headers=headers, timeout=timeout, allow_redirects=False
                ) as response:
                    raw = await _read_capped(response)
                    status = response.status
                    response_headers = response.headers
            except Exception as exc:
                raise map_exception(exc) from exc
        return self._decode(status, raw, response_headers)

    def _decode(self, status: int, raw: bytes, headers: Mapping[str, str]) -> Any:
        try:
            payload = json.loads(raw) if raw else None
        except (ValueError, RecursionError) as exc:
            if status >= 400:
                raise error_from_response(status, None, headers) from exc
            raise InvalidResponseError(f"HTTP {status} body is not JSON") from exc
        if not 200 <= status < 300:
            raise error_from_response(status, payload, headers, self._config.api_key)
        code = payload.get("code") if isinstance(payload, Mapping) else None
        if code is not None and str(code) != "200":
            try:
                code_status = int(code)
            except (TypeError, ValueError):
                code_status = 200
            raise error_from_response(
                code_status if code_status >= 400 else 200, payload, headers, self._config.api_key
            )
        return payload

    def task_path(self, task_id: str) -> str:
        """The status path of a (validated) task id."""
        return "/v1/tasks/" + quote(task_id, safe="")

    @contextlib.asynccontextmanager
    async def open_download(self, url: str) -> AsyncIterator[aiohttp.ClientResponse]:
        """A streamed GET of a result URL; it never carries the API key, whatever the host."""
        timeout = aiohttp.ClientTimeout(
            total=self._config.download_timeout,
            sock_connect=self._config.request_timeout / 2,
            sock_read=self._config.request_timeout,
        )
        async with self._slots, self.http.get(url, timeout=timeout) as response:
            yield response

    async def close(self) -> None:
        """Close the connection pool."""
        if self._http is not None:
            http, self._http = self._http, None
            await http.close()
