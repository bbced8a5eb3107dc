"""Retry policy turned into ``backoff`` decorators.

Waits are exponential with full jitter, except after a 429 that names a ``Retry-After``:
that wait is used exactly (no jitter may shorten what the server asked for).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar

import backoff

from ._config import RetryPolicy
from ._exceptions import (
    InvalidResponseError,
    KlingError,
    NetworkError,
    RateLimitError,
    RequestTimeoutError,
    ServerError,
)

__all__ = ["TRANSIENT", "full_jitter_delay", "is_retryable_read", "is_retryable_submit", "retrying"]

logger = logging.getLogger("kling_async")

T = TypeVar("T")


def full_jitter_delay(
    attempt: int, base: float, cap: float, rng: random.Random | None = None
) -> float:
    """A uniform wait in ``[0, min(cap, base * 2**attempt)]`` (AWS "full jitter")."""
    return (rng or random).uniform(0.0, min(cap, base * 2.0 ** min(attempt, 62)))


#: Failures that say nothing about the request itself: worth another try later.
TRANSIENT = (ServerError, NetworkError, RequestTimeoutError, InvalidResponseError)
_TRANSIENT_READ = (RateLimitError, *TRANSIENT)


def is_retryable_read(exc: Exception) -> bool:
    """GETs are safe to repeat: retry anything transient."""
    return isinstance(exc, _TRANSIENT_READ)


def is_retryable_submit(exc: Exception) -> bool:
    """A submit is retried only when the server surely did not take it."""
    return isinstance(exc, RateLimitError) or (isinstance(exc, NetworkError) and not exc.sent)


def _waits(policy: RetryPolicy) -> Callable[[], Generator[float, Any, None]]:
    def gen() -> Generator[float, Any, None]:
        attempt = 0
        exc = yield 0.0  # backoff primes the generator with next()
        while True:
            retry_after = getattr(exc, "retry_after", None)
            if retry_after is not None:
                exc = yield float(retry_after)
            else:
                exc = yield full_jitter_delay(attempt, policy.base_delay, policy.max_delay)
            attempt += 1

    return gen


def _log_retry(details: Any) -> None:
    exc = details.get("exception")
    logger.info(
        "retrying %s in %.2fs after attempt %d: %s",
        getattr(details.get("target"), "__name__", "request"),
        details.get("wait", 0.0),
        details.get("tries", 0),
        type(exc).__name__ if exc is not None else "error",
    )


def retrying(
    policy: RetryPolicy, should_retry: Callable[[Exception], bool]
) -> Callable[[Callable[..., Awaitable[T]]], Callable[..., Awaitable[T]]]:
    """A decorator retrying a coroutine function on KlingErrors that ``should_retry`` accepts."""

    def give_up(exc: Exception) -> bool:
        if not should_retry(exc):
            return True
        retry_after = getattr(exc, "retry_after", None)
        return retry_after is not None and retry_after > policy.max_retry_after

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
