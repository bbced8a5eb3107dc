"""Where a command's output goes: JSON lines (``--json``) or the rich display, and the
folders it writes videos into, proven writable before anything is paid for."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from ._errors import CLIError

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["json_mode", "load_rich", "make_console", "writable_dir"]


def json_mode(args: argparse.Namespace) -> bool:
    """True if --json asked for machine-readable output."""
    return bool(getattr(args, "json", False))


def load_rich() -> ModuleType:
    """The rich display module (imported only when drawn, so the core install does not
    need rich), or a clear message if rich is not installed."""
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
