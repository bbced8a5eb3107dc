"""Session settings: key and URL from the environment, unsafe combinations refused."""

from __future__ import annotations

import re

import pytest

from kling_async import KlingError, KlingSession, PollPolicy, RequestValidationError


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


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("sk-abc\ndef", "a newline"),
        ("sk-abc\r\ndef", "a carriage return"),
        ("sk-abc\x00def", "a NUL byte"),
        ("sk-abc def", "a space"),
        ("sk-abcé", "U+00E9"),
    ],
)
def test_a_key_that_cannot_be_a_header_is_refused_naming_the_problem(key, problem):
    """A key with control characters, spaces or non-ASCII is refused at once; the message
    names the problem and where the key came from, never the key."""
    with pytest.raises(KlingError, match=re.escape(problem)) as info:
        KlingSession(api_key=key, base_url="http://127.0.0.1:1")
    assert "sk-abc" not in str(info.value)
    assert "APIMART_API_KEY" in str(info.value)


def test_surrounding_whitespace_of_a_key_is_dropped():
    """A key pasted with a trailing newline (a file, an env var) still works."""
    assert KlingSession(api_key=" sk-ok\n", base_url="http://127.0.0.1:1").config.api_key == "sk-ok"


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


def test_response_version_must_be_header_safe():
    """The opt-in response version is checked like any other input."""
    with pytest.raises(RequestValidationError, match="response_version"):
        KlingSession(api_key="k", base_url="http://127.0.0.1:1", response_version="2026 07\n27")
