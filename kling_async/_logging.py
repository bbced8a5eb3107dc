"""``KLING_LOG=debug|info``: the package's log records on stderr, without any code.

Every record of the ``kling_async`` logger keeps its structured fields in ``extra``
(``task_id``, ``status``, ``attempt``, ``wait``, ...), so a handler of your own can read
them as attributes of the record; this readable handler prints them after the message::

    19:02:11.408 kling_async INFO retrying submit in 0.42s after attempt 1 (attempt=1 wait=0.42)

Set nothing and the package only logs through the ``logging`` configuration you have
(WARNING and above reach Python's last-resort handler, as for any library).
"""

from __future__ import annotations

import logging
import os
import sys

__all__ = ["ENV", "ReadableFormatter", "configure_from_environment"]

ENV = "KLING_LOG"
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO}
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class ReadableFormatter(logging.Formatter):
    """``time logger LEVEL message (field=value ...)``: the record's ``extra`` fields last."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s.%(msecs)03d %(name)s %(levelname)s %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        if fields:
            text += " (" + " ".join(f"{key}={value}" for key, value in fields.items()) + ")"
        return text


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time (a test runner may swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:  # as logging's own handlers: report, never raise into the caller
            self.handleError(record)


_HANDLER: logging.Handler | None = None


def configure_from_environment(environ: dict[str, str] | None = None) -> logging.Handler | None:
    """Send the package's records to stderr if ``$KLING_LOG`` asks for it (once; calling
    again with another level only changes the level). Returns the handler, if any."""
    global _HANDLER
    value = (os.environ if environ is None else environ).get(ENV, "").strip().lower()
    level = LEVELS.get(value)
    if level is None:
        if value:
            sys.stderr.write(f"kling_async: ignoring {ENV}={value!r} (use debug or info)\n")
        return None
    logger = logging.getLogger("kling_async")
    if _HANDLER is None:
        _HANDLER = _StderrHandler()
        _HANDLER.setFormatter(ReadableFormatter())
        logger.addHandler(_HANDLER)
    logger.setLevel(level)
    return _HANDLER
