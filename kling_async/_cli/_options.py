"""What the parsed options mean: credentials, polling, the in-process emulator, the output
directory, and which display to draw; plus the exit codes and :class:`CLIError`.

Everything here is checked before anything is sent, so a missing key, a bad base URL or
an unwritable directory is one clear message and nothing is submitted.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import attrs

from .._config import API_KEY_ENV, BASE_URL_ENV, PollPolicy, resolve_config
from .._exceptions import KlingError, RequestValidationError
from .._session import KlingSession

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "DEFAULT_EMULATOR_TIME_SCALE",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "PROG",
    "CLIError",
    "Connection",
    "connection_from_args",
    "json_mode",
    "load_rich",
    "make_console",
    "new_idempotency_key",
    "open_session",
    "validation_message",
    "writable_dir",
]

PROG = "kling-async"

EXIT_OK = 0
EXIT_FAILED = 1  # a task failed, a line did not finish, the API or network refused
EXIT_USAGE = 2  # bad options or input: nothing was submitted
EXIT_INTERRUPTED = 130  # Ctrl-C / SIGTERM

EMULATOR_KEY = "emulator-demo-key"  # never send a real key to the local emulator
DEFAULT_EMULATOR_TIME_SCALE = 30.0  # a std 5 s demo job (60 s estimate) takes ~2 s


class CLIError(Exception):
    """A problem reported as one ``error: ...`` line, ending the command with ``code``."""

    def __init__(
        self, message: str, code: int = EXIT_USAGE, problems: list[str] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        #: Every individual problem (e.g. each bad line of a batch file), printed first.
        self.problems = problems or []


@attrs.frozen
class Connection:
    """Where to send requests and how to poll: checked, ready to open a session."""

    api_key: str | None = attrs.field(repr=False)
    base_url: str | None
    poll: PollPolicy
    emulator_time_scale: float | None = None
    """Set when the session runs against an in-process emulator."""


def connection_from_args(args: argparse.Namespace) -> Connection:
    """Resolve key, URL and polling from options and environment; CLIError when unusable."""
    scale: float | None = None
    if getattr(args, "emulator", False):
        if getattr(args, "base_url", None):
            raise CLIError("--emulator and --base-url cannot be used together")
        scale = args.emulator_time_scale
        if not scale > 0:
            raise CLIError("--emulator-time-scale: must be > 0")
    poll = _poll_policy(args, scale)
    if scale is not None:
        return Connection(EMULATOR_KEY, None, poll, scale)
    key = getattr(args, "api_key", None) or os.environ.get(API_KEY_ENV)
    if not key or not key.strip():
        raise CLIError(
            f"no API key: set the {API_KEY_ENV} environment variable or pass --api-key "
            "(or try the local emulator with --emulator)"
        )
    base_url = getattr(args, "base_url", None) or os.environ.get(BASE_URL_ENV)
    try:
        resolve_config(key, base_url)
    except KlingError as exc:  # the library's own words: a bad key, an unsafe URL
        raise CLIError(str(exc)) from exc
    return Connection(key, base_url, poll)


def validation_message(exc: RequestValidationError) -> str:
    """The library's message for a refused request, plus the whole file name when the
    message had to shorten it (a missing image must be named in full)."""
    text = str(exc)
    value = exc.value
    shortened = isinstance(value, str) and repr(value) not in text
    if shortened and exc.field in ("image_urls", "last_frame_image"):
        text += f"; the file: {value}"
    return text


def _poll_policy(args: argparse.Namespace, scale: float | None) -> PollPolicy:
    defaults = PollPolicy()
    if scale is not None:  # emulated jobs run `scale` times faster: poll that much faster
        defaults = PollPolicy(
            min_interval=max(0.02, defaults.min_interval / scale),
            max_interval=max(0.1, defaults.max_interval / scale),
            max_requests_per_second=50.0,
        )
    min_interval = _given(args, "min_poll_interval", defaults.min_interval)
    max_interval = _given(args, "max_poll_interval", max(defaults.max_interval, min_interval))
    rate = _given(args, "max_polls_per_second", defaults.max_requests_per_second)
    try:
        return PollPolicy(
            min_interval=min_interval, max_interval=max_interval, max_requests_per_second=rate
        )
    except ValueError as exc:
        raise CLIError(f"poll options: {exc}") from exc


def _given(args: argparse.Namespace, name: str, default: float) -> float:
    value = getattr(args, name, None)
    return default if value is None else float(value)


def new_idempotency_key() -> str:
    """A fresh ``Idempotency-Key`` for one logical request (1-191 visible ASCII)."""
    return "kling-async-cli-" + secrets.token_hex(16)


@contextlib.asynccontextmanager
async def open_session(connection: Connection) -> AsyncIterator[KlingSession]:
    """A session on the API, or on an in-process emulator that lives as long as it does."""
    if connection.emulator_time_scale is None:
        async with KlingSession(
            api_key=connection.api_key, base_url=connection.base_url, poll=connection.poll
        ) as session:
            yield session
        return
    from ..emulator import Emulator, EmulatorConfig

    config = EmulatorConfig(time_scale=connection.emulator_time_scale)
    async with (
        Emulator(config, host="127.0.0.1", port=0) as emulator,
        KlingSession(
            api_key=connection.api_key, base_url=emulator.url, poll=connection.poll
        ) as session,
    ):
        yield session


def writable_dir(path: Path, what: str) -> Path:
    """Create ``path`` if needed and prove a file can be written in it; CLIError if not."""
    try:
        if path.exists() and not path.is_dir():
            raise CLIError(f"{what} {path} exists and is not a directory")
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path, prefix=".kling-write-test-"):
            pass
    except OSError as exc:
        raise CLIError(f"{what} {path} is not writable: {exc.strerror or exc}") from exc
    return path


def json_mode(args: argparse.Namespace) -> bool:
    """True if --json asked for machine-readable output."""
    return bool(getattr(args, "json", False))


def load_rich() -> ModuleType:
    """The rich display module, or a clear message if rich is not installed."""
    try:
        from . import _progress
    except ImportError as exc:
        if exc.name and exc.name.split(".")[0] == "rich":
            raise CLIError(
                "the live display needs rich: pip install 'kling-async[cli]' (or pass --json)"
            ) from exc
        raise
    return _progress


def make_console(*, stderr: bool) -> Console:
    """A rich console on stderr (live views) or stdout (results)."""
    load_rich()
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)
