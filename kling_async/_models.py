"""Request models (validated against the API's support matrix) and response models.

Requests are frozen attrs classes checked at construction, so a bad request fails with a
:class:`RequestValidationError` naming the field and the rule before anything is sent.
"""

from __future__ import annotations

import difflib
import enum
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs

from ._exceptions import RequestValidationError

__all__ = [
    "ASPECT_RATIOS",
    "FIELDS",
    "MAX_DURATION",
    "MAX_DURATION_I2V_OR_PRO",
    "MIN_DURATION",
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
    "frozen_json",
    "thawed_json",
]

MODES = ("std", "pro")
ASPECT_RATIOS = ("16:9", "9:16", "1:1")
MIN_DURATION = 3
MAX_DURATION = 15
MAX_DURATION_I2V_OR_PRO = 10
MAX_PROMPT_CHARS = 10_000
_TASK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")


def check_task_id(task_id: object) -> str:
    """Return ``task_id`` if it is a plausible id, so it can never smuggle a path or query."""
    if not isinstance(task_id, str) or not _TASK_ID.fullmatch(task_id) or ".." in task_id:
        raise RequestValidationError(
            "task_id", "must be 1-128 letters, digits, '_', '-' or '.'", task_id
        )
    return task_id


def _image(field: str, value: object) -> str | Path:
    """An image given as a public http(s) URL, or as a local file (a path object) that
    ``session.submit`` uploads first."""
    if isinstance(value, os.PathLike):
        path = Path(value)
        if not path.is_file():
            raise RequestValidationError(field, "local image: no such file", str(path))
        return path
    if not isinstance(value, str):
        raise RequestValidationError(field, "must be an http(s) URL or a pathlib.Path", value)
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise RequestValidationError(
            field,
            "must be a public http(s) URL (for a local file, pass a pathlib.Path)",
            value,
        )
    return value


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
    if not MIN_DURATION <= value <= MAX_DURATION:
        raise RequestValidationError(
            a.name,
            f"must be a whole number of seconds from {MIN_DURATION} to {MAX_DURATION}",
            value,
        )


def _check_flag(_inst: object, a: attrs.Attribute[bool | None], value: object) -> None:
    if value is not None and type(value) is not bool:
        raise RequestValidationError(a.name, "must be True, False or None", value)


def _to_tuple(value: object) -> object:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        return value  # left for the validator to reject with a clear message
    return tuple(value)


