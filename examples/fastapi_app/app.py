"""A FastAPI service on kling_async: submit on one request, answer "is it done?" on others.

One :class:`KlingSession` lives as long as the app (opened and closed by the lifespan) and
reaches handlers as a dependency. Every handler re-attaches to a task by id, so any worker
can answer for any task, also after a restart. SDK errors become HTTP answers in one
exception handler (:func:`http_error`).

    POST /videos                   submit; 202 with the task id at once
    GET  /videos/{id}              status and progress now
    GET  /videos/{id}/events       server-sent events with each change, until the task ends
    GET  /videos/{id}/result       wait up to ?timeout= s: 200 with the URL, 202 if still running
    GET  /                         a page to try it in a browser (static/: plain HTML, CSS, JS)
    GET  /metrics                  the SDK's metrics for Prometheus (with requirements.txt)

Run it: ``uvicorn app:app`` in this directory with ``APIMART_API_KEY`` (and, for the
emulator, ``APIMART_BASE_URL``) set; see README.md.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, cast

from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict

from kling_async import (
    AuthenticationError,
    BadRequestError,
    InsufficientCreditsError,
    KlingError,
    KlingSession,
    RateLimitError,
    RequestTimeoutError,
    RetryPolicy,
    SessionClosedError,
    SubmissionUncertainError,
    Task,
    TaskCancelledError,
    TaskFailedError,
    TaskNotFoundError,
    TaskSnapshot,
    TaskTimeoutError,
    VideoRequest,
)
from kling_async import RequestValidationError as KlingValidationError

logger = logging.getLogger("kling_service")

MAX_WAIT = 300.0  # longest ?timeout= a client may ask /result to wait, in seconds
STILL_RUNNING_RETRY_AFTER = "5"  # seconds a 202 from /result suggests before asking again
PAGE_DIR = Path(__file__).resolve().parent / "static"  # the page GET / serves, and its files

#: A request handler should not sit out a long Retry-After: a 429 asking for more than 5 s
#: goes straight back to the client (as a 429 with that Retry-After) instead.
SERVICE_RETRY = RetryPolicy(max_attempts=3, max_retry_after=5.0)


def service_session() -> KlingSession:
    """The app's session: key and URL from ``APIMART_API_KEY`` / ``APIMART_BASE_URL``."""
    return KlingSession(retry=SERVICE_RETRY, request_timeout=15.0)


# -- request and response bodies ---------------------------------------------------------


class ShotIn(BaseModel):
    """One shot of a multi-shot video: its prompt and whole seconds (``index`` optional)."""

    model_config = ConfigDict(extra="forbid")

    prompt: str
    duration: int
    index: int | None = None


class VideoIn(BaseModel):
    """The body of ``POST /videos``: the SDK's request fields (the SDK checks the rules).

    Without ``image_urls`` it is text-to-video; with them, image-to-video. ``multi_prompt``
    makes a multi-shot video whose shots replace ``prompt`` (its ``duration``, left out,
    is their total). Fields left out take the SDK's defaults.
    """

    model_config = ConfigDict(extra="forbid")

    prompt: str | None = None
    model: str = "kling-v3"
    mode: str | None = None
    duration: int | None = None
    aspect_ratio: str | None = None
    negative_prompt: str | None = None
    watermark: bool | None = None
    audio: bool | None = None
    image_urls: list[str] | None = None
    last_frame_image: str | None = None
    shot_type: str | None = None
    multi_prompt: list[ShotIn] | None = None

    def to_request(self) -> VideoRequest:
        """The SDK request; raises the SDK's RequestValidationError on a broken rule."""
        return VideoRequest.from_fields(self.model_dump(exclude_none=True))


class SubmittedOut(BaseModel):
    """The answer to a submit: the task id and where to follow it."""

    id: str
    status_url: str
    events_url: str
    result_url: str


class ErrorOut(BaseModel):
    """The server's explanation of a failed task."""

    code: str | None = None
    message: str | None = None


class TaskOut(BaseModel):
    """A task's status as the API last reported it."""

    id: str
    status: str
    progress: int
    estimated_time: float | None = None
    video_urls: list[str] = []
    error: ErrorOut | None = None

    @classmethod
    def of(cls, snapshot: TaskSnapshot) -> TaskOut:
        """The body for one SDK snapshot."""
        error = snapshot.error
        return cls(
            id=snapshot.id,
            status=snapshot.status.value,
            progress=snapshot.progress,
            estimated_time=snapshot.estimated_time,
            video_urls=[video.url for video in snapshot.videos],
            error=ErrorOut(code=error.code, message=error.message) if error else None,
        )


