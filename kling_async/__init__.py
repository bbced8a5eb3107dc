"""kling_async: an asyncio-native SDK for the Kling v3 video-generation API (apimart).

``async with KlingSession() as session: video = await (await session.submit(req))``;
one shared poller per session checks every task in flight.
"""

from importlib.metadata import PackageNotFoundError, version

from ._config import PollPolicy, RetryPolicy
from ._exceptions import (
    APIError,
    AuthenticationError,
    BadRequestError,
    DownloadError,
    InsufficientCreditsError,
    InvalidResponseError,
    KlingError,
    NetworkError,
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
from ._models import (
    ErrorInfo,
    ImageToVideo,
    TaskSnapshot,
    TaskStatus,
    TextToVideo,
    Video,
    VideoRequest,
    VideoResult,
)
from ._session import KlingSession
from ._task import Task

try:
    __version__ = version("kling-async")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "APIError",
    "AuthenticationError",
    "BadRequestError",
    "DownloadError",
    "ErrorInfo",
    "ImageToVideo",
    "InsufficientCreditsError",
    "InvalidResponseError",
    "KlingError",
    "KlingSession",
    "NetworkError",
    "PollPolicy",
    "RateLimitError",
    "RequestTimeoutError",
    "RequestValidationError",
    "RetryPolicy",
    "ServerError",
    "SessionClosedError",
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
    "TransportError",
    "Video",
    "VideoRequest",
    "VideoResult",
    "__version__",
]