#: The request fields, by the API's names.
FIELDS = (
    "model",
    "prompt",
    "mode",
    "duration",
    "aspect_ratio",
    "negative_prompt",
    "image_urls",
    "last_frame_image",
    "watermark",
    "audio",
)


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
        if self.mode == "pro" and self.duration > MAX_DURATION_I2V_OR_PRO:
            raise RequestValidationError(
                "duration", f"pro mode goes up to {MAX_DURATION_I2V_OR_PRO} seconds", self.duration
            )

    @property
    def kind(self) -> tuple[str, str, int, bool]:
        """What the server's run time depends on: model, mode, duration, image input."""
        return (self.model, self.mode, self.duration, isinstance(self, ImageToVideo))

    @staticmethod
    def from_fields(fields: Mapping[str, Any]) -> VideoRequest:
        """The request a mapping of the API's field names describes (a JSON body, a form).

        ``image_urls`` makes it an :class:`ImageToVideo`, otherwise a :class:`TextToVideo`;
        ``None`` counts as unset. Unknown fields and broken rules raise
        :class:`RequestValidationError` naming the field.
        """
        if not isinstance(fields, Mapping):
            raise RequestValidationError(
                "request", "must be an object of request fields", type(fields).__name__
            )
        for key in fields:
            if key not in FIELDS:
                close = difflib.get_close_matches(str(key), FIELDS, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise RequestValidationError(
                    str(key), f"unknown field{hint}; the fields are: {', '.join(FIELDS)}"
                )
        given = {key: value for key, value in fields.items() if value is not None}
        if "prompt" not in given:
            raise RequestValidationError("prompt", "required, a non-empty string")
        if "image_urls" in given:
            return ImageToVideo(**given)
        if "last_frame_image" in given:
            raise RequestValidationError(
                "last_frame_image",
                "only valid together with image_urls (image-to-video)",
                given["last_frame_image"],
            )
        return TextToVideo(**given)


@attrs.frozen
class TextToVideo(VideoRequest):
    """Generate a video from a text prompt."""


@attrs.frozen
class ImageToVideo(VideoRequest):
    """Animate one image (first frame) or two (first and last frame) following a prompt."""

    image_urls: tuple[str | Path, ...] = attrs.field(converter=_to_tuple)
    last_frame_image: str | Path | None = attrs.field(default=None, kw_only=True)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        urls = self.image_urls
        if not isinstance(urls, tuple) or not 1 <= len(urls) <= 2:
            raise RequestValidationError("image_urls", "must be a list of 1 or 2 images", urls)
        # Frozen: normalise through object.__setattr__ (path-likes become Path).
        object.__setattr__(self, "image_urls", tuple(_image("image_urls", u) for u in urls))
        if self.last_frame_image is not None:
            object.__setattr__(
                self, "last_frame_image", _image("last_frame_image", self.last_frame_image)
            )
            if len(urls) != 1:
                raise RequestValidationError(
                    "last_frame_image",
                    "only with exactly one image in image_urls (two images already set the "
                    "last frame)",
                    self.last_frame_image,
                )
        if self.duration > MAX_DURATION_I2V_OR_PRO:
            raise RequestValidationError(
                "duration",
                f"image-to-video goes up to {MAX_DURATION_I2V_OR_PRO} seconds",
                self.duration,
            )

    @property
    def local_images(self) -> tuple[Path, ...]:
        """The images given as local files, which a submit uploads first."""
        images = (*self.image_urls, self.last_frame_image)
        return tuple(image for image in images if isinstance(image, Path))


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


class _FrozenDict(dict[str, Any]):
    """A JSON object that refuses changes (a dict, so ``json.dumps`` and ``==`` just work)."""

    __slots__ = ()

    def _refuse(self, *_args: object, **_kwargs: object) -> Any:
        raise TypeError("a task snapshot's extras are read-only; copy them with dict(...)")

    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def __reduce__(self) -> tuple[type[_FrozenDict], tuple[dict[str, Any]]]:
        return (_FrozenDict, (dict(self),))  # pickles and copies without a refused write

    def __copy__(self) -> _FrozenDict:
        return self

    def __deepcopy__(self, _memo: object) -> _FrozenDict:
        return self  # nothing inside can change: it is frozen all the way down


def frozen_json(value: Any) -> Any:
    """Decoded JSON made read-only all the way down: objects become read-only dicts,
    arrays tuples (``thawed_json`` turns it back into plain JSON)."""
    if isinstance(value, Mapping):
        return _FrozenDict({str(k): frozen_json(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(frozen_json(v) for v in value)
    return value


def thawed_json(value: Any) -> Any:
    """What :func:`frozen_json` made, as plain JSON again (dicts and lists)."""
    if isinstance(value, Mapping):
        return {k: thawed_json(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thawed_json(v) for v in value]
    return value


@attrs.frozen
class TaskSnapshot:
    """One status answer for a task, as the API reported it (times in unix seconds).

    Only ``id`` and ``status`` (and, once completed, the videos) must be readable: any
    other field the server sent in a shape the SDK cannot read is treated as absent
    (``progress`` 0, the rest None), so a cosmetic glitch never costs a finished video.
    """

    id: str
    status: TaskStatus = TaskStatus.UNKNOWN
    progress: int = 0
    created: float | None = None
    completed: float | None = None
    estimated_time: float | None = None
    actual_time: float | None = None
    videos: tuple[Video, ...] = ()
    error: ErrorInfo | None = None
    cost: float | None = None
    """What the task cost, when the server reports it (not in the provider's reference)."""
    credits_cost: float | None = None
    """The credits the task cost, when the server reports it."""
    extras: Mapping[str, Any] = attrs.field(factory=_FrozenDict, converter=frozen_json, hash=False)
    """The fields of the answer the SDK does not model, read-only, as received (the API
    key masked): a field the provider adds is readable before the SDK knows it."""


@attrs.frozen
class VideoResult:
    """What a completed task produced: ``url`` is the first video, ``videos`` all of them."""

    task_id: str
    videos: tuple[Video, ...]

    @property
    def url(self) -> str:
        """The first video's URL (temporary: download it promptly)."""
        return self.videos[0].url
