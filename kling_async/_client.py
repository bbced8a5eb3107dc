"""Calls to the API: credentials, JSON in and out, one error mapping, the key kept out.

Every call goes ``ApiClient.call`` → a :class:`Transport` → bytes back, then here: the
``Date`` header teaches the :class:`ServerClock`, the body is decoded and scrubbed of the
API key (:class:`Redactor`) before anything reads it, and an error status or error body
becomes the SDK's own exception in :func:`error_from_response`, the one place that maps
them. The key is added per request, only to URLs on the API's own origin.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import attrs
from multidict import CIMultiDictProxy

from ._clock import ServerClock, parse_http_date
from ._config import API_KEY_ENV, BASE_URL_ENV, SessionConfig
from ._exceptions import (
    APIError,
    AuthenticationError,
    BadRequestError,
    ConcurrencyLimitError,
    IdempotencyConflictError,
    ImageTooLargeError,
    InsufficientCreditsError,
    InvalidResponseError,
    KlingError,
    NetworkError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    SessionClosedError,
    TaskNotFoundError,
)
from ._redact import Redactor
from ._transport import Transport, pass_send_gate, send_gate

__all__ = ["ApiClient", "Reply", "error_from_response", "parse_retry_after"]

logger = logging.getLogger("kling_async")

MAX_JSON_BYTES = 1024 * 1024  # a status answer is a few hundred bytes; refuse absurd ones
MAX_MESSAGE = 500
_STATUS_ERRORS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    402: InsufficientCreditsError,
    403: AuthenticationError,
    404: TaskNotFoundError,
    409: IdempotencyConflictError,
    413: ImageTooLargeError,
    422: BadRequestError,
    429: RateLimitError,
}
#: Upstream Kling account codes that gateways pass on in a body's ``code`` (API.md section
#: 5), often on a 429: waiting never clears them, so they must not be retried as one.
_ACCOUNT_CODES: dict[int, type[APIError]] = {
    1100: PermissionDeniedError,  # account abnormal
    1101: InsufficientCreditsError,  # account in arrears
    1102: InsufficientCreditsError,  # resource pack exhausted or expired
    1304: PermissionDeniedError,  # the caller's IP is not on the allow-list
}
_TOO_MANY_AT_ONCE = 1303  # concurrency or QPS over the package: retry later, fewer at once
#: A message saying the balance or quota is used up (when no upstream code says so).
_EXHAUSTED = re.compile(
    r"\b(balance|quota|credits?|resource pack)\b[^.;]{0,40}?\b(exhausted|insufficient|"
    r"used up|run out|ran out|depleted|expired)\b|\binsufficient (balance|quota|credits?)\b"
    r"|\barrears\b",
    re.IGNORECASE,
)
_HINTS = {
    401: f"check the API key (api_key=, or ${API_KEY_ENV})",
    409: "an idempotency key was reused with a different request",
}


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta seconds or an HTTP date.

    A negative, NaN or unreadable value is None (the caller falls back to its backoff);
    an absurdly large one stays large, for the caller's ``max_retry_after`` to refuse.
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        when = parse_http_date(value)
        if when is None:
            return None
        return max(0.0, when - (time.time() if now is None else now))
    if math.isnan(seconds) or seconds < 0:
        return None
    return seconds


def _number(value: Any) -> float | None:
    """A JSON number or numeric string as a float (``200``, ``200.0``, ``"200"``)."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, Mapping | list):
        return None
    return str(value)[:MAX_MESSAGE]


def error_from_response(status: int, payload: Any, headers: Mapping[str, str]) -> KlingError:
    """The SDK error for an HTTP error status, or for a 2xx whose body reports an error.

    Reads every documented body shape: ``{"code", "message"|"msg"}``,
    ``{"error": {"message", "type", "code", "param"}}`` and ``{"success": false,
    "message"}``, plus a ``request_id`` in the body or the ``X-Request-Id`` header.
    ``payload`` must already be scrubbed of the key.
    """
    body = payload if isinstance(payload, Mapping) else {}
    nested = body.get("error")
    error = nested if isinstance(nested, Mapping) else {}
    message = (
        _text(error.get("message"))
        or _text(body.get("message"))
        or _text(body.get("msg"))
        or (_text(nested) if nested is not None and not error else None)
        or f"HTTP {status}"
    )
    code = body.get("code", error.get("code"))
    if code is None:
        code = error.get("type")
    code = code if isinstance(code, int) and not isinstance(code, bool) else _text(code)
    details: dict[str, Any] = {
        "param": _text(error.get("param") or body.get("param")),
        "request_id": _text(
            body.get("request_id") or error.get("request_id") or headers.get("X-Request-Id")
        ),
    }
    if 200 <= status < 300:
        # An error in a 2xx body: its code, if an HTTP status, says which kind.
        coded = _number(code)
        status = int(coded) if coded is not None and 400 <= coded < 600 else status
    kind = error.get("type")
    if status == 422 and "idempot" in f"{kind} {code} {message}".lower():
        status = 409
    cls = _STATUS_ERRORS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 or status < 300 else APIError
    if status < 500:  # a 5xx stays a server error: whether it took a POST is unknown
        cls = _by_upstream_code(cls, status, _number(code), message)
    hint = _HINTS.get(status)
    if hint:
        details["hint"] = hint
    if issubclass(cls, RateLimitError):
        return cls(status, code, message, parse_retry_after(headers.get("Retry-After")), **details)
    return cls(status, code, message, **details)


