"""`python -m kling_async.emulator`: run the emulator until Ctrl-C or SIGTERM.

On startup it prints, on stdout, one `KEY=value` line per URL for a parent process
to parse (`KLING_EMULATOR_URL=...`, `KLING_EMULATOR_STORAGE_URL=...`); the human
summary goes to stderr. Every `EmulatorConfig` field has a flag (`time_scale` is
`--time-scale`); `--preset realistic` starts from `EmulatorConfig.realistic()` and the
flags given explicitly override it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from ._config import (
    ERROR_STYLES,
    FAULT_KINDS,
    PROGRESS_SHAPES,
    REALISTIC,
    RUN_DISTRIBUTIONS,
    UNKNOWN_FIELDS,
    EmulatorConfig,
)
from ._server import Emulator

__all__ = ["PRESETS", "banner", "build_parser", "config_from_args", "main"]

_DEFAULTS = EmulatorConfig()
PRESETS: dict[str, Callable[..., EmulatorConfig]] = {"realistic": EmulatorConfig.realistic}
"""Presets `--preset` accepts, each a function of the explicit overrides."""


@attrs.frozen
class _Knob:
    """One `EmulatorConfig` field as a flag: `--field-name`, absent unless given."""

    field: str
    help: str
    type: Callable[[str], Any] | None = float
    choices: tuple[str, ...] | None = None
    default_text: str | None = None
    """How to show the default when repr of the value would not read well."""

    @property
    def flag(self) -> str:
        return "--" + self.field.replace("_", "-")

    def full_help(self) -> str:
        shown = self.default_text
        if shown is None:
            shown = str(getattr(_DEFAULTS, self.field))
        return f"{self.help} (default: {shown})".replace("%", "%%")


_KNOBS: tuple[_Knob, ...] = (
    _Knob("time_scale", "emulated seconds per real second; 200 makes a 60 s job take 0.3 s"),
    _Knob(
        "estimated_time",
        "emulated estimate of a std 5 s job, in seconds; pro x1.5, each second over 5 +12%",
    ),
    _Knob("queue_time", "emulated seconds every job stays pending before processing"),
    _Knob("queue_spread", "extra queue, uniform in [0, QUEUE_SPREAD x the job's estimate]"),
    _Knob(
        "long_queue_rate",
        "probability a job also waits a long queue (as when an account's slots are full)",
    ),
    _Knob(
        "long_queue_factor",
        "a long queue lasts uniform in [0.5, 1] x LONG_QUEUE_FACTOR x the job's estimate",
    ),
    _Knob(
        "max_concurrent",
        "most jobs processing at once; the rest stay pending, first come first served",
        type=int,
        default_text="unlimited",
    ),
    _Knob(
        "run_distribution",
        "distribution of the run/estimate ratio: lognormal, or uniform in [1 - spread, 1 + spread]",
        type=None,
        choices=RUN_DISTRIBUTIONS,
    ),
    _Knob(
        "spread",
        "spread of the run/estimate ratio: the lognormal's sigma, or the uniform's "
        "half-width (below 1)",
    ),
    _Knob("bias", "mean of log(run/estimate); positive makes jobs run late"),
    _Knob(
        "clock_offset",
        "emulated seconds the server clock is ahead of the client's (negative: behind)",
    ),
    _Knob(
        "progress_shape",
        "how progress moves while processing: linear, steps (jumps of --progress-step), "
        "stuck (0 until done) or eased (fast start, slow finish)",
        type=None,
        choices=PROGRESS_SHAPES,
    ),
    _Knob("progress_step", "size of a progress jump with --progress-shape steps", type=int),
    _Knob(
        "cost_per_second",
        "report cost (this x seconds of video, x1.5 in pro) and credits_cost on completed tasks",
        default_text="no cost reported",
    ),
    _Knob(
        "fail_marker",
        "prompts containing this text end failed; '' disables",
        type=str,
        default_text=repr(_DEFAULTS.fail_marker),
    ),
    _Knob(
        "url_ttl",
        "emulated seconds result and upload URLs stay valid",
        default_text=f"{_DEFAULTS.url_ttl:g}, i.e. 72 h",
    ),
    _Knob(
        "rate_limit",
        "most API requests accepted in any 1 s window; more get 429",
        default_text="unlimited",
    ),
    _Knob("retry_after", "real seconds sent in Retry-After with 429s"),
    _Knob(
        "rate_limit_code",
        "upstream Kling code in the body of the emulator's 429s (rate limit and random 429 "
        "faults): 1302 slow down, 1303 too many at once, 1101/1102 in arrears or out of "
        "quota, 1100/1304 account or IP refused",
        type=int,
        default_text="the error style's own",
    ),
    _Knob(
        "unknown_fields",
        "a submit field its model does not document: accept it, or refuse it with a 400 naming it",
        type=None,
        choices=UNKNOWN_FIELDS,
    ),
    _Knob("fault_rate", "probability of a random fault per API request"),
    _Knob(
        "fault_kinds",
        f"comma-separated kinds random faults are drawn from; known: "
        f"{', '.join(sorted(FAULT_KINDS))}",
        type=str,
        default_text=",".join(_DEFAULTS.fault_kinds),
    ),
    _Knob("slow_delay", "real seconds a 'slow' fault holds the answer"),
    _Knob(
        "error_style",
        "shape of API error bodies: code ({code, message}), error_object ({error: {...}}), "
        "success_false ({success: false, message}) or mixed (random per response)",
        type=None,
        choices=ERROR_STYLES,
    ),
    _Knob(
        "max_upload_bytes",
        "largest image POST /v1/uploads/images accepts; bigger ones get 413",
        type=int,
        default_text=f"{_DEFAULTS.max_upload_bytes}, i.e. 10 MiB",
    ),
    _Knob(
        "seed",
        "seed for every random choice, for reproducible runs",
        type=int,
        default_text="a fresh one each run",
    ),
)


def build_parser(prog: str = "python -m kling_async.emulator") -> argparse.ArgumentParser:
    """The command-line parser; every `EmulatorConfig` knob has a flag, every flag help."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run a local emulator of the Kling v3 video API (apimart).",
    )
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1)")
    add("--port", type=int, default=8000, help="API port; 0 picks a free one (default: 8000)")
    add(
        "--storage-port",
        type=int,
        default=0,
        help="storage-host port; 0 picks a free one (default: 0)",
    )
    preset = ", ".join(f"{name} {value}" for name, value in REALISTIC.items())
    add(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help=f"start from a preset, then apply the flags given; realistic: {preset} "
        "(default: no preset)",
    )
    for knob in _KNOBS:
        kwargs: dict[str, Any] = {"default": argparse.SUPPRESS, "help": knob.full_help()}
        if knob.choices is not None:
            kwargs["choices"] = knob.choices
        elif knob.type is not None:
            kwargs["type"] = knob.type
        add(knob.flag, **kwargs)
    add(
        "--api-key",
        action="append",
        dest="api_keys",
        default=argparse.SUPPRESS,
        metavar="KEY",
        help="an accepted API key, repeatable (default: any non-empty Bearer token)",
    )
    add(
        "--quirks",
        action="store_true",
        default=argparse.SUPPRESS,
        help="vary response shapes like real gateways: URLs as strings, numbers as "
        "strings, extra fields (default: off)",
    )
    return parser


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    """The config the parsed flags describe; ValueError on an invalid combination."""
    overrides: dict[str, Any] = {}
    for field in attrs.fields(EmulatorConfig):
        if hasattr(args, field.name):
            overrides[field.name] = getattr(args, field.name)
    if "fail_marker" in overrides:
        overrides["fail_marker"] = overrides["fail_marker"] or None
    preset = getattr(args, "preset", None)
    if preset is not None:
        return PRESETS[preset](**overrides)
    return EmulatorConfig(**overrides)


