"""Pure parts: error mapping, Retry-After, configuration, the rate limiter, the download check."""

from __future__ import annotations

import email.utils

import aiohttp
import pytest

from kling_async import (
    AuthenticationError,
    BadRequestError,
    InsufficientCreditsError,
    InvalidResponseError,
    KlingError,
    KlingSession,
    NetworkError,
    PollPolicy,
    RateLimitError,
    RequestTimeoutError,
    ServerError,
    TaskNotFoundError,
)
from kling_async._download import looks_like_video
from kling_async._ratelimit import RateLimiter
from kling_async._retry import is_retryable_read, is_retryable_submit
from kling_async._transport import error_from_response, map_exception, parse_retry_after


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (402, InsufficientCreditsError),
        (403, AuthenticationError),
        (404, TaskNotFoundError),
        (429, RateLimitError),
        (500, ServerError),
        (503, ServerError),
    ],
)
def test_status_codes_map_to_classes(status, cls):
    """Each documented status maps to its error class, carrying status, code and message."""
    exc = error_from_response(status, {"code": status, "message": "why"}, {})
    assert type(exc) is cls
    assert (exc.status, exc.code, exc.message) == (status, status, "why")


def test_error_message_is_found_in_every_documented_place():
    """Messages are read from message, msg or error.message."""
    assert error_from_response(400, {"msg": "a"}, {}).message == "a"
    assert error_from_response(400, {"error": {"message": "b", "code": "x"}}, {}).message == "b"
    assert error_from_response(400, None, {}).message == "HTTP 400"


def test_error_text_never_echoes_the_key():
    """A server echoing the key in its message does not put the key in our exception."""
    exc = error_from_response(401, {"message": "bad key sk-secret-123"}, {}, "sk-secret-123")
    assert "sk-secret-123" not in str(exc)


def test_retry_after_is_parsed_as_seconds_or_date():
    """Retry-After accepts delta seconds (also fractional) and HTTP dates."""
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("0.25") == 0.25
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    date = email.utils.formatdate(1_000_010, usegmt=True)
    assert parse_retry_after(date, now=1_000_000) == pytest.approx(10.0)
    exc = error_from_response(429, {}, {"Retry-After": "7"})
    assert isinstance(exc, RateLimitError) and exc.retry_after == 7.0


def test_aiohttp_failures_are_mapped():
    """Connection failures, timeouts and bad JSON become the SDK's transport errors."""
    refused = aiohttp.ClientConnectorError(
        aiohttp.client_reqrep.ConnectionKey("h", 1, False, True, None, None, None),
        OSError(111, "refused"),
    )
    assert isinstance(map_exception(refused), NetworkError)
    assert map_exception(refused).sent is False  # type: ignore[attr-defined]
    lost = map_exception(aiohttp.ServerDisconnectedError())
    assert isinstance(lost, NetworkError) and lost.sent
    assert isinstance(map_exception(TimeoutError()), RequestTimeoutError)
    assert isinstance(map_exception(ValueError("x")), InvalidResponseError)


def test_submit_retries_only_when_surely_not_sent():
    """A submit is retried on 429 and refused connections only; reads on every transient."""
    rate = RateLimitError(429, 429, "slow down")
    assert is_retryable_submit(rate)
    assert is_retryable_submit(NetworkError("refused", sent=False))
    for ambiguous in (NetworkError("reset"), ServerError(502, 502, "x"), RequestTimeoutError("t")):
        assert not is_retryable_submit(ambiguous)
        assert is_retryable_read(ambiguous)
    assert not is_retryable_read(AuthenticationError(401, 401, "no"))


def test_missing_key_is_an_error_at_construction(monkeypatch):
    """Without api_key or APIMART_API_KEY the session refuses to start."""
    monkeypatch.delenv("APIMART_API_KEY", raising=False)
    with pytest.raises(KlingError, match="APIMART_API_KEY"):
        KlingSession()


def test_key_and_url_come_from_the_environment(monkeypatch):
    """APIMART_API_KEY and APIMART_BASE_URL fill in what was not passed."""
    monkeypatch.setenv("APIMART_API_KEY", "sk-env")
    monkeypatch.setenv("APIMART_BASE_URL", "http://127.0.0.1:9/")
    session = KlingSession()
    assert session.config.base_url == "http://127.0.0.1:9"
    monkeypatch.delenv("APIMART_BASE_URL")
    assert KlingSession().config.base_url == "https://api.apimart.ai"


def test_plain_http_to_a_remote_host_is_refused():
    """The key is never sent unencrypted off the machine unless explicitly allowed."""
    with pytest.raises(KlingError, match="https"):
        KlingSession(api_key="k", base_url="http://api.example.com")
    assert KlingSession(api_key="k", base_url="http://api.example.com", allow_insecure=True)
    assert KlingSession(api_key="k", base_url="http://localhost:8000")
    with pytest.raises(KlingError, match="base_url"):
        KlingSession(api_key="k", base_url="file:///tmp/x")


def test_session_repr_hides_the_key():
    """Neither repr nor config repr shows the key."""
    session = KlingSession(api_key="sk-very-secret", base_url="http://127.0.0.1:1")
    assert "sk-very-secret" not in repr(session)
    assert "sk-very-secret" not in repr(session.config)


def test_poll_policy_checks_its_bounds():
    """A PollPolicy with min above max or a zero rate is refused."""
    with pytest.raises(ValueError, match="max_interval"):
        PollPolicy(min_interval=5, max_interval=1)
    with pytest.raises(ValueError, match="max_requests_per_second"):
        PollPolicy(max_requests_per_second=0)


def _sends(limiter: RateLimiter, until: float, step: float = 0.001) -> list[float]:
    sent, now = [], 0.0
    while now < until:
        wait = limiter.reserve(now)
        if wait == 0:
            sent.append(now)
        else:
            now += max(wait, step)
            continue
    return sent


@pytest.mark.parametrize("rate", [1.0, 7.0, 10.0, 250.0])
def test_rate_limiter_never_exceeds_rate_in_any_window(rate):
    """In any window of one second (plus margin), no more than `rate` sends are allowed."""
    limiter = RateLimiter(rate)
    sent = _sends(limiter, 10.0)
    assert len(sent) >= rate * 10 * 0.9
    window = 1.0 + limiter.margin
    j = 0
    for i, t in enumerate(sent):
        while sent[j] <= t - window:
            j += 1
        assert i - j + 1 <= max(1, int(rate))


def test_rate_limiter_slows_down_and_recovers():
    """A 429 cuts the rate to 70 %; successes climb back to the configured rate, not above."""
    limiter = RateLimiter(10.0)
    limiter.slow_down()
    assert limiter.rate == pytest.approx(7.0)
    for _ in range(100):
        limiter.speed_up()
    assert limiter.rate == 10.0


def test_video_signatures():
    """MP4/MOV boxes and WebM magic look like video; HTML and JSON do not."""
    assert looks_like_video(b"\x00\x00\x00\x20ftypisom\x00\x00")
    assert looks_like_video(b"\x1a\x45\xdf\xa3\x01\x00\x00\x00\x00\x00\x00\x00")
    assert not looks_like_video(b"<!DOCTYPE html><html>")
    assert not looks_like_video(b'{"code": 403}')
