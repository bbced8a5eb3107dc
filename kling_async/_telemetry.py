"""Metrics and traces through the OpenTelemetry API (the optional ``[otel]`` extra).

One meter and one tracer, both named ``kling_async``. Without ``opentelemetry-api``
installed, every hook lands on one shared silent object; with it but no SDK configured,
the API's own no-op instruments take the calls. Either way a session costs nothing
measurable. Configure an SDK (a ``MeterProvider``, a ``TracerProvider``) before or after
opening sessions: the API's proxies pick it up.

Metrics (names and units in the semantic conventions' style):

=================================  ===============  ====================================
``kling.submits``                  counter          by ``kling.outcome``: created,
                                   ``{submit}``     replayed, refused, uncertain,
                                                    not_sent, cancelled
``kling.status_requests``          counter          by ``kling.outcome``: ok, 429, 5xx,
                                   ``{request}``    network, unreadable, refused
``kling.downloads``                counter          by ``kling.outcome``: ok, error
``kling.download.size``            counter ``By``   bytes saved
``kling.tasks.active``             up-down counter  tasks the session waits on
``kling.waiters.active``           up-down counter  awaits, update streams and fetches
``kling.poll.rate``                gauge            status requests per second allowed now
``kling.poll.pause``               gauge ``s``      seconds left of a 429 pause
``kling.poll.shared``              gauge            1 while checks are shared (Redis)
``kling.task.duration``            histogram ``s``  submit (or re-attach) to the end
``kling.task.queue.duration``      histogram ``s``  submit to the start, where observed
``kling.task.detection.gap``       histogram ``s``  last "not done" answer to the "done"
                                                    one: what noticing a finish costs
``kling.task.status_requests``     histogram        status requests one finished task took
=================================  ===============  ====================================

Spans: ``kling.submit`` (each retry an event; the idempotency key is never recorded, only
whether the server replayed), ``kling.task`` from submit or re-attach to the end (each
status change an event) and ``kling.download``. Attributes name the model, mode, duration
and task id; never the API key, never a URL's path or query (only the storage host).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit

from ._exceptions import (
    APIError,
    InvalidResponseError,
    RateLimitError,
    ServerError,
    TransportError,
)

__all__ = [
    "DownloadTrace",
    "PollerGauges",
    "SubmitTrace",
    "TaskTrace",
    "Telemetry",
    "request_attributes",
    "status_outcome",
    "telemetry",
]

NAME = "kling_async"

Attributes = Mapping[str, str | bool | int | float]


class PollerGauges(Protocol):
    """What the gauges read from a live session's poller."""

    def gauges(self) -> tuple[float, float, bool]:
        """The rate allowed now, the seconds of 429 pause left, whether checks are shared."""


def request_attributes(request: Any) -> dict[str, str | int]:
    """The span and metric attributes of a request: model, mode and duration, when set."""
    attributes: dict[str, str | int] = {}
    for name in ("model", "mode", "duration"):
        value = getattr(request, name, None)
        if isinstance(value, str | int) and not isinstance(value, bool):
            attributes[f"kling.{name}"] = value
    return attributes


def status_outcome(outcome: object) -> str:
    """How a status request ended, for ``kling.status_requests``: ok, 429, 5xx, network,
    unreadable or refused."""
    if isinstance(outcome, RateLimitError):
        return "429"
    if isinstance(outcome, ServerError) or (
        isinstance(outcome, APIError) and outcome.status == 408
    ):
        return "5xx"
    if isinstance(outcome, InvalidResponseError):
        return "unreadable"
    if isinstance(outcome, TransportError):
        return "network"
    if isinstance(outcome, BaseException):
        return "refused"
    return "ok"


def _wall_ns(monotonic: float | None) -> int | None:
    """A ``time.monotonic()`` instant as epoch nanoseconds (what spans are stamped in)."""
    if monotonic is None:
        return None
    return time.time_ns() - int((time.monotonic() - monotonic) * 1e9)


