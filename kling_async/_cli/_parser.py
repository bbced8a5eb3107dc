"""The ``kling-async`` argument parser: global options work before or after the command."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import attrs

from .. import __version__
from .._config import API_KEY_ENV, BASE_URL_ENV, DEFAULT_BASE_URL, PollPolicy
from .._models import (
    ASPECT_RATIOS,
    KLING_V3,
    MAX_DURATION,
    MAX_DURATION_I2V_OR_PRO,
    MAX_SHOTS,
    MIN_DURATION,
    MODES,
    SHOT_TYPES,
    KlingV3Request,
)
from ._connection import DEFAULT_EMULATOR_TIME_SCALE
from ._errors import PROG
from ._jobs import BatchOptions

__all__ = ["build_parser", "field_arg", "shot_arg"]


def shot_arg(value: str) -> dict[str, Any]:
    """A ``--shot PROMPT:SECONDS`` value, as one entry of the API's ``multi_prompt``."""
    prompt, colon, seconds = value.rpartition(":")
    if not colon or not seconds.strip().isdigit():
        raise argparse.ArgumentTypeError(
            f"{value!r}: a shot is PROMPT:SECONDS, e.g. 'a cat wakes up:4'"
        )
    return {"prompt": prompt, "duration": int(seconds)}


def field_arg(value: str) -> tuple[str, Any]:
    """A ``--field NAME=JSON`` value: a field sent as is, the SDK not modelling it."""
    name, equals, raw = value.partition("=")
    if not equals or not name.strip():
        raise argparse.ArgumentTypeError(f"{value!r}: a field is NAME=JSON, e.g. cfg_scale=0.5")
    try:
        return name.strip(), json.loads(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r}: the value must be JSON; a string goes in double quotes, e.g. "
            f"{name}='\"{raw}\"'"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    """The full command-line parser (global options work before or after the command).

    The defaults it shows are the library's own (``PollPolicy()``, ``KlingV3Request``'s,
    ``BatchOptions``'), never written again here."""
    poll = PollPolicy()
    request = attrs.fields(KlingV3Request)
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("connection and output")
    group.add_argument(
        "--api-key", default=argparse.SUPPRESS, help=f"API key (default: ${API_KEY_ENV})"
    )
    group.add_argument(
        "--base-url",
        default=argparse.SUPPRESS,
        help=f"API base URL (default: ${BASE_URL_ENV}, else {DEFAULT_BASE_URL})",
    )
    group.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print JSON lines on stdout instead of the live display",
    )

    waiting = argparse.ArgumentParser(add_help=False)
    group = waiting.add_argument_group("waiting")
    group.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="give up waiting after this long (default: wait until the task ends)",
    )
    group.add_argument(
        "--min-poll-interval",
        type=float,
        metavar="SECONDS",
        help=f"shortest gap between two status checks of a task (default {poll.min_interval:g})",
    )
    group.add_argument(
        "--max-poll-interval",
        type=float,
        metavar="SECONDS",
        help=f"longest gap between two status checks of a task (default {poll.max_interval:g})",
    )
    group.add_argument(
        "--max-polls-per-second",
        type=float,
        metavar="N",
        help="cap on status requests per second for the whole command (default "
        f"{poll.max_requests_per_second:g})",
    )

    emulated = argparse.ArgumentParser(add_help=False)
    group = emulated.add_argument_group("local emulator")
    group.add_argument(
        "--emulator",
        action="store_true",
        help="run against an in-process emulator of the API (no key, no cost)",
    )
    group.add_argument(
        "--emulator-time-scale",
        type=float,
        default=DEFAULT_EMULATOR_TIME_SCALE,
        metavar="X",
        help="emulated seconds per real second (default %(default)g)",
    )

    parser = argparse.ArgumentParser(
        prog=PROG,
        parents=[common],
        description="Generate Kling v3 videos: one at a time, or a crash-safe batch.",
        epilog="Exit codes: 0 success, 1 a task or line did not succeed, 2 bad input "
        "(nothing submitted), 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    gen = sub.add_parser(
        "generate",
        parents=[common, waiting, emulated],
        help="submit one video, show progress, download it",
        description="Submit one generation, show its progress, download the MP4.",
    )
    gen.add_argument(
        "prompt",
        nargs="?",
        help="what the video shows (with --shot, each shot's own prompt replaces it)",
    )
    gen.add_argument(
        "--model",
        default=KLING_V3,
        help=f"model name (default %(default)s); the options below follow {KLING_V3}'s rules, "
        "and for another model only what is given is sent, the server checking it",
    )
    gen.add_argument(
        "--mode",
        metavar="MODE",
        help=f"{' | '.join(MODES)}: 720p, 1080p or 4K (default {request.mode.default})",
    )
    gen.add_argument(
        "--duration",
        type=int,
        metavar="SECONDS",
        help=f"whole seconds, {MIN_DURATION}-{MAX_DURATION} (image-to-video and pro: at most "
        f"{MAX_DURATION_I2V_OR_PRO}; default {request.duration.default}, or the shots' total "
        "with --shot)",
    )
    gen.add_argument(
        "--aspect-ratio",
        metavar="RATIO",
        help=f"frame shape, {' | '.join(ASPECT_RATIOS)} (default {request.aspect_ratio.default}; "
        "an image's own shape "
        "may override it)",
    )
    gen.add_argument("--negative-prompt", metavar="TEXT", help="what to avoid")
    gen.add_argument(
        "--image",
        action="append",
        metavar="URL|FILE",
        help="first-frame image, an http(s) URL or a local file (uploaded first); repeat once "
        "more for the last frame: image-to-video",
    )
    gen.add_argument(
        "--last-frame",
        metavar="URL|FILE",
        help="last-frame image, an http(s) URL or a local file (with --image)",
    )
    gen.add_argument(
        "--shot",
        action="append",
        type=shot_arg,
        metavar="PROMPT:SECONDS",
        help=f"one shot of a multi-shot video, in order (repeat, {MAX_SHOTS} at most); the "
        "shots' seconds add up to --duration",
    )
    gen.add_argument(
        "--shot-type",
        metavar="TYPE",
        help=f"{' | '.join(SHOT_TYPES)}: the shots given with --shot (the default with "
        "them), or split by the model from the prompt",
    )
    gen.add_argument(
        "--field",
        action="append",
        type=field_arg,
        metavar="NAME=JSON",
        help="a request field the options do not cover, sent as is (repeatable), e.g. "
        "--field cfg_scale=0.5 or --field 'resolution=\"1080p\"'",
    )
    gen.add_argument("--audio", action=argparse.BooleanOptionalAction, help="generate audio")
    gen.add_argument("--watermark", action=argparse.BooleanOptionalAction, help="add a watermark")
    gen.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help="where to save the MP4: a file, or an existing directory to put TASK_ID.mp4 in "
        "(default ./TASK_ID.mp4); missing parent directories are created",
    )
    gen.add_argument(
        "--idempotency-key",
        metavar="KEY",
        help="the submit's Idempotency-Key (default: a fresh random one); re-running with the "
        "key of a submit whose outcome was unknown returns its task instead of paying twice",
    )

    batch = sub.add_parser(
        "batch",
        parents=[common, waiting, emulated],
        help="run a JSONL file of requests, resumably",
        description="Run every request of a JSON Lines file (one request per line, with the "
        "API's field names), download every video into DIR, and keep a journal so that "
        "re-running the same command resumes without paying twice.",
    )
    batch.add_argument(
        "file",
        type=Path,
        metavar="FILE.jsonl",
        help="one JSON request per line with the API's field names (multi_prompt, shot_type "
        "and multi_shot for multi-shot; fields the SDK does not know are sent as given, with "
        "a warning); image_urls / last_frame_image entries that are not http(s) URLs are "
        "local files, relative to this file's directory",
    )
    batch.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="DIR",
        help="video directory (created if missing; one batch at a time may use it)",
    )
    batch.add_argument(
        "--concurrency",
        type=int,
        default=attrs.fields(BatchOptions).concurrency.default,
        metavar="N",
        help="submissions (and uploads) in flight (default %(default)s)",
    )
    batch.add_argument(
        "--journal",
        type=Path,
        metavar="PATH",
        help="the resume journal (default DIR/.kling-journal.sqlite3; none with --emulator)",
    )
    batch.add_argument(
        "--resubmit-uncertain",
        action="store_true",
        help="only for lines of journals written before idempotency keys (schema 1): submit "
        "again, with a new key, lines whose POST may or may not have reached the server (may "
        "pay twice). Other lines never need it: a re-run re-sends them with their own key",
    )
    batch.add_argument(
        "--retry-failed", action="store_true", help="submit again lines whose task failed"
    )

    status = sub.add_parser(
        "status",
        parents=[common],
        help="show a task's status once",
        description="Show a task's status (one request).",
    )
    status.add_argument("task_id", metavar="TASK_ID", help="the id a submit returned")

    wait = sub.add_parser(
        "wait",
        parents=[common, waiting],
        help="wait for a task to end, print its video URLs",
        description="Wait for a task to end and print its video URLs.",
    )
    wait.add_argument("task_id", metavar="TASK_ID", help="the id a submit returned")

    download = sub.add_parser(
        "download",
        parents=[common, waiting],
        help="wait for a task if needed, save its video",
        description="Wait for a task if needed and save its video.",
    )
    download.add_argument("task_id", metavar="TASK_ID", help="the id a submit returned")
    download.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="FILE",
        help="where to save the MP4: a file, or an existing directory to put TASK_ID.mp4 in; "
        "missing parent directories are created",
    )

    sub.add_parser(
        "emulator",
        add_help=False,
        help="run the local fake API (see: kling-async emulator --help)",
    )
    return parser
