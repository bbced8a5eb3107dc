"""The ``kling-async`` command: parse, dispatch, turn errors into one message and an exit
code (the codes are ``_errors``'s)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ._batchcmd import batch
from ._commands import download, generate, status, wait
from ._errors import EXIT_INTERRUPTED, PROG, CLIError
from ._jsonlines import emit
from ._output import json_mode
from ._parser import build_parser

__all__ = ["main"]

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "generate": generate,
    "batch": batch,
    "status": status,
    "wait": wait,
    "download": download,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, extra = parser.parse_known_args(args_list)
    if args.command == "emulator":
        from ..emulator import main as emulator_main

        return emulator_main(extra, prog=f"{PROG} emulator")
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return COMMANDS[args.command](args)
    except CLIError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        _error(args, str(exc), problems=exc.problems)
        return exc.code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _error(args: argparse.Namespace, message: str, **fields: Any) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    if json_mode(args):
        emit({"event": "error", "message": message, **fields})
