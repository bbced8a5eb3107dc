"""Where a command sends its requests and how it polls: the options and the environment,
checked by the library's own rules before anything is sent; the session it opens, on the
API or on an in-process emulator.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import attrs

from .._config import API_KEY_ENV, PollPolicy, given_api_key, resolve_config, scaled_poll
from .._exceptions import KlingError
from .._session import KlingSession
from ._errors import CLIError

if TYPE_CHECKING:
    from ..emulator import EmulatorConfig

__all__ = [
    "DEFAULT_EMULATOR_TIME_SCALE",
    "EMULATED_POLLS_PER_SECOND",
    "KEY_PREFIX",
    "Connection",
    "connection_from_args",
    "open_session",
]

KEY_PREFIX = "kling-async-cli-"
"""How the command's idempotency keys begin (the session's own begin "kling-async-")."""
EMULATOR_KEY = "emulator-demo-key"  # never send a real key to the local emulator
DEFAULT_EMULATOR_TIME_SCALE = 30.0  # a std 5 s demo job (60 s estimate) takes ~2 s
EMULATED_POLLS_PER_SECOND = 50.0
"""The status requests per second a command allows itself on the in-process emulator."""
_EMULATED_FLOORS = (0.02, 0.1)  # the shortest min and max intervals there, at any scale


@attrs.frozen
class Connection:
    """Where to send requests and how to poll: checked, ready to open a session."""

    api_key: str = attrs.field(repr=False)
    base_url: str | None
    poll: PollPolicy
    emulator: EmulatorConfig | None = None
    """Set when the session runs against an in-process emulator."""


def connection_from_args(args: argparse.Namespace) -> Connection:
    """Resolve key, URL and polling from options and environment; CLIError when unusable."""
    emulator = _emulator_config(args)
    poll = _poll_policy(args, None if emulator is None else emulator.time_scale)
    if emulator is not None:
        return Connection(EMULATOR_KEY, None, poll, emulator)
    key = given_api_key(getattr(args, "api_key", None) or None)
    if key is None:
        raise CLIError(
            f"no API key: set the {API_KEY_ENV} environment variable or pass --api-key "
            "(or try the local emulator with --emulator)"
        )
    try:
        config = resolve_config(key, getattr(args, "base_url", None) or None)
    except KlingError as exc:  # the library's own words: a bad key, an unsafe URL
        raise CLIError(str(exc)) from exc
    return Connection(config.api_key, config.base_url, poll)


def _emulator_config(args: argparse.Namespace) -> EmulatorConfig | None:
    """The in-process emulator's settings if --emulator asked for one, checked by the
    emulator's own rules (imported only then)."""
    if not getattr(args, "emulator", False):
        return None
    if getattr(args, "base_url", None):
        raise CLIError("--emulator and --base-url cannot be used together")
    from ..emulator import EmulatorConfig

    try:
        return EmulatorConfig(time_scale=args.emulator_time_scale)
    except ValueError as exc:
        raise CLIError(f"--emulator-time-scale: {exc}") from exc


def _poll_policy(args: argparse.Namespace, scale: float | None) -> PollPolicy:
    """The poll options over the defaults: the library's, or on the emulator the library's
    seen through its faster clock (``scaled_poll``), floored and capped for a demo."""
    defaults = PollPolicy()
    if scale is not None:
        scaled = scaled_poll(scale, EMULATED_POLLS_PER_SECOND)
        shortest, longest = _EMULATED_FLOORS
        defaults = attrs.evolve(
            defaults,
            min_interval=max(shortest, scaled.min_interval),
            max_interval=max(longest, scaled.max_interval),
            max_requests_per_second=scaled.max_requests_per_second,
        )
    min_interval = _given(args, "min_poll_interval", defaults.min_interval)
    max_interval = _given(args, "max_poll_interval", max(defaults.max_interval, min_interval))
    rate = _given(args, "max_polls_per_second", defaults.max_requests_per_second)
    try:
        return attrs.evolve(
            defaults,
            min_interval=min_interval,
            max_interval=max_interval,
            max_requests_per_second=rate,
        )
    except ValueError as exc:
        raise CLIError(f"poll options: {exc}") from exc


def _given(args: argparse.Namespace, name: str, default: float) -> float:
    value = getattr(args, name, None)
    return default if value is None else float(value)


@contextlib.asynccontextmanager
async def open_session(connection: Connection) -> AsyncIterator[KlingSession]:
    """A session on the API, or on an in-process emulator that lives as long as it does."""
    if connection.emulator is None:
        async with KlingSession(
            api_key=connection.api_key, base_url=connection.base_url, poll=connection.poll
        ) as session:
            yield session
        return
    from ..emulator import Emulator

    async with (
        Emulator(connection.emulator, host="127.0.0.1", port=0) as emulator,
        KlingSession(
            api_key=connection.api_key, base_url=emulator.url, poll=connection.poll
        ) as session,
    ):
        yield session
