"""`python -m kling_async.emulator`: run the emulator until Ctrl-C or SIGTERM.

On startup it prints, on stdout, one `KEY=value` line per URL for a parent process
to parse (`KLING_EMULATOR_URL=...`, `KLING_EMULATOR_STORAGE_URL=...`); the human
summary goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence

import attrs

from ._config import DEFAULT_FAULT_KINDS, PROGRESS_SHAPES, EmulatorConfig
from ._server import Emulator

__all__ = ["build_parser", "config_from_args", "main"]

_DEFAULTS = EmulatorConfig()


def build_parser(prog: str = "python -m kling_async.emulator") -> argparse.ArgumentParser:
    """The command-line parser; every `EmulatorConfig` knob has a flag."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run a local emulator of the Kling v3 video API (apimart).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="interface to listen on")
    add("--port", type=int, default=8000, help="API port (0 picks a free one)")
    add("--storage-port", type=int, default=0, help="storage-host port (0 picks a free one)")
    add(
        "--time-scale",
        type=float,
        default=_DEFAULTS.time_scale,
        help="emulated seconds per real second",
    )
    add(
        "--estimated-time",
        type=float,
        default=_DEFAULTS.estimated_time,
        help="emulated estimate of a std 5 s job, in seconds",
    )
    add(
        "--spread",
        type=float,
        default=_DEFAULTS.spread,
        help="sigma of the lognormal actual/estimate ratio",
    )
    add("--bias", type=float, default=_DEFAULTS.bias, help="mean of log(actual/estimate)")
    add(
        "--queue-time",
        type=float,
        default=_DEFAULTS.queue_time,
        help="emulated seconds a job stays pending",
    )
    add("--progress-shape", choices=PROGRESS_SHAPES, default=_DEFAULTS.progress_shape)
    add(
        "--fail-marker",
        default=_DEFAULTS.fail_marker,
        help="prompts containing this fail ('' disables)",
    )
    add(
        "--url-ttl",
        type=float,
        default=_DEFAULTS.url_ttl,
        help="emulated seconds result URLs stay valid",
    )
    add(
        "--rate-limit",
        type=float,
        default=None,
        help="most API requests accepted per 1 s window (default: unlimited)",
    )
    add(
        "--retry-after",
        type=float,
        default=_DEFAULTS.retry_after,
        help="seconds sent in Retry-After with 429s",
    )
    add(
        "--fault-rate",
        type=float,
        default=_DEFAULTS.fault_rate,
        help="probability of a random fault per API request",
    )
    add(
        "--fault-kinds",
        default=",".join(DEFAULT_FAULT_KINDS),
        help="comma-separated kinds random faults are drawn from",
    )
    add(
        "--slow-delay",
        type=float,
        default=_DEFAULTS.slow_delay,
        help="real seconds a 'slow' fault delays the answer",
    )
    add(
        "--api-key",
        action="append",
        dest="api_keys",
        metavar="KEY",
        help="accepted API key (repeatable; default: any non-empty Bearer token)",
    )
    add("--quirks", action="store_true", help="vary response shapes like real gateways")
    add("--seed", type=int, default=None, help="random seed")
    return parser


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    """The config the parsed flags describe; ValueError on an invalid combination."""
    return EmulatorConfig(
        time_scale=args.time_scale,
        estimated_time=args.estimated_time,
        spread=args.spread,
        bias=args.bias,
        queue_time=args.queue_time,
        progress_shape=args.progress_shape,
        fail_marker=args.fail_marker or None,
        url_ttl=args.url_ttl,
        rate_limit=args.rate_limit,
        retry_after=args.retry_after,
        fault_rate=args.fault_rate,
        fault_kinds=args.fault_kinds,
        slow_delay=args.slow_delay,
        api_keys=args.api_keys,
        quirks=args.quirks,
        seed=args.seed,
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
        knobs = ", ".join(
            f"{field.name}={getattr(config, field.name)!r}"
            for field in attrs.fields(EmulatorConfig)
            if getattr(config, field.name) != getattr(_DEFAULTS, field.name)
        )
        print(
            f"kling emulator serving on {emulator.url} (storage {emulator.storage_url})"
            f"{'; ' + knobs if knobs else ''}. Press Ctrl-C to stop.",
            file=sys.stderr,
            flush=True,
        )
        await stop.wait()
        stats = emulator.stats
        print(
            f"kling emulator stopped: {stats.submissions} tasks, "
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
