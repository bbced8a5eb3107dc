"""The error tree of kling_async.

Every error the SDK raises derives from :class:`KlingError`; aiohttp and JSON errors are
mapped to the most specific class here and chained with ``raise ... from``::

    KlingError
    ├── RequestValidationError      (also ValueError) bad input, caught before any network call
    ├── APIError                    the API answered with an error (status, code, message,
    │   │                           param, request_id)
    │   ├── BadRequestError         400, 422
    │   │   ├── IdempotencyConflictError  409: an idempotency key reused with another request
    │   │   └── ImageTooLargeError  413 on an upload
    │   ├── AuthenticationError     401, 403
    │   │   └── PermissionDeniedError  upstream code 1100 (account abnormal) or 1304 (IP not
    │   │                           allowed), whatever the HTTP status (often 429)
    │   ├── InsufficientCreditsError 402, or upstream code 1101/1102 (in arrears, resource
    │   │                           pack used up) or a message saying the balance is exhausted
    │   ├── TaskNotFoundError       404
    │   ├── RateLimitError          429 (retry_after from the Retry-After header)
    │   │   └── ConcurrencyLimitError  upstream code 1303: more at once than the package allows
    │   └── ServerError             5xx, or HTTP 200 whose body reports an error
    ├── TransportError              no usable answer (``sent``: False if surely never sent)
    │   ├── NetworkError            connection refused, reset, DNS
    │   ├── RequestTimeoutError     (also TimeoutError) the request took longer than its timeout
    │   └── InvalidResponseError    a body that is not the JSON the API documents
    ├── SubmissionUncertainError    retries ran out and a POST may or may not have been
    │                               accepted (carries the request and its idempotency key)
    ├── TaskError                   a task ended badly (carries task_id)
    │   ├── TaskFailedError         status "failed" (carries the server's error code and message)
    │   ├── TaskCancelledError      status "cancelled"
    │   └── TaskTimeoutError        (also TimeoutError) the wait deadline passed; the task runs on
    ├── DownloadError               a result video could not be fetched or saved
    └── SessionClosedError          the session was closed, or used after closing
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "APIError",
    "AuthenticationError",
    "BadRequestError",
    "ConcurrencyLimitError",
    "DownloadError",
    "IdempotencyConflictError",
    "ImageTooLargeError",
    "InsufficientCreditsError",
    "InvalidResponseError",
    "KlingError",
    "NetworkError",
    "PermissionDeniedError",
    "RateLimitError",
    "RequestTimeoutError",
    "RequestValidationError",
    "ServerError",
    "SessionClosedError",
    "SubmissionUncertainError",
    "TaskCancelledError",
    "TaskError",
    "TaskFailedError",
    "TaskNotFoundError",
    "TaskTimeoutError",
    "TransportError",
]


class KlingError(Exception):
    """Root of every error raised by kling_async."""


class RequestValidationError(KlingError, ValueError):
    """A request parameter breaks a rule of the API; raised before any network call."""

    def __init__(self, field: str, rule: str, value: Any = None) -> None:
        self.field = field
        self.rule = rule
        self.value = value
        shown = repr(value)
        if len(shown) > 60:  # keep both ends: a path's file name is at its end
            shown = shown[:28] + "..." + shown[-29:]
        super().__init__(f"{field}: {rule} (got {shown})")


class APIError(KlingError):
    """The API answered with an error status or an error in its body.

    ``param`` names the request field the server objected to (when it says), and
    ``request_id`` identifies the request for the provider's support; ``hint`` says
    what to check on our side.
    """

    def __init__(
        self,
        status: int,
        code: str | int | None,
        message: str,
        *,
        param: str | None = None,
        request_id: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.request_id = request_id
        text = f"HTTP {status} (code {code}): {message}"
        if param:
            text += f" [field: {param}]"
        if hint:
            text += f"; {hint}"
        if request_id:
            text += f" (request id {request_id})"
        super().__init__(text)


class BadRequestError(APIError):
    """400/422: the server rejected the parameters (``param`` names the field if it said)."""


class IdempotencyConflictError(BadRequestError):
    """409: the idempotency key was already used for a different request body."""


class ImageTooLargeError(BadRequestError):
    """413: the server refused an uploaded image as too large."""


class AuthenticationError(APIError):
    """401/403: the API key is missing, wrong, or not allowed to do this."""


class PermissionDeniedError(AuthenticationError):
    """The account may not generate now: upstream code 1100 (account abnormal) or 1304 (the
    caller's IP is not on its allow-list). Waiting does not clear it, so it is not retried."""


class InsufficientCreditsError(APIError):
    """402, or upstream code 1101/1102 (often on a 429): the account has no balance or
    resource pack left. Waiting does not clear it, so it is not retried."""


class TaskNotFoundError(APIError):
    """404: the API does not know this task id."""


class RateLimitError(APIError):
    """429: too many requests; ``retry_after`` is the server's wait in seconds, if it sent one."""

    def __init__(
        self,
        status: int,
        code: str | int | None,
        message: str,
        retry_after: float | None = None,
        **details: Any,
    ) -> None:
        super().__init__(status, code, message, **details)
        self.retry_after = retry_after


class ConcurrencyLimitError(RateLimitError):
    """429 with upstream code 1303: more generations (or requests) at once than the
    account's package allows. Retried like any 429; a batch also sends fewer at once."""


class ServerError(APIError):
    """5xx, or an HTTP 200 whose body reports an error."""


class TransportError(KlingError):
    """The request got no usable answer.

    ``sent`` is False only when the request surely never reached the server (the
    connection was never made, or it was refused locally before sending).
    """

    def __init__(self, message: str, *, sent: bool = True) -> None:
        super().__init__(message)
        self.sent = sent


class NetworkError(TransportError):
    """The connection failed: refused, reset, or closed mid-response."""


class RequestTimeoutError(TransportError, TimeoutError):
    """The request did not complete within its timeout."""


class InvalidResponseError(TransportError):
    """The body is not the JSON the API documents (truncated, HTML, wrong shape)."""


class SubmissionUncertainError(KlingError):
    """Retries ran out while a submit's outcome was unknown: it may or may not exist.

    ``request`` is the request that was sent and ``idempotency_key`` the key it carried:
    ``session.submit(err.request, idempotency_key=err.idempotency_key)`` later returns
    the original task if the server created it, and creates it otherwise: never twice.
    """

    def __init__(self, request: Any, cause: BaseException, idempotency_key: str) -> None:
        self.request = request
        self.cause = cause
        self.idempotency_key = idempotency_key
        super().__init__(
            f"the submission may or may not have been accepted ({type(cause).__name__}: "
            f"{cause}); submit it again with idempotency_key={idempotency_key!r} to settle "
            "it without paying twice"
        )


class TaskError(KlingError):
    """A task ended in a state other than completed, or could not be waited for."""

    def __init__(self, task_id: str, message: str) -> None:
        self.task_id = task_id
        super().__init__(f"task {task_id}: {message}")


class TaskFailedError(TaskError):
    """The task ended with status ``failed``; ``code`` and ``message`` are the server's."""

    def __init__(self, task_id: str, code: str | None, message: str | None) -> None:
        self.code = code
        self.message = message
        super().__init__(task_id, f"failed (code {code}): {message or 'no message'}")


class TaskCancelledError(TaskError):
    """The task ended with status ``cancelled``."""

    def __init__(self, task_id: str) -> None:
        super().__init__(task_id, "cancelled")


class TaskTimeoutError(TaskError, TimeoutError):
    """The wait deadline passed; the task keeps running remotely and can be awaited again."""

    def __init__(self, task_id: str, timeout: float) -> None:
        self.timeout = timeout
        super().__init__(task_id, f"not finished within {timeout:g} s (it keeps running)")


class DownloadError(KlingError):
    """A result video could not be downloaded or saved, or what came back is not a video."""


class SessionClosedError(KlingError):
    """The session is closed: pending waits end with this, and new calls are refused."""
