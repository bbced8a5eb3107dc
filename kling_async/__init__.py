"""kling_async: an asyncio-native SDK for the Kling v3 video-generation API (apimart).

``async with KlingSession() as session: video = await (await session.submit(req))``;
one shared poller per session checks every task in flight.
"""

from importlib import metadata as _metadata

from ._config import PollPolicy, RetryPolicy
from ._exceptions import (
    APIError,
    AuthenticationError,
    BadRequestError,
    ConcurrencyLimitError,
    DownloadError,
    IdempotencyConflictError,
    ImageTooLargeError,
    InsufficientCreditsError,
    InvalidResponseError,
    KlingError,
    NetworkError,
    PermissionDeniedError,
    RateLimitError,
    RequestTimeoutError,
    RequestValidationError,
    ServerError,
    SessionClosedError,
    SubmissionUncertainError,
    TaskCancelledError,
    TaskError,
    TaskFailedError,
    TaskNotFoundError,
    TaskTimeoutError,
    TransportError,
)
from ._logging import configure_from_environment as _configure_logging
from ._models import (
    ErrorInfo,
    GenericRequest,
    ImageToVideo,
    Shot,
    TaskSnapshot,
    TaskStatus,
    TextToVideo,
    Video,
    VideoRequest,
    VideoResult,
)
from ._poller import PollStats
from ._session import KlingSession
from ._task import Task
from ._transport import AiohttpTransport, DownloadStream, RawResponse, Transport

_configure_logging()  # $KLING_LOG=debug|info: readable records on stderr, no code needed

try:
    __version__ = _metadata.version("kling-async")
except _metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "APIError",
    "AiohttpTransport",
    "AuthenticationError",
    "BadRequestError",
    "ConcurrencyLimitError",
    "DownloadError",
    "DownloadStream",
    "ErrorInfo",
    "GenericRequest",
    "IdempotencyConflictError",
    "ImageTooLargeError",
    "ImageToVideo",
    "InsufficientCreditsError",
    "InvalidResponseError",
    "KlingError",
    "KlingSession",
    "NetworkError",
    "PollPolicy",
    "PermissionDeniedError",
    "PollStats",
    "RateLimitError",
    "RawResponse",
    "RequestTimeoutError",
    "RequestValidationError",
    "RetryPolicy",
    "ServerError",
    "SessionClosedError",
    "Shot",
    "SubmissionUncertainError",
    "Task",
    "TaskCancelledError",
    "TaskError",
    "TaskFailedError",
    "TaskNotFoundError",
    "TaskSnapshot",
    "TaskStatus",
    "TaskTimeoutError",
    "TextToVideo",
    "Transport",
    "TransportError",
    "Video",
    "VideoRequest",
    "VideoResult",
    "__version__",
]

# Public names report the public path (as httpx does), so reprs, tracebacks and docs show
# ``kling_async.Task`` rather than a private module.
for _name in __all__:
    _public = globals()[_name]
    if isinstance(_public, type):
        _public.__module__ = __name__
del _name, _public
