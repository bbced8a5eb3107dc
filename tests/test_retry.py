"""Which failures are retried, and the one answer to "did the server take the request?"."""

from __future__ import annotations

import pytest

from kling_async import (
    APIError,
    AuthenticationError,
    BadRequestError,
    IdempotencyConflictError,
    InvalidResponseError,
    NetworkError,
    RateLimitError,
    RequestTimeoutError,
    RequestValidationError,
    RetryPolicy,
    ServerError,
    SessionClosedError,
    TransportError,
)
from kling_async._retry import is_transient, retrying, too_long_to_wait
from kling_async._submission import surely_not_received

NOT_RECEIVED = [
    NetworkError("refused", sent=False),
    TransportError("bad header", sent=False),
    SessionClosedError("closing"),
    RequestValidationError("duration", "3-15 s", 99),
    RateLimitError(429, 429, "slow down"),
    BadRequestError(400, 400, "bad"),
    AuthenticationError(401, 401, "no"),
    IdempotencyConflictError(409, 409, "reused"),
]
UNKNOWN = [
    NetworkError("reset mid-answer"),
    RequestTimeoutError("timed out"),
    InvalidResponseError("garbled"),
    ServerError(502, 502, "bad gateway"),
    ServerError(200, 500, "error in a 200 body"),
    APIError(408, 408, "request timeout"),
]


@pytest.mark.parametrize("exc", NOT_RECEIVED, ids=repr)
def test_refusals_and_unmade_connections_surely_did_not_land(exc):
    """A refused or never-sent request certainly did not take effect."""
    assert surely_not_received(exc)


@pytest.mark.parametrize("exc", UNKNOWN, ids=repr)
def test_timeouts_resets_5xx_and_garbage_leave_the_outcome_unknown(exc):
    """After these, only the server knows whether the request took effect."""
    assert not surely_not_received(exc)


def test_transient_failures_are_the_retryable_statuses_and_transport_failures():
    """408, 429, 5xx and transport failures are worth another try; refusals are not."""
    assert all(is_transient(exc) for exc in UNKNOWN)
    assert is_transient(RateLimitError(429, 429, "x"))
    assert is_transient(NetworkError("refused", sent=False))
    for final in (BadRequestError(400, 400, "x"), AuthenticationError(401, 401, "x")):
        assert not is_transient(final)
    assert not is_transient(TransportError("refused locally", sent=False))


def test_a_wait_over_max_retry_after_is_too_long():
    """A Retry-After over the policy's limit (or infinite) is refused, not shortened."""
    policy = RetryPolicy(max_retry_after=60)
    assert too_long_to_wait(RateLimitError(429, 429, "x", retry_after=120), policy)
    assert too_long_to_wait(RateLimitError(429, 429, "x", retry_after=float("inf")), policy)
    assert not too_long_to_wait(RateLimitError(429, 429, "x", retry_after=60), policy)
    assert not too_long_to_wait(ServerError(503, 503, "x"), policy)


async def test_retrying_stops_at_max_attempts_and_on_a_final_error():
    """Transient errors are retried up to max_attempts; a final one ends at once."""
    calls: list[int] = []
    policy = RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.002)

    @retrying(policy)
    async def flaky() -> None:
        calls.append(1)
        raise ServerError(503, 503, "busy")

    with pytest.raises(ServerError):
        await flaky()
    assert len(calls) == 3

    @retrying(policy)
    async def refused() -> None:
        calls.append(2)
        raise BadRequestError(400, 400, "bad")

    with pytest.raises(BadRequestError):
        await refused()
    assert calls.count(2) == 1