class SubmitTrace:
    """One submit: its span and its outcome."""

    __slots__ = ("_span", "_telemetry")

    def __init__(self, telemetry: Telemetry, span: Any) -> None:
        self._telemetry = telemetry
        self._span = span

    def active(self) -> contextlib.AbstractContextManager[Any]:
        """A block in which the submit's span is the current span (so the spans of HTTP
        instrumentation, and of uploads, nest under it)."""
        if self._span is None:
            return contextlib.nullcontext()
        from opentelemetry.trace import use_span

        # Our own error handling names the error type; an exception event would carry its
        # message, and SubmissionUncertainError names the idempotency key.
        return use_span(
            self._span, end_on_exit=False, record_exception=False, set_status_on_exception=False
        )

    def attempt_failed(self, attempt: int, error: BaseException) -> None:
        """Attempt number ``attempt`` failed with ``error`` (retried, or the last one)."""
        if self._span is not None:
            attributes = {"kling.attempt": attempt, "error.type": type(error).__name__}
            self._span.add_event("kling.submit.attempt_failed", attributes)

    def finished(
        self,
        outcome: str,
        *,
        task_id: str | None = None,
        replayed: bool = False,
        error: BaseException | None = None,
    ) -> None:
        """The submit ended: ``outcome`` is created, replayed, refused or uncertain."""
        self._telemetry.count_submit(outcome)
        span = self._span
        if span is None:
            return
        span.set_attribute("kling.outcome", outcome)
        span.set_attribute("kling.replayed", replayed)
        if task_id is not None:
            span.set_attribute("kling.task.id", task_id)
        if error is not None:
            self._telemetry.mark_error(span, error)
        span.end()


class TaskTrace:
    """One task the session waits on, from its submit (or re-attach) to its end."""

    __slots__ = (
        "_attributes",
        "_last_running",
        "_last_status",
        "_pending_at",
        "_queue_seen",
        "_requests",
        "_span",
        "_started",
        "_telemetry",
    )

    def __init__(
        self,
        telemetry: Telemetry,
        span: Any,
        attributes: Attributes,
        started: float,
        submitted: bool,
    ) -> None:
        self._telemetry = telemetry
        self._span = span
        self._attributes = attributes
        self._started = started
        self._requests = 0
        self._last_status = ""
        self._last_running: float | None = None
        self._pending_at: float | None = started if submitted else None
        self._queue_seen = False

    def answer(self, status: str, progress: int, received: float, *, own: bool) -> None:
        """An answer about the task (from this session's own request, or shared)."""
        if own:
            self._requests += 1
        if status != self._last_status:
            self._last_status = status
            if self._span is not None:
                event = {"kling.status": status, "kling.progress": progress}
                self._span.add_event("kling.task.status", event)
        if status == "pending":
            self._pending_at = received
        elif status == "processing" and not self._queue_seen and self._pending_at is not None:
            self._queue_seen = True
            start = (self._pending_at + received) / 2  # started between the two answers
            self._telemetry.queue_duration.record(start - self._started, self._attributes)
        if status not in ("completed", "failed", "cancelled"):
            self._last_running = received

    def ended(self, outcome: str, now: float, error: BaseException | None = None) -> None:
        """The task ended (completed, failed, cancelled), or the session stopped waiting on
        it (released, error)."""
        telemetry = self._telemetry
        telemetry.tasks_active.add(-1)
        attributes = {**self._attributes, "kling.outcome": outcome}
        if outcome in ("completed", "failed", "cancelled"):
            telemetry.task_duration.record(now - self._started, attributes)
            telemetry.task_requests.record(self._requests, attributes)
            if self._last_running is not None:
                telemetry.detection_gap.record(now - self._last_running, attributes)
        span = self._span
        if span is None:
            return
        span.set_attribute("kling.outcome", outcome)
        span.set_attribute("kling.status_requests", self._requests)
        if error is not None:
            telemetry.mark_error(span, error)
        span.end()


