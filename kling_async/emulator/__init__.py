"""A local emulator of the Kling v3 video API: tests, benchmarks and demos run on it.

It speaks the API of ``API.md`` (submit, status with pending → processing → final
state, progress, ``estimated_time``, signed result URLs on a second "storage" origin
serving a real MP4, expiry) and adds test knobs: a time scale, run-time spread,
progress shapes, failure prompts and scripted fates, scripted and random faults, a
rate limit, and counters readable in-process (``emu.stats``) or over HTTP
(``GET /_stats``)::

    async with Emulator(EmulatorConfig(time_scale=200)) as emu:
        ...  # point a client at emu.url

Times reported by the status route (``created``, ``estimated_time``, ...) are real
seconds, so a client scheduling on them works unchanged at any time scale. With
``quirks=True`` responses vary like real gateways: a result ``url`` as a string
instead of a list, numbers as strings, unknown extra fields.

Run it as a command with ``python -m kling_async.emulator --help``.
"""

from ._command import build_parser, config_from_args, main
from ._config import (
    DEFAULT_FAULT_KINDS,
    FAULT_KINDS,
    EmulatorConfig,
    Fault,
    Outcome,
    ProgressShape,
    Route,
    When,
)
from ._server import Emulator
from ._stats import Stats
from ._storage import sample_video
from ._tasks import Script, TaskRecord

__all__ = [
    "DEFAULT_FAULT_KINDS",
    "FAULT_KINDS",
    "Emulator",
    "EmulatorConfig",
    "Fault",
    "Outcome",
    "ProgressShape",
    "Route",
    "Script",
    "Stats",
    "TaskRecord",
    "When",
    "build_parser",
    "config_from_args",
    "main",
    "sample_video",
]
