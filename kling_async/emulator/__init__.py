"""A local emulator of the Kling v3 video API: tests, benchmarks and demos run on it.

It speaks the API of ``API.md``: submit (with ``Idempotency-Key`` and the
``X-APIMart-Response-Version: 2026-07-27`` object shape) for kling-v3 (4k, multi-shot),
kling-v3-omni and kling-3.0-turbo, each body checked as its model documents (see
``_validation``; ``unknown_fields`` accepts or refuses fields a model does not have),
status with pending →
processing → final state, progress, ``estimated_time``, image uploads
(``POST /v1/uploads/images``), and signed, expiring URLs on a second "storage" origin
serving a real MP4 and the uploaded images. It is usable in-process or as a command
(``python -m kling_async.emulator --help``)::

    async with Emulator(EmulatorConfig(time_scale=200)) as emu:
        ...  # point a client at emu.url

**The world's variability.** A task's life is created → queue ("pending") → run
("processing") → end, its fate drawn at creation and its state a pure function of the
wall clock (no timer per task). The queue is ``queue_time`` plus ``queue_spread`` x the
estimate at most, plus now and then a long one (``long_queue_rate``,
``long_queue_factor``); ``max_concurrent`` holds tasks pending until a processing slot is
free. The run is the estimate times a lognormal or uniform ratio (``run_distribution``,
``spread``, ``bias``). Progress is ``linear``, ``steps``, ``stuck`` or ``eased``.

**The server's clock.** Times are reported in real seconds, so a client needs no
knowledge of the time scale, but like a real server's they are whole seconds of the
*emulated* clock (at ``time_scale=20``, multiples of 0.05) and the clock may be off by
``clock_offset`` emulated seconds, in every body and in the ``Date`` header.
:class:`TaskRecord` (``emu.task_record(id)``) keeps the truth on the real clock beside the
reported values.

**The realistic preset.** ``EmulatorConfig.realistic(**overrides)`` (``--preset
realistic``) sets queue_spread 0.3, long_queue_rate 0.05, a uniform run time of 0.5-1.5x
the estimate, a server clock 3 emulated seconds ahead and linear progress. Tests use
``kling_async.testing.realistic_config()``, the same at the fast test time scale.

**Test knobs.** Failure prompts and scripted fates (:class:`Script`); scripted and
random faults (:class:`Fault`: 429 with any ``Retry-After``, 5xx, resets, hangs, slow or
truncated answers, HTML pages, and hostile bodies: garbled, about the wrong task, or
echoing the API key); a rate limit; the shape of error bodies (``error_style``); and
counters readable in-process (``emu.stats``) or over HTTP (``GET /_stats``). With
``quirks=True`` responses vary like real gateways: a result ``url`` as a string instead
of a list, numbers as strings, unknown extra fields, uploads answered under ``data``.
"""

from ._command import build_parser, config_from_args, main
from ._config import (
    DEFAULT_FAULT_KINDS,
    FAULT_KINDS,
    EmulatorConfig,
    ErrorStyle,
    Fault,
    FaultKind,
    Outcome,
    ProgressShape,
    Route,
    RunDistribution,
    UnknownFields,
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
    "ErrorStyle",
    "Fault",
    "FaultKind",
    "Outcome",
    "ProgressShape",
    "Route",
    "RunDistribution",
    "Script",
    "Stats",
    "TaskRecord",
    "UnknownFields",
    "When",
    "build_parser",
    "config_from_args",
    "main",
    "sample_video",
]
