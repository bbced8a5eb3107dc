"""The error tree of kling_async.

Every error the SDK raises derives from :class:`KlingError`; aiohttp and JSON errors are
mapped to the most specific class here and chained with ``raise ... from``::

    KlingError
    ├── RequestValidationError      (also ValueError) bad input, caught before any network call
    ├── APIError                    the API answered with an error (status, code, message)
    │   ├── BadRequestError         400
    │   ├── AuthenticationError     401, 403
    │   ├── InsufficientCreditsError 402
    │   ├── TaskNotFoundError       404
    │   ├── RateLimitError          429 (retry_after from the Retry-After header)
    │   └── ServerError             5xx, or HTTP 200 whose body ``code`` is not 200
    ├── TransportError              no usable answer
    │   ├── NetworkError            connection refused, reset, DNS
    │   ├── RequestTimeoutError     (also TimeoutError) the request took longer than its timeout
    │   └── InvalidResponseError    a body that is not the JSON the API documents
    ├── SubmissionUncertainError    a POST may or may not have been accepted (carries the request)
    ├── TaskError                   a task ended badly (carries task_id)
    │   ├── TaskFailedError         status "failed" (carries the server's error code and message)
    │   ├── TaskCancelledError      status "cancelled"
    │   └── TaskTimeoutError        (also TimeoutError) the wait deadline passed; the task runs on
    ├── DownloadError               a result video could not be fetched or is not a video
    └── SessionClosedError          the session was closed, or used after closing
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "APIError",
    "AuthenticationError",
    "BadRequestError",
    "DownloadError",
    "InsufficientCreditsError",
    "InvalidResponseError",
    "KlingError",
    "NetworkError",
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
        if len(shown) > 60:
            shown = shown[:57] + "..."
        super().__init__(f"{field}: {rule} (got {shown})")


class APIError(KlingError):
    """The API answered with an error status or an error ``code`` in its body."""

    def __init__(self, status: int, code: str | int | None, message: str) -> None:
        self.status = status
        self.code = code
        self.message = message
        super().__init__(f"HTTP {status} (code {code}): {message}")


class BadRequestError(APIError):
    """400: the server rejected the parameters."""


class AuthenticationError(APIError):
    """401/403: the API key is missing, wrong, or not allowed to do this."""


class InsufficientCreditsError(APIError):
    """402: the account has no balance left for this request."""


class TaskNotFoundError(APIError):
    """404: the API does not know this task id."""


class RateLimitError(APIError):
    """429: too many requests; ``retry_after`` is the server's wait in seconds, if it sent one."""

    def __init__(
        self, status: int, code: str | int | None, message: str, retry_after: float | None = None
    ) -> None:
        super().__init__(status, code, message)
        self.retry_after = retry_after


class ServerError(APIError):
    """5xx, or an HTTP 200 whose body carries an error ``code``."""


class TransportError(KlingError):
    """The request got no usable answer."""


class NetworkError(TransportError):
    """The connection failed: refused, reset, or closed mid-response."""

    def __init__(self, message: str, *, sent: bool = True) -> None:
        super().__init__(message)
        #: False only when the request surely never reached the server (connect failed).
        self.sent = sent


class RequestTimeoutError(TransportError, TimeoutError):
    """The request did not complete within its timeout."""


class InvalidResponseError(TransportError):
    """The body is not the JSON the API documents (truncated, HTML, wrong shape)."""


class SubmissionUncertainError(KlingError):
    """A submit may or may not have been accepted: the caller decides whether to resubmit.

    Raised on a timeout after sending, a connection lost mid-response, a 5xx or a garbled
    answer to a POST. ``request`` is the request that was sent, so nothing is lost.
    """

    def __init__(self, request: Any, cause: BaseException) -> None:
        self.request = request
        self.cause = cause
        super().__init__(
            f"the submission may or may not have been accepted ({type(cause).__name__}: "
            f"{cause}); check before resubmitting to avoid paying twice"
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
    """A result video could not be downloaded, or what came back is not a video."""


class SessionClosedError(KlingError):
    """The session is closed: pending waits end with this, and new calls are refused."""
