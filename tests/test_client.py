"""The API client: one error mapping for every body shape, Retry-After, the key kept out."""

from __future__ import annotations

import email.utils

import pytest
from support.scripted import ScriptedTransport, one_answer, scripted_session

from kling_async import (
    APIError,
    AuthenticationError,
    BadRequestError,
    IdempotencyConflictError,
    ImageTooLargeError,
    InsufficientCreditsError,
    InvalidResponseError,
    KlingSession,
    RateLimitError,
    ServerError,
    TaskNotFoundError,
    TextToVideo,
)
from kling_async._client import error_from_response, parse_retry_after
from kling_async.testing import FAST_RETRY


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (402, InsufficientCreditsError),
        (403, AuthenticationError),
        (404, TaskNotFoundError),
        (409, IdempotencyConflictError),
        (413, ImageTooLargeError),
        (422, BadRequestError),
        (429, RateLimitError),
        (500, ServerError),
        (503, ServerError),
        (418, APIError),
    ],
)
def test_status_codes_map_to_classes(status, cls):
    """Each documented status maps to its error class, carrying status, code and message."""
    exc = error_from_response(status, {"code": status, "message": "why"}, {})
    assert type(exc) is cls
    assert (exc.status, exc.code, exc.message) == (status, status, "why")


def test_error_message_is_found_in_every_documented_shape():
    """Messages come from message, msg, error.message or a success:false body."""
    assert error_from_response(400, {"msg": "a"}, {}).message == "a"
    assert error_from_response(400, {"error": {"message": "b", "code": "x"}}, {}).message == "b"
    assert error_from_response(400, {"success": False, "message": "c"}, {}).message == "c"
    assert error_from_response(400, None, {}).message == "HTTP 400"
    assert error_from_response(500, {"error": "plain text"}, {}).message == "plain text"


def test_error_object_names_the_field_and_keeps_the_request_id():
    """`param` names the offending field in the error; `request_id` stays for support."""
    body = {
        "error": {"message": "bad duration", "type": "invalid_request", "param": "duration"},
        "request_id": "req_42",
    }
    exc = error_from_response(400, body, {})
    assert isinstance(exc, BadRequestError)
    assert (exc.param, exc.request_id, exc.code) == ("duration", "req_42", "invalid_request")
    assert "duration" in str(exc) and "req_42" in str(exc)
    assert error_from_response(500, {}, {"X-Request-Id": "req_h"}).request_id == "req_h"


def test_a_422_about_the_key_is_a_conflict_and_other_422s_are_bad_requests():
    """A 422 mentioning idempotency means the key was reused; any other 422 is a bad request."""
    reused = error_from_response(422, {"error": {"type": "idempotency_error", "message": "x"}}, {})
    assert isinstance(reused, IdempotencyConflictError)
    assert "reused" in str(reused)
    assert type(error_from_response(422, {"message": "prompt too long"}, {})) is BadRequestError


def test_a_401_says_to_check_the_key():
    """An authentication failure names the setting to check, never the key itself."""
    exc = error_from_response(401, {"code": 401, "message": "invalid api key"}, {})
    assert "APIMART_API_KEY" in str(exc)


def test_retry_after_is_parsed_as_seconds_or_date():
    """Retry-After accepts delta seconds (also fractional) and HTTP dates."""
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("0.25") == 0.25
    assert parse_retry_after(None) is None
    date = email.utils.formatdate(1_000_010, usegmt=True)
    assert parse_retry_after(date, now=1_000_000) == pytest.approx(10.0)
    exc = error_from_response(429, {}, {"Retry-After": "7"})
    assert isinstance(exc, RateLimitError) and exc.retry_after == 7.0


@pytest.mark.parametrize("value", ["-1", "nan", "soon", "", "Tue, 99 Foo 2026"])
def test_negative_or_unreadable_retry_after_falls_back_to_backoff(value):
    """A negative, NaN or garbled Retry-After is ignored (None), never taken as 0."""
    assert parse_retry_after(value) is None


def test_absurd_retry_after_stays_absurd_for_the_limit_to_refuse():
    """Huge and infinite Retry-After values are kept, so max_retry_after can refuse them."""
    assert parse_retry_after("1e12") == 1e12
    assert parse_retry_after("inf") == float("inf")


def session_on(transport: ScriptedTransport) -> KlingSession:
    return scripted_session(transport, api_key="sk-client-test-key")


@pytest.mark.parametrize("code", [200, 200.0, "200"])
async def test_a_success_code_is_a_number_whatever_its_spelling(code):
    """`"code": 200.0` and `"200"` in a successful submit are success, not an error."""
    transport = one_answer(200, {"code": code, "data": [{"task_id": "task_1"}]})
    async with session_on(transport) as session:
        task = await session.submit(TextToVideo("a"))
    assert task.id == "task_1"


@pytest.mark.parametrize(
    "body",
    [
        {"code": 500, "message": "internal"},
        {"success": False, "message": "busy"},
        {"error": {"message": "nope", "code": "server_busy"}},
    ],
)
async def test_a_200_whose_body_reports_an_error_is_an_error(body):
    """A 2xx carrying an error body is an error (a ServerError unless its code says more)."""
    async with session_on(one_answer(200, body)) as session:
        with pytest.raises(ServerError):
            await session.status("task_1")


async def test_garbage_after_a_2xx_is_an_invalid_response():
    """A 2xx whose body is not JSON is an InvalidResponseError (retried, then raised)."""
    async with session_on(one_answer(200, b"<html>oops</html>")) as session:
        with pytest.raises(InvalidResponseError):
            await session.status("task_1")


async def test_requests_carry_the_key_only_to_the_api_and_the_version_only_when_asked():
    """Each call sends the Bearer key to the API's URL; the response version is opt-in."""
    transport = one_answer(200, {"code": 200, "data": {"object": "generation.task", "id": "t_9"}})
    async with session_on(transport) as session:
        await session.submit(TextToVideo("plain"))
    call = transport.calls[0]
    assert (call.method, call.url) == ("POST", "https://api.test/v1/videos/generations")
    assert call.headers["Authorization"] == "Bearer sk-client-test-key"
    assert "X-APIMart-Response-Version" not in call.headers
    versioned = one_answer(200, {"code": 200, "data": {"object": "generation.task", "id": "t_9"}})
    async with KlingSession(
        api_key="k" * 12,
        base_url="https://api.test",
        transport=versioned,
        retry=FAST_RETRY,
        response_version="2026-07-27",
    ) as session:
        task = await session.submit(TextToVideo("versioned"))
    assert task.id == "t_9"
    assert versioned.calls[0].headers["X-APIMart-Response-Version"] == "2026-07-27"
