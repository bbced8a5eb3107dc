"""The one cattrs converter between Python objects and the API's JSON.

Every hook lives in :func:`configure_converter`. Structuring is tolerant the way API.md
asks: numbers may come as strings, timestamps may be in milliseconds, ``url`` may be a
string or a list, unknown statuses become ``UNKNOWN``, unknown fields are kept, read-only,
in ``TaskSnapshot.extras``, and an optional field that cannot be read is treated as absent
(logged once per task at DEBUG). Unstructuring a request omits every optional field left
unset.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import cattrs
from cattrs.gen import make_dict_unstructure_fn, override

from ._exceptions import InvalidResponseError
from ._models import (
    ErrorInfo,
    GenericRequest,
    ImageToVideo,
    KlingV3Request,
    Shot,
    TaskSnapshot,
    TaskStatus,
    TextToVideo,
    Video,
    VideoRequest,
    check_task_id,
    thawed_json,
)

__all__ = [
    "configure_converter",
    "converter",
    "parse_snapshot",
    "parse_submission",
    "parse_upload",
    "request_body",
]

logger = logging.getLogger("kling_async")

_MS_THRESHOLD = 100_000_000_000  # a seconds timestamp passes this in the year 5138


def _number(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"expected a finite number, got {value!r}")
    return number


def _optional_number(value: Any, _: Any) -> float | None:
    if value is None or value == "":
        return None
    return _number(value)


def _timestamp(value: Any, _: Any) -> float | None:
    number = _optional_number(value, None)
    if number is not None and number > _MS_THRESHOLD:
        number /= 1000.0
    return number


def _progress(value: Any, _: Any) -> int:
    if value is None or value == "":
        return 0
    return min(100, max(0, round(_number(value))))


def _text(value: Any, _: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str | int | float):
        return str(value)
    raise ValueError(f"expected text, got {type(value).__name__}")


def _first_url(value: Any) -> str:
    url = value[0] if isinstance(value, list) and value else value
    if not isinstance(url, str) or not url:
        raise ValueError("video url is neither a string nor a list of strings")
    return url


def _lenient(read: Any, value: Any) -> Any:
    """``read(value)``, or None if the value cannot be read that way."""
    try:
        return read(value, None)
    except (ValueError, TypeError, OverflowError):
        return None


def _videos(conv: cattrs.Converter, result: Any, *, required: bool) -> tuple[Video, ...] | None:
    """The videos of a status's ``result``; None if it cannot be read. A completed task's
    must all be readable (and at least one there); any other task's are read if they can be."""
    entries = result.get("videos") if isinstance(result, Mapping) else None
    if entries is None and not required:
        return ()
    try:
        if not isinstance(entries, list) or (required and not entries):
            raise ValueError("no list of videos")
        return tuple(conv.structure(entry, Video) for entry in entries)
    except (ValueError, TypeError, OverflowError, AttributeError):
        if required:
            raise ValueError("a completed task's videos cannot be read") from None
        return None


_DROPPED_REPORTED: OrderedDict[str, None] = OrderedDict()
_DROPPED_MEMORY = 4096


def _note_dropped(task_id: str, fields: list[str]) -> None:
    """Log (DEBUG, once per task) the optional fields of a status that could not be read."""
    if task_id in _DROPPED_REPORTED:
        return
    _DROPPED_REPORTED[task_id] = None
    if len(_DROPPED_REPORTED) > _DROPPED_MEMORY:
        _DROPPED_REPORTED.popitem(last=False)
    logger.debug(
        "status of %s: unreadable %s treated as unknown",
        task_id,
        ", ".join(fields),
        extra={"task_id": task_id, "fields": fields},
    )


def configure_converter(conv: cattrs.Converter) -> None:
    """Register every hook the SDK needs on ``conv``."""
    conv.register_structure_hook(TaskStatus, lambda v, _: TaskStatus(str(v)))

    def structure_video(data: Any, _: Any) -> Video:
        if not isinstance(data, Mapping):
            raise ValueError("a video is not an object")
        expires_at = _lenient(_timestamp, data.get("expires_at"))  # optional: a hint
        return Video(url=_first_url(data.get("url")), expires_at=expires_at)

    def structure_error_info(data: Any, _: Any) -> ErrorInfo:
        if not isinstance(data, Mapping):
            return ErrorInfo(message=_lenient(_text, data))
        message = data.get("message") or data.get("msg")
        return ErrorInfo(code=_lenient(_text, data.get("code")), message=_lenient(_text, message))

    conv.register_structure_hook(Video, structure_video)
    conv.register_structure_hook(ErrorInfo, structure_error_info)

    def structure_error(value: Any, _: Any) -> ErrorInfo | None:
        return None if value is None else conv.structure(value, ErrorInfo)

    # The optional fields of a status answer and how each is read. One the SDK cannot read
    # is treated as absent: only ``id``, ``status`` and a completed task's videos must be
    # readable, so a cosmetic glitch never turns a finished video into an error.
    optional: dict[str, Any] = {
        "progress": _progress,
        "created": _timestamp,
        "completed": _timestamp,
        "estimated_time": _optional_number,
        "actual_time": _optional_number,
        "cost": _optional_number,
        "credits_cost": _optional_number,
        "error": structure_error,
    }
    modelled = frozenset({*optional, "id", "task_id", "status", "result"})

    def structure_snapshot(data: Any, _: Any) -> TaskSnapshot:
        if not isinstance(data, Mapping):
            raise ValueError("task data is not an object")
        task_id = check_task_id(data.get("id") or data.get("task_id"))
        status = conv.structure(data.get("status"), TaskStatus)
        fields: dict[str, Any] = {}
        dropped: list[str] = []
        for name, read in optional.items():
            raw = data.get(name)
            value = _lenient(read, raw)
            if value is not None:
                fields[name] = value
            elif raw is not None and raw != "":
                dropped.append(name)
        videos = _videos(conv, data.get("result"), required=status == TaskStatus.COMPLETED)
        if videos is None:
            dropped.append("result")
        extras = {key: value for key, value in data.items() if key not in modelled}
        if dropped:
            _note_dropped(task_id, dropped)
        return TaskSnapshot(id=task_id, status=status, videos=videos or (), extras=extras, **fields)

    conv.register_structure_hook(TaskSnapshot, structure_snapshot)

    def unstructure_snapshot(snapshot: TaskSnapshot) -> dict[str, Any]:
        """A snapshot in the status route's own shape, so the one parser reads it back."""
        data: dict[str, Any] = thawed_json(snapshot.extras)
        data.update(
            id=snapshot.id,
            status=snapshot.status.value,
            progress=snapshot.progress,
            created=snapshot.created,
            completed=snapshot.completed,
            estimated_time=snapshot.estimated_time,
            actual_time=snapshot.actual_time,
            cost=snapshot.cost,
            credits_cost=snapshot.credits_cost,
        )
        if snapshot.videos:
            videos = [{"url": v.url, "expires_at": v.expires_at} for v in snapshot.videos]
            data["result"] = {"videos": videos}
        if snapshot.error is not None:
            data["error"] = {"code": snapshot.error.code, "message": snapshot.error.message}
        return data

    conv.register_unstructure_hook(TaskSnapshot, unstructure_snapshot)

    for cls in (TextToVideo, ImageToVideo):
        conv.register_unstructure_hook(cls, _typed_body(cls, conv))
    conv.register_unstructure_hook(GenericRequest, _generic_body)


