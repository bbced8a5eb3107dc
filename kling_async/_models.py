"""Request models (validated against the API's support matrix) and response models.

Requests are frozen attrs classes checked at construction, so a bad request fails with a
:class:`RequestValidationError` naming the field and the rule before anything is sent.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import attrs

from ._exceptions import RequestValidationError

__all__ = [
    "ASPECT_RATIOS",
    "DURATIONS",
    "MODES",
    "ErrorInfo",
    "ImageToVideo",
    "TaskSnapshot",
    "TaskStatus",
    "TextToVideo",
    "Video",
    "VideoRequest",
    "VideoResult",
    "check_task_id",
]

MODES = ("std", "pro")
ASPECT_RATIOS = ("16:9", "9:16", "1:1")
DURATIONS = (5, 10, 15)
MAX_PROMPT_CHARS = 10_000
_TASK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")


def check_task_id(task_id: object) -> str:
    """Return ``task_id`` if it is a plausible id, so it can never smuggle a path or query."""
    if not isinstance(task_id, str) or not _TASK_ID.fullmatch(task_id) or ".." in task_id:
        raise RequestValidationError(
            "task_id", "must be 1-128 letters, digits, '_', '-' or '.'", task_id
        )
    return task_id


def _http_url(field: str, value: object) -> None:
    if not isinstance(value, str):
        raise RequestValidationError(field, "must be a string URL", value)
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise RequestValidationError(field, "must be a public http(s) URL", value)


def _check_prompt(_inst: object, a: attrs.Attribute[str], value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise RequestValidationError(a.name, "required, a non-empty string", value)
    if len(value) > MAX_PROMPT_CHARS:
        raise RequestValidationError(a.name, f"at most {MAX_PROMPT_CHARS} characters", value)


def _check_optional_text(_inst: object, a: attrs.Attribute[str | None], value: object) -> None:
    if value is not None and not isinstance(value, str):
        raise RequestValidationError(a.name, "must be a string or None", value)


def _check_model(_inst: object, a: attrs.Attribute[str], value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise RequestValidationError(a.name, "must be a non-empty model name", value)


def _one_of(choices: tuple[str, ...]) -> Any:
    def check(_inst: object, a: attrs.Attribute[str], value: object) -> None:
        if value not in choices:
            raise RequestValidationError(a.name, f"must be one of {', '.join(choices)}", value)

    return check


def _check_duration(_inst: object, a: attrs.Attribute[int], value: object) -> None:
    # bool is an int subclass and a float 5.0 would be sent as 5.0: both are refused.
    if type(value) is not int:
        raise RequestValidationError(a.name, "must be an integer number of seconds", value)
    if value not in DURATIONS:
        raise RequestValidationError(
            a.name, f"must be one of {', '.join(map(str, DURATIONS))} seconds", value
        )


def _check_flag(_inst: object, a: attrs.Attribute[bool | None], value: object) -> None:
    if value is not None and type(value) is not bool:
        raise RequestValidationError(a.name, "must be True, False or None", value)


def _to_tuple(value: object) -> object:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        return value  # left for the validator to reject with a clear message
    return tuple(value)


@attrs.frozen
class VideoRequest:
    """Options shared by both request kinds; use :class:`TextToVideo` or :class:`ImageToVideo`."""

    prompt: str = attrs.field(validator=_check_prompt)
    model: str = attrs.field(default="kling-v3", kw_only=True, validator=_check_model)
    mode: str = attrs.field(default="std", kw_only=True, validator=_one_of(MODES))
    duration: int = attrs.field(default=5, kw_only=True, validator=_check_duration)
    aspect_ratio: str = attrs.field(default="16:9", kw_only=True, validator=_one_of(ASPECT_RATIOS))
    negative_prompt: str | None = attrs.field(
        default=None, kw_only=True, validator=_check_optional_text
    )
    watermark: bool | None = attrs.field(default=None, kw_only=True, validator=_check_flag)
    audio: bool | None = attrs.field(default=None, kw_only=True, validator=_check_flag)

    def __attrs_post_init__(self) -> None:
        if self.mode == "pro" and self.duration > 10:
            raise RequestValidationError(
                "duration", "pro mode goes up to 10 seconds", self.duration
            )

    @property
    def kind(self) -> tuple[str, str, int, bool]:
        """What the server's run time depends on: model, mode, duration, image input."""
        return (self.model, self.mode, self.duration, isinstance(self, ImageToVideo))


@attrs.frozen
class TextToVideo(VideoRequest):
    """Generate a video from a text prompt."""


@attrs.frozen
class ImageToVideo(VideoRequest):
    """Animate one image (first frame) or two (first and last frame) following a prompt."""

    image_urls: tuple[str, ...] = attrs.field(converter=_to_tuple)
    last_frame_image: str | None = attrs.field(default=None, kw_only=True)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        urls = self.image_urls
        if not isinstance(urls, tuple) or not 1 <= len(urls) <= 2:
            raise RequestValidationError("image_urls", "must be a list of 1 or 2 image URLs", urls)
        for url in urls:
            _http_url("image_urls", url)
        if self.last_frame_image is not None:
            _http_url("last_frame_image", self.last_frame_image)
            if len(urls) != 1:
                raise RequestValidationError(
                    "last_frame_image",
                    "only with exactly one image in image_urls (two images already set the "
                    "last frame)",
                    self.last_frame_image,
                )
        if self.duration > 10:
            raise RequestValidationError(
                "duration", "image-to-video goes up to 10 seconds", self.duration
            )


class TaskStatus(enum.StrEnum):
    """A task's state; any status the SDK does not know yet is ``UNKNOWN`` (and polled on)."""

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"

    @classmethod
    def _missing_(cls, value: object) -> TaskStatus:
        if isinstance(value, str):
            lowered = value.strip().lower()
            for member in cls:
                if member.value == lowered:
                    return member
        return cls.UNKNOWN

    @property
    def is_terminal(self) -> bool:
        """True for completed, failed and cancelled: the task will not change again."""
        return self in _TERMINAL


_TERMINAL = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})


@attrs.frozen
class Video:
    """One result video: a temporary URL on the storage host and when it expires (unix s)."""

    url: str
    expires_at: float | None = None


@attrs.frozen
class ErrorInfo:
    """The server's explanation of a failed task."""

    code: str | None = None
    message: str | None = None


@attrs.frozen
class TaskSnapshot:
    """One status answer for a task, as the API reported it (times in unix seconds)."""

    id: str
    status: TaskStatus = TaskStatus.UNKNOWN
    progress: int = 0
    created: float | None = None
    completed: float | None = None
    estimated_time: float | None = None
    actual_time: float | None = None
    videos: tuple[Video, ...] = ()
    error: ErrorInfo | None = None


@attrs.frozen
class VideoResult:
    """What a completed task produced: ``url`` is the first video, ``videos`` all of them."""

    task_id: str
    videos: tuple[Video, ...]

    @property
    def url(self) -> str:
        """The first video's URL (temporary: download it promptly)."""
        return self.videos[0].url
