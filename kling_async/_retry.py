"""Which failures are worth another try, how long to wait before it, and the retry
policy turned into ``backoff`` decorators (whether a POST landed is ``_submission``'s).

Waits are exponential with full jitter, except after a 429 that names a ``Retry-After``:
that wait is used exactly (no jitter may shorten what the server asked for), and a wait
longer than ``RetryPolicy.max_retry_after`` ends the retries instead.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar

import backoff

from ._config import RetryPolicy
from ._exceptions import (
    APIError,
    InvalidResponseError,
    KlingError,
    NetworkError,
    RateLimitError,
    RequestTimeoutError,
    ServerError,
)

__all__ = [
    "RETRYABLE_STATUS",
    "full_jitter_delay",
    "is_transient",
    "log_retry",
    "retry_delay",
    "retrying",
    "too_long_to_wait",
]

logger = logging.getLogger("kling_async")

T = TypeVar("T")

_TRANSIENT = (ServerError, NetworkError, RequestTimeoutError, InvalidResponseError, RateLimitError)
RETRYABLE_STATUS = 408
"""The one 4xx worth another try: the server gave up waiting for the request."""


def full_jitter_delay(
    attempt: int, base: float, cap: float, rng: random.Random | None = None
) -> float:
    """A uniform wait in ``[0, min(cap, base * 2**attempt)]`` (AWS "full jitter")."""
    return (rng or random).uniform(0.0, min(cap, base * 2.0 ** min(attempt, 62)))


def is_transient(exc: BaseException) -> bool:
    """Failures that say nothing about the request itself: 408, 429, 5xx, a lost or
    refused connection, a timeout, a garbled answer. Another try may well succeed."""
    if isinstance(exc, _TRANSIENT):
        return True
    return isinstance(exc, APIError) and exc.status == RETRYABLE_STATUS


def too_long_to_wait(exc: BaseException, policy: RetryPolicy) -> bool:
    """True if the server asked to wait longer than the policy's ``max_retry_after``."""
    retry_after = getattr(exc, "retry_after", None)
    return retry_after is not None and retry_after > policy.max_retry_after


def retry_delay(exc: BaseException | None, attempt: int, policy: RetryPolicy) -> float:
    """Seconds to wait before another try after ``exc`` (``attempt``: retries so far, from
    0): the server's ``Retry-After`` exactly, else exponential backoff with full jitter."""
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        return float(retry_after)
    return full_jitter_delay(attempt, policy.base_delay, policy.max_delay)


def _waits(policy: RetryPolicy) -> Callable[[], Generator[float, Any, None]]:
    def gen() -> Generator[float, Any, None]:
        attempt = 0
        exc = yield 0.0  # backoff primes the generator with next()
        while True:
            exc = yield retry_delay(exc, attempt, policy)
            attempt += 1

    return gen


def log_retry(what: str, wait: float, tries: int, exc: BaseException | None) -> None:
    """Log (INFO) that ``what`` is tried again in ``wait`` s after ``tries`` attempts."""
    error = type(exc).__name__ if exc is not None else "error"
    logger.info(
        "retrying %s in %.2fs after attempt %d: %s",
        what,
        wait,
        tries,
        error,
        extra={"request": what, "attempt": tries, "wait": round(wait, 3), "error": error},
    )


def _log_retry(details: Any) -> None:
    log_retry(
        getattr(details.get("target"), "__name__", "request"),
        details.get("wait", 0.0),
        details.get("tries", 0),
        details.get("exception"),
    )


def retrying(
    policy: RetryPolicy, should_retry: Callable[[Exception], bool] = is_transient
) -> Callable[[Callable[..., Awaitable[T]]], Callable[..., Awaitable[T]]]:
    """A decorator retrying a coroutine function on KlingErrors that ``should_retry`` accepts."""

    def give_up(exc: Exception) -> bool:
        return not should_retry(exc) or too_long_to_wait(exc, policy)

    decorator: Callable[[Callable[..., Awaitable[T]]], Callable[..., Awaitable[T]]] = (
        backoff.on_exception(
            _waits(policy),
            KlingError,
            max_tries=policy.max_attempts,
            giveup=give_up,
            jitter=None,
            on_backoff=_log_retry,
            logger=None,
        )
    )
    return decorator