def banner(config: EmulatorConfig, url: str, storage_url: str) -> str:
    """The human startup line: where it serves and the knobs off their defaults.

    Accepted API keys are never shown, only how many there are.
    """
    knobs = ", ".join(
        f"{field.name}={getattr(config, field.name)!r}"
        for field in attrs.fields(EmulatorConfig)
        if field.name != "api_keys"
        and getattr(config, field.name) != getattr(_DEFAULTS, field.name)
    )
    keys = config.api_keys
    accepts = (
        "any non-empty Bearer token accepted"
        if keys is None
        else f"{len(keys)} API key{'s' if len(keys) != 1 else ''} accepted"
    )
    return (
        f"kling emulator serving on {url} (storage {storage_url}); {accepts}"
        f"{'; ' + knobs if knobs else ''}. Press Ctrl-C to stop."
    )


async def _serve_until_stopped(config: EmulatorConfig, args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    async with Emulator(
        config, host=args.host, port=args.port, storage_port=args.storage_port
    ) as emulator:
        print(f"KLING_EMULATOR_URL={emulator.url}", flush=True)
        print(f"KLING_EMULATOR_STORAGE_URL={emulator.storage_url}", flush=True)
        print(banner(config, emulator.url, emulator.storage_url), file=sys.stderr, flush=True)
        await stop.wait()
        stats = emulator.stats
        print(
            f"kling emulator stopped: {stats.submissions} tasks, {stats.uploads} uploads, "
            f"{stats.requests_total} API requests",
            file=sys.stderr,
            flush=True,
        )


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Run the emulator command until Ctrl-C or SIGTERM; returns the process exit code.

    `prog` names the command in help and errors (e.g. "kling-async emulator").
    """
    parser = build_parser() if prog is None else build_parser(prog)
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except (ValueError, TypeError) as exc:
        parser.error(str(exc))
    try:
        asyncio.run(_serve_until_stopped(config, args))
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        print(f"error: cannot start the emulator: {exc}", file=sys.stderr)
        return 1
    return 0