class ResultOut(BaseModel):
    """A finished task: ``url`` is the first video (temporary: download it promptly)."""

    id: str
    url: str
    video_urls: list[str]


# -- errors: one mapping from SDK errors to HTTP answers ---------------------------------


def _validation_detail(exc: KlingValidationError) -> list[dict[str, Any]]:
    """The SDK's validation error in FastAPI's own 422 shape, so clients parse one format."""
    where = "path" if exc.field == "task_id" else "body"
    try:
        shown = jsonable_encoder(exc.value)
    except (TypeError, ValueError):
        shown = repr(exc.value)
    return [{"type": "value_error", "loc": [where, exc.field], "msg": exc.rule, "input": shown}]


def _problem(
    status: int, error: str, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> tuple[int, dict[str, Any], dict[str, str]]:
    return status, {"error": error, "message": message, **extra}, headers or {}


def http_error(exc: KlingError) -> tuple[int, dict[str, Any], dict[str, str]]:
    """The HTTP status, JSON body and headers that stand for an SDK error."""
    match exc:
        case KlingValidationError():
            return 422, {"detail": _validation_detail(exc)}, {}
        case TaskFailedError():
            message = exc.message or "the generation failed"
            return _problem(422, "task_failed", message, task_id=exc.task_id, code=exc.code)
        case TaskCancelledError():
            message = "the task was cancelled; it has no result"
            return _problem(410, "task_cancelled", message, task_id=exc.task_id)
        case TaskNotFoundError():
            return _problem(404, "task_not_found", "no such task")
        case RateLimitError():
            wait = exc.retry_after if exc.retry_after is not None else 1.0
            retry_after = {"Retry-After": str(max(1, math.ceil(wait)))}
            message = "the video API is rate limiting us; retry later"
            return _problem(429, "rate_limited", message, retry_after)
        case BadRequestError():
            return _problem(422, "rejected_by_api", exc.message)
        case AuthenticationError():
            logger.error("the video API refused our credentials: %s", exc)
            return _problem(502, "upstream_auth", "the video service is misconfigured")
        case InsufficientCreditsError():
            logger.error("the video API account is out of credit: %s", exc)
            message = "the video service cannot take new jobs now"
            return _problem(503, "upstream_out_of_credit", message)
        case SubmissionUncertainError():
            logger.warning("submission uncertain: %s", exc)
            message = (
                "the video API did not confirm the submission; it may have been accepted, "
                "so check before submitting again"
            )
            return _problem(502, "submission_uncertain", message)
        case RequestTimeoutError():
            return _problem(504, "upstream_timeout", "the video API did not answer in time")
        case SessionClosedError():
            return _problem(503, "shutting_down", "the service is restarting")
        case _:
            logger.warning("video API error: %r", exc)
            return _problem(502, "upstream_error", str(exc))


async def kling_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    """The one exception handler: every SDK error leaves as its mapped HTTP answer."""
    status, body, headers = http_error(cast(KlingError, exc))
    return JSONResponse(body, status_code=status, headers=headers)


# -- the session as a dependency ---------------------------------------------------------


def get_session(request: Request) -> KlingSession:
    """The app's one session (opened by the lifespan)."""
    return cast(KlingSession, request.app.state.kling)


Session = Annotated[KlingSession, Depends(get_session)]


async def attach(session: KlingSession, task_id: str) -> Task:
    """Re-attach to ``task_id`` and fetch its status (404, 422, 429... map as usual)."""
    task = session.task(task_id)
    await task.refresh()
    return task


# -- server-sent events ------------------------------------------------------------------


def _sse(event: str, payload: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n"


def _snapshot_event(snapshot: TaskSnapshot) -> str:
    kind = "done" if snapshot.status.is_terminal else "progress"
    return _sse(kind, TaskOut.of(snapshot).model_dump(mode="json"))


async def progress_events(task: Task, heartbeat: float) -> AsyncIterator[str]:
    """``progress`` events on each change, then one ``done`` (or ``error``) event.

    Starts with the status ``task`` already holds; a comment line every ``heartbeat``
    seconds of silence keeps proxies from closing an idle stream.
    """
    snapshot = task.snapshot
    assert snapshot is not None  # attach() refreshed it
    yield _snapshot_event(snapshot)
    if snapshot.status.is_terminal:
        return
    last = (snapshot.status, snapshot.progress)
    # Task.updates() is an async generator (typed as an AsyncIterator): close it explicitly.
    updates = cast(AsyncGenerator[TaskSnapshot, None], task.updates())
    pending: asyncio.Future[TaskSnapshot] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(updates))
            done, _ = await asyncio.wait({pending}, timeout=heartbeat)
            if not done:
                yield ": keep-alive\n\n"
                continue
            finished, pending = pending, None
            try:
                snapshot = finished.result()
            except StopAsyncIteration:
                return
            except KlingError as exc:
                status, body, _headers = http_error(exc)
                yield _sse("error", {"status": status, **body})
                return
            if (snapshot.status, snapshot.progress) != last or snapshot.status.is_terminal:
                last = (snapshot.status, snapshot.progress)
                yield _snapshot_event(snapshot)
            if snapshot.status.is_terminal:
                return
    finally:
        if pending is not None and not pending.done():
            pending.cancel()  # unwinds updates() in its own task, releasing the poller
        else:
            if pending is not None and not pending.cancelled():
                pending.exception()  # finished as we were closed: mark its outcome seen
            await updates.aclose()


# -- metrics -----------------------------------------------------------------------------

_METERS: Any = None  # this process's MeterProvider, once set


def prometheus_metrics() -> Callable[[], Response] | None:
    """A ``GET /metrics`` handler: the SDK's OpenTelemetry metrics (``kling_submits_total``,
    ``kling_status_requests_total``, ``kling_tasks_active``, ...) in Prometheus's text
    format; None if the OpenTelemetry SDK and its Prometheus exporter are not installed.

    The provider is set once per process (the OpenTelemetry API takes only one); these
    are the few lines README.md shows.
    """
    global _METERS
    try:
        from opentelemetry import metrics
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from opentelemetry.sdk.metrics import MeterProvider
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
    except ImportError:
        return None
    if _METERS is None:
        _METERS = MeterProvider(metric_readers=[PrometheusMetricReader()])
        metrics.set_meter_provider(_METERS)

    def scrape() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return scrape


# -- the app -----------------------------------------------------------------------------


def create_app(
    session_factory: Callable[[], KlingSession] = service_session, *, heartbeat: float = 15.0
) -> FastAPI:
    """The service; ``session_factory`` makes its one session (default: from the environment)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with session_factory() as session:
            app.state.kling = session
            yield

    app = FastAPI(title="Video generation service", lifespan=lifespan)
    app.add_exception_handler(KlingError, kling_error_handler)

    @app.post("/videos", status_code=202, response_model=SubmittedOut)
    async def submit_video(body: VideoIn, session: Session, response: Response) -> SubmittedOut:
        """Submit a generation (paid) and answer at once with its id."""
        task = await session.submit(body.to_request())
        base = f"/videos/{task.id}"
        response.headers["Location"] = base
        return SubmittedOut(
            id=task.id, status_url=base, events_url=f"{base}/events", result_url=f"{base}/result"
        )

    @app.get("/videos/{task_id}", response_model=TaskOut)
    async def video_status(task_id: str, session: Session) -> TaskOut:
        """The task's status and progress, fetched now."""
        task = await attach(session, task_id)
        assert task.snapshot is not None
        return TaskOut.of(task.snapshot)

    @app.get("/videos/{task_id}/events", response_class=StreamingResponse)
    async def video_events(task_id: str, session: Session) -> StreamingResponse:
        """Server-sent events: the status now, each change, and the final state."""
        task = await attach(session, task_id)  # errors become HTTP answers before streaming
        return StreamingResponse(
            progress_events(task, heartbeat),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.get(
        "/videos/{task_id}/result",
        response_model=ResultOut,
        responses={202: {"model": TaskOut, "description": "Still running"}},
    )
    async def video_result(
        task_id: str,
        session: Session,
        timeout: Annotated[float, Query(ge=0, le=MAX_WAIT)] = 30.0,
    ) -> ResultOut | JSONResponse:
        """Wait up to ``timeout`` s: 200 with the URL, 202 with the status if still running."""
        task = await attach(session, task_id)
        try:
            result = await task.wait(timeout)
        except TaskTimeoutError:
            assert task.snapshot is not None
            return JSONResponse(
                TaskOut.of(task.snapshot).model_dump(mode="json"),
                status_code=202,
                headers={"Retry-After": STILL_RUNNING_RETRY_AFTER},
            )
        urls = [video.url for video in result.videos]
        return ResultOut(id=result.task_id, url=result.url, video_urls=urls)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        """The page: a form to submit, and a card per task following its events."""
        return FileResponse(PAGE_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=PAGE_DIR), name="static")
    scrape = prometheus_metrics()
    if scrape is not None:
        app.add_api_route("/metrics", scrape, methods=["GET"], include_in_schema=False)

    return app


app = create_app()
