"""How a command ends: its exit codes, and :class:`CLIError`, one message and a code.

Exit codes: 0 everything succeeded; 1 a task failed, a line did not finish, or the API or
network refused; 2 bad options or input (nothing was submitted); 130 interrupted.
"""

from __future__ import annotations

from .._exceptions import RequestValidationError
from ._images import IMAGE_FIELDS

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "PROG",
    "CLIError",
    "validation_message",
]

PROG = "kling-async"

EXIT_OK = 0
EXIT_FAILED = 1  # a task failed, a line did not finish, the API or network refused
EXIT_USAGE = 2  # bad options or input: nothing was submitted
EXIT_INTERRUPTED = 130  # Ctrl-C / SIGTERM


class CLIError(Exception):
    """A problem reported as one ``error: ...`` line, ending the command with ``code``."""

    def __init__(
        self, message: str, code: int = EXIT_USAGE, problems: list[str] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        #: Every individual problem (e.g. each bad line of a batch file), printed first.
        self.problems = problems or []


def validation_message(exc: RequestValidationError) -> str:
    """The library's message for a refused request, plus the whole file name when the
    message had to shorten it (a missing image must be named in full)."""
    text = str(exc)
    value = exc.value
    shortened = isinstance(value, str) and repr(value) not in text
    if shortened and exc.field in IMAGE_FIELDS:
        text += f"; the file: {value}"
    return text
