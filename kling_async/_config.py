"""Frozen settings: where the API is, how to retry, how to poll."""

from __future__ import annotations

import ipaddress
import os
from urllib.parse import urlsplit

import attrs

from ._exceptions import KlingError, RequestValidationError

__all__ = [
    "DEFAULT_BASE_URL",
    "PollPolicy",
    "RetryPolicy",
    "SessionConfig",
    "check_api_key",
    "given_api_key",
    "header_token",
    "resolve_config",
    "scaled_poll",
]

DEFAULT_BASE_URL = "https://api.apimart.ai"
API_KEY_ENV = "APIMART_API_KEY"
BASE_URL_ENV = "APIMART_BASE_URL"


def _positive(_inst: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name}: must be > 0 (got {value!r})")


@attrs.frozen
class RetryPolicy:
    """Exponential backoff with full jitter for GETs and for submits that surely did not land.

    ``Retry-After`` is honoured exactly; a server asking for more than ``max_retry_after``
    seconds ends the retries instead of being waited on for less than it asked.
    """

    max_attempts: int = attrs.field(default=5, validator=attrs.validators.ge(1))
    base_delay: float = attrs.field(default=0.5, validator=_positive)
    max_delay: float = attrs.field(default=20.0, validator=_positive)
    max_retry_after: float = attrs.field(default=300.0, validator=_positive)


@attrs.frozen
class PollPolicy:
    """How the shared poller spends its status requests.

    ``min_interval``/``max_interval`` clamp the gap between two checks of one task;
    ``max_requests_per_second`` caps status requests for the whole session in any 1 s
    window; ``max_concurrency`` bounds status requests in flight (and the connection pool).
    """

    min_interval: float = attrs.field(default=2.0, validator=_positive)
    max_interval: float = attrs.field(default=30.0, validator=_positive)
    max_requests_per_second: float = attrs.field(default=10.0, validator=_positive)
    max_concurrency: int = attrs.field(default=16, validator=attrs.validators.ge(1))
    jitter: float = attrs.field(
        default=0.1, validator=[attrs.validators.ge(0.0), attrs.validators.lt(1.0)]
    )

    def __attrs_post_init__(self) -> None:
        if self.max_interval < self.min_interval:
            raise ValueError(
                f"max_interval: must be >= min_interval ({self.max_interval} < {self.min_interval})"
            )


def scaled_poll(time_scale: float, max_requests_per_second: float | None = None) -> PollPolicy:
    """The default :class:`PollPolicy` seen through an emulator clock ``time_scale`` times
    faster (``--time-scale``): intervals divided by it, the request cap multiplied by it
    unless given. Measured so, a schedule is the default one, only faster."""
    if not time_scale > 0:
        raise ValueError(f"time_scale: must be > 0 (got {time_scale!r})")
    default = PollPolicy()
    return attrs.evolve(
        default,
        min_interval=default.min_interval / time_scale,
        max_interval=default.max_interval / time_scale,
        max_requests_per_second=max_requests_per_second
        or default.max_requests_per_second * time_scale,
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@attrs.frozen
class SessionConfig:
    """Everything a session needs, resolved and checked; the key is hidden from ``repr``."""

    api_key: str = attrs.field(repr=False)
    base_url: str
    response_version: str | None = None
    poll: PollPolicy = PollPolicy()
    retry: RetryPolicy = RetryPolicy()
    request_timeout: float = attrs.field(default=30.0, validator=_positive)
    download_timeout: float = attrs.field(default=600.0, validator=_positive)
    max_download_bytes: int = attrs.field(default=2 * 1024**3, validator=attrs.validators.ge(1))


_CONTROL_NAMES = {"\n": "a newline", "\r": "a carriage return", "\x00": "a NUL byte", "\t": "a tab"}


def header_token(value: object, field: str, rule: str, *, longest: int = 8192) -> str:
    """``value`` if it can be sent as a header value as is: 1 to ``longest`` visible ASCII
    characters, no spaces; else a RequestValidationError naming ``field`` and ``rule``."""
    if (
        not isinstance(value, str)
        or not 1 <= len(value) <= longest
        or not all("!" <= char <= "~" for char in value)
    ):
        raise RequestValidationError(field, rule, value)
    return value


def check_api_key(key: str) -> str:
    """``key`` without surrounding whitespace, or a KlingError naming what is wrong with it.

    A key is sent in a header, so it must be visible ASCII without spaces; the message
    names the problem, never the key.
    """
    key = key.strip()
    for char in key:
        if not "!" <= char <= "~":
            what = _CONTROL_NAMES.get(char)
            if what is None:
                what = "a space" if char == " " else f"the character U+{ord(char):04X}"
            raise KlingError(
                f"api_key: contains {what}; an API key is visible ASCII without spaces "
                f"(check the value passed as api_key= or in ${API_KEY_ENV})"
            )
    return key


def given_api_key(api_key: str | None) -> str | None:
    """``api_key``, else ``$APIMART_API_KEY``; None when that holds nothing but whitespace."""
    key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
    return key if key and key.strip() else None


def resolve_config(
    api_key: str | None,
    base_url: str | None,
    *,
    allow_insecure: bool = False,
    **options: object,
) -> SessionConfig:
    """Fill the key and URL from the environment and refuse unsafe combinations."""
    key = given_api_key(api_key)
    if key is None:
        raise KlingError(
            f"no API key: pass api_key=... or set the {API_KEY_ENV} environment variable"
        )
    key = check_api_key(key)
    url = (base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise KlingError(f"base_url: must be an http(s) URL with a host (got {url!r})")
    if parts.scheme == "http" and not allow_insecure and not _is_loopback(parts.hostname):
        raise KlingError(
            f"base_url: plain http would send the API key unencrypted to {parts.hostname}; "
            "use https, a loopback address, or pass allow_insecure=True"
        )
    return SessionConfig(api_key=key, base_url=url, **options)  # type: ignore[arg-type]