class DownloadTrace:
    """One download of a result video."""

    __slots__ = ("_span", "_telemetry")

    def __init__(self, telemetry: Telemetry, span: Any) -> None:
        self._telemetry = telemetry
        self._span = span

    def finished(self, size: int | None, error: BaseException | None = None) -> None:
        """The download ended: ``size`` bytes saved, or ``error``."""
        telemetry = self._telemetry
        telemetry.downloads.add(1, {"kling.outcome": "ok" if error is None else "error"})
        if size:
            telemetry.download_size.add(size)
        span = self._span
        if span is None:
            return
        if size is not None:
            span.set_attribute("kling.download.size", size)
        if error is not None:
            telemetry.mark_error(span, error)
        span.end()


class _NullTask(TaskTrace):
    """The trace of every task while nothing records (no OpenTelemetry API installed)."""

    __slots__ = ()

    def __init__(self) -> None:  # one shared instance: no state, no allocation per task
        pass

    def answer(self, status: str, progress: int, received: float, *, own: bool) -> None:
        pass

    def ended(self, outcome: str, now: float, error: BaseException | None = None) -> None:
        pass


_NULL_TASK = _NullTask()


class _Silent:
    """An instrument that records nothing (no OpenTelemetry API installed)."""

    __slots__ = ()

    def add(self, amount: float, attributes: Attributes | None = None) -> None:
        pass

    def record(self, amount: float, attributes: Attributes | None = None) -> None:
        pass


_SILENT = _Silent()