def _typed_body(cls: type[KlingV3Request], conv: cattrs.Converter) -> Any:
    """A typed request's body: every field but those left unset (None, no shots), the
    shots numbered from 1 in order, then the extra fields."""
    overrides: dict[str, Any] = {
        "extra_fields": override(omit=True),
        "multi_prompt": override(unstruct_hook=lambda shots: _numbered(conv, shots)),
    }
    if cls is ImageToVideo:
        overrides["image_urls"] = override(unstruct_hook=list)
    unstructure = make_dict_unstructure_fn(cls, conv, **overrides)

    def hook(request: KlingV3Request) -> dict[str, Any]:
        body = {k: v for k, v in unstructure(request).items() if v is not None and v != []}
        return _with_extras(body, request)

    return hook


def _numbered(conv: cattrs.Converter, shots: tuple[Shot, ...]) -> list[dict[str, Any]]:
    """``multi_prompt`` as the API names it: ``{"index", "prompt", "duration"}``, the index
    counting from 1 (the upstream Kling API's numbering, as its clients send it)."""
    return [{"index": index, **conv.unstructure(shot)} for index, shot in enumerate(shots, 1)]


def _generic_body(request: GenericRequest) -> dict[str, Any]:
    """A generic request's body: model, prompt (when given), then the fields as given."""
    body: dict[str, Any] = {"model": request.model}
    if request.prompt is not None:
        body["prompt"] = request.prompt
    return _with_extras(body, request)


def _with_extras(body: dict[str, Any], request: VideoRequest) -> dict[str, Any]:
    """``body`` with the request's extra fields merged in, as plain JSON."""
    for key, value in request.extra_fields.items():
        body[key] = thawed_json(value)
    return body


converter = cattrs.Converter()
configure_converter(converter)


def request_body(request: VideoRequest) -> dict[str, Any]:
    """The JSON body of a submit for ``request``; ValueError while it names a local image
    (``session.submit`` uploads those first, for their URLs)."""
    for field, image in request.image_fields():
        raise ValueError(
            f"{field}: local image {str(image)!r} has no URL yet: session.submit() uploads it first"
        )
    body: dict[str, Any] = converter.unstructure(request)
    return body


def _data(payload: Any) -> Any:
    if not isinstance(payload, Mapping) or "data" not in payload:
        raise InvalidResponseError("response has no 'data' field")
    return payload["data"]


def parse_snapshot(payload: Any, task_id: str | None = None) -> TaskSnapshot:
    """Read a ``GET /v1/tasks/{id}`` body into a snapshot, or raise InvalidResponseError
    (also when it describes a task other than ``task_id``)."""
    try:
        snapshot = converter.structure(_data(payload), TaskSnapshot)
    except InvalidResponseError:
        raise
    except Exception as exc:  # cattrs wraps field errors in (Base)ExceptionGroups
        raise InvalidResponseError(f"unreadable task status: {_describe(exc)}") from exc
    if task_id is not None and snapshot.id != task_id:
        raise InvalidResponseError(
            f"the status asked for task {task_id} describes task {snapshot.id}"
        )
    return snapshot


def parse_submission(payload: Any) -> str:
    """The task id from a submit response: ``data`` is a list with one
    ``{"task_id"}`` element, or (response version 2026-07-27) one ``{"id"}`` object."""
    data = _data(payload)
    first = data[0] if isinstance(data, list) and data else data
    task_id = None
    if isinstance(first, Mapping):
        task_id = first.get("task_id") or first.get("id")
    try:
        return check_task_id(task_id)
    except ValueError as exc:
        raise InvalidResponseError(f"submit response has no usable task id: {exc}") from exc


def parse_upload(payload: Any) -> str:
    """The URL of an uploaded image, from ``{"url", ...}`` bare or under ``data``."""
    data = payload.get("data", payload) if isinstance(payload, Mapping) else None
    url = data.get("url") if isinstance(data, Mapping) else None
    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
        raise InvalidResponseError("upload response has no usable http(s) url")
    return url


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions)
    return f"{type(exc).__name__}: {exc}"[:300]