def _by_upstream_code(
    cls: type[APIError], status: int, code: float | None, message: str
) -> type[APIError]:
    """``cls`` refined by an upstream Kling code in the body (or, on a 429 or an error in a
    2xx body, a message saying the balance is used up): an account problem is not a rate
    limit to wait out, and 1303 is a rate limit that also asks for fewer at once."""
    account = _ACCOUNT_CODES.get(int(code)) if code is not None and code.is_integer() else None
    if account is not None:
        return account
    if code == _TOO_MANY_AT_ONCE and cls is RateLimitError:
        return ConcurrencyLimitError
    if (status == 429 or status < 300) and _EXHAUSTED.search(message):
        return InsufficientCreditsError
    return cls


def _reports_error(payload: Any) -> bool:
    """True for a 2xx body that says it failed: a ``code`` other than 200, ``success:
    false``, or an ``error`` object (numbers compare as numbers: 200.0 is 200)."""
    if not isinstance(payload, Mapping):
        return False
    if payload.get("success") is False or isinstance(payload.get("error"), Mapping):
        return True
    code = payload.get("code")
    return code is not None and _number(code) != 200


@attrs.frozen
class Reply:
    """A successful API answer: the decoded body (key scrubbed) and the headers."""

    payload: Any
    headers: CIMultiDictProxy[str]


class ApiClient:
    """The session's calls to the API over a :class:`Transport`."""

    __slots__ = (
        "_auth",
        "_config",
        "_paid",
        "_redactor",
        "clock",
        "closing",
        "paid_sent",
        "transport",
    )

    def __init__(self, config: SessionConfig, transport: Transport, clock: ServerClock) -> None:
        self._config = config
        self._auth = f"Bearer {config.api_key}"
        self._redactor = Redactor(config.api_key)
        self._paid: set[asyncio.Task[Any]] = set()
        #: Set each time a paid POST gets its answer (close() waits for those).
        self.paid_sent = asyncio.Event()
        self.transport = transport
        self.clock = clock
        #: Set when the session starts closing: nothing new is sent after that.
        self.closing = False

    def __repr__(self) -> str:
        return f"ApiClient(base_url={self._config.base_url!r})"

    @property
    def redactor(self) -> Redactor:
        """Masks the key in text the server sent (used beyond JSON bodies, e.g. headers)."""
        return self._redactor

    def sending_paid(self, task: asyncio.Task[Any]) -> bool:
        """True while ``task`` has a paid POST on the wire (close lets it finish)."""
        return task in self._paid

    async def call(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        body: bytes | None = None,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
        paid: bool = False,
        gate: Callable[[], None] | None = None,
    ) -> Reply:
        """One API call: the decoded answer, or the SDK error it stands for.

        ``gate`` is called as the request leaves (see ``_transport.send_gate``): by the
        transport once it has a connection slot if it says it does
        (``passes_send_gate``), else here, just before the transport is called.
        """
        if self.closing:
            raise SessionClosedError("the session is closing; nothing new is sent")
        url = self._config.base_url + path
        sent_headers = {"Authorization": self._auth, "Accept": "application/json"}
        if json_body is not None:
            body = json.dumps(json_body, ensure_ascii=False).encode()
            content_type = "application/json"
        if content_type is not None:
            sent_headers["Content-Type"] = content_type
        if self._config.response_version is not None:
            sent_headers["X-APIMart-Response-Version"] = self._config.response_version
        sent_headers.update(headers or {})
        task = asyncio.current_task() if paid else None
        if task is not None:
            self._paid.add(task)
        sent = time.monotonic()
        try:
            with send_gate(gate):
                if not getattr(self.transport, "passes_send_gate", False):
                    pass_send_gate()
                raw = await self.transport.send(
                    method,
                    url,
                    headers=sent_headers,
                    body=body,
                    timeout=self._config.request_timeout,
                    max_bytes=MAX_JSON_BYTES,
                )
        except NetworkError as exc:
            if exc.sent:
                raise
            raise NetworkError(
                f"{exc}; is the API reachable at {self._config.base_url}? "
                f"(it comes from base_url=, or ${BASE_URL_ENV})",
                sent=False,
            ) from exc
        finally:
            if task is not None:
                self._paid.discard(task)
                self.paid_sent.set()

        headers = self._redactor.headers(raw.headers)
        self.clock.observe(headers.get("Date"), sent, time.monotonic())
        payload = self._decode(raw.status, raw.body)
        if not 200 <= raw.status < 300 or _reports_error(payload):
            raise error_from_response(raw.status, payload, headers)
        return Reply(payload, headers)

    def _decode(self, status: int, raw: bytes) -> Any:
        """The scrubbed JSON body; garbage is an InvalidResponseError unless the status
        already says what went wrong (then the body is ignored)."""
        try:
            return self._redactor.scrub(json.loads(raw)) if raw else None
        except (ValueError, RecursionError) as exc:
            if not 200 <= status < 300:
                return None
            raise InvalidResponseError(f"HTTP {status} body is not JSON") from exc