class Telemetry:
    """The SDK's instruments; :func:`telemetry` returns the one of this process."""

    def __init__(self, meter: Any = None, tracer: Any = None) -> None:
        self._tracer = tracer
        self._gauged: list[Callable[[], PollerGauges | None]] = []
        self.enabled = meter is not None
        if meter is None:
            self.submits = self.status_requests = self.downloads = _SILENT
            self.download_size = self.tasks_active = self.waiters_active = _SILENT
            self.task_duration = self.queue_duration = _SILENT
            self.detection_gap = self.task_requests = _SILENT
            return
        counter, updown, histogram = (
            meter.create_counter,
            meter.create_up_down_counter,
            meter.create_histogram,
        )
        self.submits = counter("kling.submits", "{submit}", "Submits, by outcome")
        self.status_requests = counter(
            "kling.status_requests", "{request}", "Status requests sent, by outcome"
        )
        self.downloads = counter("kling.downloads", "{download}", "Downloads, by outcome")
        self.download_size = counter("kling.download.size", "By", "Bytes of video saved")
        self.tasks_active = updown("kling.tasks.active", "{task}", "Tasks waited on")
        self.waiters_active = updown(
            "kling.waiters.active", "{waiter}", "Awaits, update streams and status fetches"
        )
        seconds = (1, 2, 5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1200, 3600)
        self.task_duration = histogram(
            "kling.task.duration",
            "s",
            "Time from submit (or re-attach) to the task's end",
            explicit_bucket_boundaries_advisory=seconds,
        )
        self.queue_duration = histogram(
            "kling.task.queue.duration",
            "s",
            "Time from submit to the start of processing, where observed",
            explicit_bucket_boundaries_advisory=seconds,
        )
        self.detection_gap = histogram(
            "kling.task.detection.gap",
            "s",
            'Time from the last "not done" answer to the one that said done',
            explicit_bucket_boundaries_advisory=(0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60),
        )
        self.task_requests = histogram(
            "kling.task.status_requests",
            "{request}",
            "Status requests a finished task took",
            explicit_bucket_boundaries_advisory=(1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 50, 100),
        )
        gauge = meter.create_observable_gauge
        gauge("kling.poll.rate", [self._rate], "{request}/s", "Status requests per second allowed")
        gauge("kling.poll.pause", [self._pause], "s", "Seconds left of a 429 pause")
        gauge("kling.poll.shared", [self._shared], "1", "1 while checks are shared through Redis")

    # -- hooks ---------------------------------------------------------------------------

    def submit(self, request: Any) -> SubmitTrace:
        """Start tracing one submit of ``request``."""
        span = None
        if self._tracer is not None:
            span = self._tracer.start_span(
                "kling.submit", kind=_client_kind(), attributes=request_attributes(request)
            )
        return SubmitTrace(self, span)

    def count_submit(self, outcome: str) -> None:
        self.submits.add(1, {"kling.outcome": outcome})

    def status_request(self, outcome: object) -> None:
        """One status request ended with ``outcome`` (a snapshot, or the error it raised)."""
        self.status_requests.add(1, {"kling.outcome": status_outcome(outcome)})

    def task(self, task_id: str, request: Any, started: float, *, submitted: bool) -> TaskTrace:
        """Start tracing a task the session now waits on (``started``: its submit time, or
        now for a re-attached task; monotonic seconds)."""
        if not self.enabled:
            return _NULL_TASK
        self.tasks_active.add(1)
        attributes: dict[str, str | int] = request_attributes(request)
        span = None
        if self._tracer is not None:
            span = self._tracer.start_span(
                "kling.task",
                attributes={
                    **attributes,
                    "kling.task.id": task_id,
                    "kling.reattached": not submitted,
                },
                start_time=_wall_ns(started),
            )
        return TaskTrace(self, span, attributes, started, submitted)

    def waiters(self, delta: int) -> None:
        """``delta`` waiters started (> 0) or stopped (< 0) waiting."""
        self.waiters_active.add(delta)

    def download(self, task_id: str, url: str) -> DownloadTrace:
        """Start tracing the download of ``task_id``'s video from ``url`` (only its host
        is recorded: a signed URL's path and query are secrets)."""
        span = None
        if self._tracer is not None:
            host = urlsplit(url).hostname or ""
            span = self._tracer.start_span(
                "kling.download",
                kind=_client_kind(),
                attributes={"kling.task.id": task_id, "server.address": host},
            )
        return DownloadTrace(self, span)

    def gauge(self, source: Callable[[], PollerGauges | None]) -> None:
        """Read the poll gauges from ``source`` (a weak reference to a poller) while it lives."""
        if self.enabled:
            self._gauged.append(source)

    # -- internals -----------------------------------------------------------------------

    def mark_error(self, span: Any, error: BaseException) -> None:
        from opentelemetry.trace import Status, StatusCode

        span.set_attribute("error.type", type(error).__name__)
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))

    def _live(self) -> Iterable[PollerGauges]:
        alive = []
        for source in self._gauged:
            poller = source()
            if poller is not None:
                alive.append(source)
                yield poller
        self._gauged[:] = alive

    def _rate(self, _options: Any) -> Iterable[Any]:
        yield _observation(sum(p.gauges()[0] for p in self._live()))

    def _pause(self, _options: Any) -> Iterable[Any]:
        yield _observation(max((p.gauges()[1] for p in self._live()), default=0.0))

    def _shared(self, _options: Any) -> Iterable[Any]:
        yield _observation(int(any(p.gauges()[2] for p in self._live())))


def _observation(value: float) -> Any:
    from opentelemetry.metrics import Observation

    return Observation(value)


def _client_kind() -> Any:
    from opentelemetry.trace import SpanKind

    return SpanKind.CLIENT


def _build() -> Telemetry:
    try:
        from opentelemetry import metrics, trace
    except ImportError:
        return Telemetry()
    from . import __version__

    return Telemetry(metrics.get_meter(NAME, __version__), trace.get_tracer(NAME, __version__))


_TELEMETRY: Telemetry | None = None


def telemetry() -> Telemetry:
    """This process's instruments (built on first use)."""
    global _TELEMETRY
    if _TELEMETRY is None:
        _TELEMETRY = _build()
    return _TELEMETRY
