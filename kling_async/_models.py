"""Request models (kling-v3 checked against its support matrix; any other model only for
what every request needs) and response models.

Requests are frozen attrs classes checked at construction, so a bad request fails with a
:class:`RequestValidationError` naming the field and the rule before anything is sent.
:class:`TextToVideo` and :class:`ImageToVideo` type what the provider documents for
``kling-v3`` (API.md sections 1 and 5: the support matrix, ``4k``, multi-shot);
:class:`GenericRequest` sends any model the SDK does not type, as the API's JSON. Every
request carries ``extra_fields``, merged into the body, for what the SDK does not model yet.
"""

from __future__ import annotations

import difflib
import enum
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

import attrs

from ._exceptions import RequestValidationError

__all__ = [
    "ASPECT_RATIOS",
    "FIELDS",
    "KLING_V3",
    "MAX_DURATION",
    "MAX_DURATION_I2V_OR_PRO",
    "MAX_SHOTS",
    "MAX_SHOT_PROMPT_CHARS",
    "MIN_DURATION",
    "MODES",
    "PROMPT_RULE",
    "SHOT_TYPES",
    "ErrorInfo",
    "GenericRequest",
    "ImageToVideo",
    "KlingV3Request",
    "Shot",
    "TaskSnapshot",
    "TaskStatus",
    "TextToVideo",
    "Video",
    "VideoRequest",
    "VideoResult",
    "check_task_id",
    "close_field",
    "frozen_json",
    "thawed_json",
    "unknown_field_hint",
]

KLING_V3 = "kling-v3"
"""The model the typed requests' rules are documented for."""
MODES = ("std", "pro", "4k")
ASPECT_RATIOS = ("16:9", "9:16", "1:1")
MIN_DURATION = 3
MAX_DURATION = 15
MAX_DURATION_I2V_OR_PRO = 10
MAX_PROMPT_CHARS = 10_000
SHOT_TYPES = ("customize", "intelligence")
MAX_SHOTS = 6
MAX_SHOT_PROMPT_CHARS = 512
PROMPT_RULE = "required, a non-empty string"
_MAX_JSON_DEPTH = 64
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


def _json(field: str, value: Any, depth: int = 0) -> Any:
    """``value`` if it is JSON the body can carry (finite numbers, string keys), local
    images (path objects, checked to exist) included; else RequestValidationError naming
    where in ``field`` it broke."""
    if depth > _MAX_JSON_DEPTH:
        raise RequestValidationError(field, "nested too deeply (or contains itself)")
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise RequestValidationError(field, "must be a finite number (JSON has no NaN)", value)
        return value
    if isinstance(value, os.PathLike):
        return _image(field, value)
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise RequestValidationError(field, "object keys must be strings", key)
            _json(f"{field}.{key}", item, depth + 1)
        return value
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _json(f"{field}[{index}]", item, depth + 1)
        return value
    raise RequestValidationError(
        field,
        "must be JSON (a string, number, boolean, null, list or object) or a pathlib.Path "
        "of a local image",
        value,
    )


def _paths(value: Any, where: str) -> Iterator[tuple[str, Path]]:
    """Every local image (path object) in a JSON value, with where it is."""
    if isinstance(value, Path):
        yield where, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _paths(item, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _paths(item, f"{where}[{index}]")


def _with_urls(value: Any, urls: Mapping[Path, str]) -> Any:
    """A JSON value with its local images replaced by their uploaded URLs."""
    if isinstance(value, Path):
        return urls.get(value, value)
    if isinstance(value, Mapping):
        return {key: _with_urls(item, urls) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_with_urls(item, urls) for item in value]
    return value


def _extra_fields(value: object) -> Any:
    """Extra fields checked to be JSON (local images included), then made read-only."""
    if not isinstance(value, Mapping):
        raise RequestValidationError(
            "extra_fields", "must be a mapping of field names to JSON values", value
        )
    for key, item in value.items():
        if not isinstance(key, str) or not key:
            raise RequestValidationError("extra_fields", "field names must be strings", key)
        _json(key, item)
    return frozen_json(value)


def _check_model(_inst: object, a: attrs.Attribute[str], value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise RequestValidationError(a.name, "must be a non-empty model name", value)


def _check_optional_text(_inst: object, a: attrs.Attribute[str | None], value: object) -> None:
    if value is not None and not isinstance(value, str):
        raise RequestValidationError(a.name, "must be a string or None", value)


def _check_flag(_inst: object, a: attrs.Attribute[bool | None], value: object) -> None:
    if value is not None and type(value) is not bool:
        raise RequestValidationError(a.name, "must be True, False or None", value)


def _to_tuple(value: object) -> object:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        return value  # left for the validator to reject with a clear message
    return tuple(value)


def close_field(key: str) -> str | None:
    """The modelled field an unknown one may be a typo of, if any."""
    close = difflib.get_close_matches(str(key), FIELDS, n=1)
    return close[0] if close else None


def unknown_field_hint(key: str) -> str:
    """The rule an unknown request field breaks, with the field it may be a typo of."""
    close = close_field(key)
    hint = f" (did you mean {close!r}?)" if close else ""
    return f"unknown field{hint}; the fields are: {', '.join(FIELDS)}"


#: The fields the typed requests model, by the API's names.
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
    "multi_shot",
    "shot_type",
    "multi_prompt",
)


@attrs.frozen
class VideoRequest:
    """What every request to the generation endpoint has: a ``model``, a ``prompt`` (unless
    the model's documentation says otherwise) and ``extra_fields``, JSON merged into the
    body for what the SDK does not model yet (a field it models is refused there, naming
    it). Build a :class:`TextToVideo` or :class:`ImageToVideo` (kling-v3), or a
    :class:`GenericRequest` (any other model).
    """

    MODELLED: ClassVar[frozenset[str]] = frozenset({"model", "prompt"})
    """The fields this kind of request models (extra fields may not name them)."""

    prompt: str | None = attrs.field(
        default=None, validator=lambda inst, _a, value: inst.check_prompt(value)
    )
    model: str = attrs.field(default=KLING_V3, kw_only=True, validator=_check_model)
    extra_fields: Mapping[str, Any] = attrs.field(
        factory=dict, kw_only=True, converter=_extra_fields, hash=False
    )

    def check_prompt(self, value: object) -> None:
        """Refuse a ``prompt`` this request cannot be sent with."""
        if value is None and self.prompt_optional:
            return
        if not isinstance(value, str) or not value.strip():
            raise RequestValidationError("prompt", PROMPT_RULE, value)

    @extra_fields.validator
    def _check_extra_fields(self, a: attrs.Attribute[Mapping[str, Any]], value: Any) -> None:
        for key, item in value.items():
            if key in self.MODELLED:
                raise RequestValidationError(
                    key,
                    f"modelled by {type(self).__name__}: set it as {key}=..., not in extra_fields",
                    item,
                )

    def __attrs_post_init__(self) -> None:
        if type(self) is VideoRequest:
            raise TypeError(
                "VideoRequest is the base of every request: build a TextToVideo, an "
                "ImageToVideo or a GenericRequest"
            )

    @property
    def prompt_optional(self) -> bool:
        """True if this request may leave ``prompt`` out (the per-shot prompts replace it)."""
        return False

    @property
    def kind(self) -> tuple[str, str | None, int | None, bool]:
        """What the server's run time depends on: model, mode, duration, image input."""
        raise NotImplementedError

    @property
    def local_images(self) -> tuple[Path, ...]:
        """The images given as local files, which a submit uploads first."""
        return tuple(path for _where, path in self.image_fields())

    def image_fields(self) -> Iterator[tuple[str, Path]]:
        """Every local image of the request, with the field it is in."""
        for key, value in self.extra_fields.items():
            yield from _paths(value, key)

    def with_image_urls(self, urls: Mapping[Path, str]) -> VideoRequest:
        """The request with its local images replaced by their uploaded ``urls``."""
        return attrs.evolve(self, **self._replaced(urls))

    def _replaced(self, urls: Mapping[Path, str]) -> dict[str, Any]:
        """The fields that change when local images are replaced by ``urls``."""
        return {
            "extra_fields": {key: _with_urls(item, urls) for key, item in self.extra_fields.items()}
        }

    @staticmethod
    def from_fields(
        fields: Mapping[str, Any], *, unknown: Literal["refuse", "send"] = "refuse"
    ) -> VideoRequest:
        """The request a mapping of the API's field names describes (a JSON body, a form).

        ``None`` counts as unset. For ``kling-v3`` (the default model), ``image_urls`` makes
        it an :class:`ImageToVideo`, otherwise a :class:`TextToVideo`; ``multi_prompt`` may
        be a list of ``{"index", "prompt", "duration"}`` objects (taken in ``index`` order),
        and ``duration`` left out with them is their total.
        A field the SDK does not model is refused (``unknown="refuse"``, naming it) or sent
        as one of the ``extra_fields`` (``unknown="send"``). Any other model is a
        :class:`GenericRequest` carrying every field as given. Broken rules raise
        :class:`RequestValidationError` naming the field.
        """
        if not isinstance(fields, Mapping):
            raise RequestValidationError(
                "request", "must be an object of request fields", type(fields).__name__
            )
        if unknown not in ("refuse", "send"):
            raise ValueError(f"unknown: must be 'refuse' or 'send', not {unknown!r}")
        given = {key: value for key, value in fields.items() if value is not None}
        model = given.get("model", KLING_V3)
        if model != KLING_V3:
            prompt = given.pop("prompt", None)
            given.pop("model", None)
            return GenericRequest(prompt, model=model, extra_fields=given)
        extras = {key: value for key, value in given.items() if key not in FIELDS}
        if extras and unknown == "refuse":
            key = next(iter(extras))
            raise RequestValidationError(str(key), unknown_field_hint(str(key)))
        typed = {key: value for key, value in given.items() if key in FIELDS}
        if "multi_prompt" in typed:
            shots = typed["multi_prompt"] = Shot.list_from(typed["multi_prompt"])
            typed.setdefault("duration", sum(shot.duration for shot in shots) or 5)
        if "prompt" not in typed and not typed.get("multi_prompt"):
            raise RequestValidationError("prompt", PROMPT_RULE)
        if "image_urls" in typed:
            return ImageToVideo(**typed, extra_fields=extras)
        if "last_frame_image" in typed:
            raise RequestValidationError(
                "last_frame_image",
                "only valid together with image_urls (image-to-video)",
                typed["last_frame_image"],
            )
        return TextToVideo(**typed, extra_fields=extras)


def _shot_prompt(_inst: object, _a: attrs.Attribute[str], value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise RequestValidationError("shot.prompt", "required, a non-empty string", value)


def _shot_duration(_inst: object, _a: attrs.Attribute[int], value: object) -> None:
    if type(value) is not int or value < 1:
        raise RequestValidationError(
            "shot.duration", "must be a whole number of seconds, at least 1", value
        )


@attrs.frozen
class Shot:
    """One shot of a multi-shot video: what it shows and for how many whole seconds.

    Its ``index`` in the API's ``multi_prompt`` is its place in the request's list,
    filled in when sent, from 1 (as the upstream Kling API numbers shots).
    """

    prompt: str = attrs.field(validator=_shot_prompt)
    duration: int = attrs.field(validator=_shot_duration)

    @staticmethod
    def list_from(value: object) -> tuple[Shot, ...]:
        """Shots from a JSON ``multi_prompt``: ``{"index", "prompt", "duration"}`` objects
        (``index`` optional; given, the shots are taken in its order) or Shots."""
        if isinstance(value, str | bytes) or not isinstance(value, Iterable):
            raise RequestValidationError("multi_prompt", "must be a list of shots", value)
        entries = list(value)
        if not all(isinstance(entry, Shot) for entry in entries):
            entries = _in_index_order(entries)
        return tuple(_shot(index, entry) for index, entry in enumerate(entries, 1))


def _in_index_order(entries: list[Any]) -> list[Any]:
    indexes = [entry.get("index") for entry in entries if isinstance(entry, Mapping)]
    given = [index for index in indexes if index is not None]
    if not given:
        return entries
    if len(given) != len(entries) or not all(type(i) is int for i in given):
        raise RequestValidationError(
            "multi_prompt", "give every shot a whole-number index, or none of them", indexes
        )
    if len(set(given)) != len(given):
        raise RequestValidationError("multi_prompt", "two shots have the same index", indexes)
    return sorted(entries, key=lambda entry: entry["index"])


def _shot(number: int, entry: object) -> Shot:
    """Shot ``number`` (from 1) of a list, errors naming ``multi_prompt[number]``."""
    where = f"multi_prompt[{number}]"
    if isinstance(entry, Shot):
        return entry
    if not isinstance(entry, Mapping):
        raise RequestValidationError(
            where, "must be a Shot or an object with prompt and duration", entry
        )
    unknown = sorted(set(entry) - {"index", "prompt", "duration"})
    if unknown:
        raise RequestValidationError(
            f"{where}.{unknown[0]}", "unknown field; a shot has index, prompt and duration"
        )
    try:
        return Shot(entry.get("prompt"), entry.get("duration"))  # type: ignore[arg-type]
    except RequestValidationError as exc:
        raise RequestValidationError(
            exc.field.replace("shot", where, 1), exc.rule, exc.value
        ) from None


def _to_shots(value: object) -> object:
    return () if value is None else Shot.list_from(value)


def _kling_v3_choice(choices: tuple[str, ...]) -> Any:
    """A string field; for kling-v3, one of ``choices`` (other models: the server decides)."""

    def check(inst: VideoRequest, a: attrs.Attribute[str], value: object) -> None:
        if inst.model == KLING_V3 and value not in choices:
            raise RequestValidationError(a.name, f"must be one of {', '.join(choices)}", value)
        if not isinstance(value, str):
            raise RequestValidationError(a.name, "must be a string", value)

    return check


def _check_duration(inst: VideoRequest, a: attrs.Attribute[int], value: object) -> None:
    # bool is an int subclass and a float 5.0 would be sent as 5.0: both are refused.
    if type(value) is not int:
        raise RequestValidationError(a.name, "must be an integer number of seconds", value)
    if inst.model == KLING_V3 and not MIN_DURATION <= value <= MAX_DURATION:
        raise RequestValidationError(
            a.name,
            f"must be a whole number of seconds from {MIN_DURATION} to {MAX_DURATION}",
            value,
        )


def _check_shot_type(inst: VideoRequest, a: attrs.Attribute[str | None], value: object) -> None:
    if value is None:
        return
    if inst.model == KLING_V3 and value not in SHOT_TYPES:
        raise RequestValidationError(a.name, f"must be one of {', '.join(SHOT_TYPES)}", value)
    if not isinstance(value, str):
        raise RequestValidationError(a.name, "must be a string or None", value)


@attrs.frozen
class KlingV3Request(VideoRequest):
    """The fields kling-v3 documents, shared by :class:`TextToVideo` and :class:`ImageToVideo`.

    With ``model="kling-v3"`` (the default) the provider's rules are checked: the support
    matrix, ``mode`` std, pro or 4k, and multi-shot (``shot_type`` "customize" with 1-6
    :class:`Shot` s in ``multi_prompt``, whose prompts replace ``prompt`` and whose
    durations, each 1 s or more and at most the request's, add up to its ``duration``; or
    "intelligence", the model splitting the shots of ``prompt``). Shots without a
    ``shot_type`` mean "customize"; a ``shot_type`` or shots turn ``multi_shot`` on. For
    another model name these fields only have to be of the right JSON type.
    """

    MODELLED: ClassVar[frozenset[str]] = frozenset(FIELDS)

    mode: str = attrs.field(default="std", kw_only=True, validator=_kling_v3_choice(MODES))
    duration: int = attrs.field(default=5, kw_only=True, validator=_check_duration)
    aspect_ratio: str = attrs.field(
        default="16:9", kw_only=True, validator=_kling_v3_choice(ASPECT_RATIOS)
    )
    negative_prompt: str | None = attrs.field(
        default=None, kw_only=True, validator=_check_optional_text
    )
    watermark: bool | None = attrs.field(default=None, kw_only=True, validator=_check_flag)
    audio: bool | None = attrs.field(default=None, kw_only=True, validator=_check_flag)
    multi_shot: bool | None = attrs.field(default=None, kw_only=True, validator=_check_flag)
    shot_type: str | None = attrs.field(default=None, kw_only=True, validator=_check_shot_type)
    multi_prompt: tuple[Shot, ...] = attrs.field(default=(), kw_only=True, converter=_to_shots)

    @property
    def prompt_optional(self) -> bool:
        """True with shots: their prompts replace ``prompt`` (a shot_type that contradicts
        them is refused after, naming the shots)."""
        return bool(self.multi_prompt)

    def check_prompt(self, value: object) -> None:
        """Refuse a ``prompt`` this request cannot be sent with."""
        super().check_prompt(value)
        if isinstance(value, str) and len(value) > MAX_PROMPT_CHARS:
            raise RequestValidationError("prompt", f"at most {MAX_PROMPT_CHARS} characters", value)

    def __attrs_post_init__(self) -> None:
        self._resolve_shots()
        if self.model == KLING_V3:
            if self.mode == "pro" and self.duration > MAX_DURATION_I2V_OR_PRO:
                raise RequestValidationError(
                    "duration",
                    f"pro mode goes up to {MAX_DURATION_I2V_OR_PRO} seconds",
                    self.duration,
                )
            self._check_shots()

    def _resolve_shots(self) -> None:
        """Fill in what the shots imply (customize, multi_shot on) and refuse what
        contradicts them."""
        shots, shot_type, multi_shot = self.multi_prompt, self.shot_type, self.multi_shot
        if shots and shot_type is None:
            shot_type = "customize"
        if shots and shot_type != "customize":
            raise RequestValidationError(
                "multi_prompt",
                f"shots are for shot_type customize; with {shot_type!r} the model splits "
                "the shots of the prompt itself",
                len(shots),
            )
        if shot_type is not None:
            if multi_shot is False:
                raise RequestValidationError(
                    "multi_shot", "is False, but shot_type or shots ask for a multi-shot video"
                )
            multi_shot = True
        elif multi_shot:
            raise RequestValidationError(
                "shot_type",
                "required when multi_shot is true: customize (with shots) or intelligence",
            )
        if shot_type == "customize" and not shots:
            raise RequestValidationError(
                "multi_prompt", "required with shot_type customize: 1 to 6 shots", ()
            )
        object.__setattr__(self, "shot_type", shot_type)
        object.__setattr__(self, "multi_shot", multi_shot)

    def _check_shots(self) -> None:
        """kling-v3's documented rules for custom shots."""
        shots = self.multi_prompt
        if not shots:
            return
        if len(shots) > MAX_SHOTS:
            raise RequestValidationError("multi_prompt", f"at most {MAX_SHOTS} shots", len(shots))
        for number, shot in enumerate(shots, 1):
            if len(shot.prompt) > MAX_SHOT_PROMPT_CHARS:
                raise RequestValidationError(
                    f"multi_prompt[{number}].prompt",
                    f"at most {MAX_SHOT_PROMPT_CHARS} characters",
                    shot.prompt,
                )
            if shot.duration > self.duration:
                raise RequestValidationError(
                    f"multi_prompt[{number}].duration",
                    f"at most the request's duration ({self.duration} s)",
                    shot.duration,
                )
        total = sum(shot.duration for shot in shots)
        if total != self.duration:
            raise RequestValidationError(
                "multi_prompt",
                f"the shots' durations must add up to the request's duration "
                f"({self.duration} s; set duration={total})",
                total,
            )

    @property
    def kind(self) -> tuple[str, str | None, int | None, bool]:
        """What the server's run time depends on: model, mode, duration, image input."""
        return (self.model, self.mode, self.duration, isinstance(self, ImageToVideo))


@attrs.frozen
class TextToVideo(KlingV3Request):
    """Generate a video from a text prompt (or from a list of shots)."""


@attrs.frozen
class ImageToVideo(KlingV3Request):
    """Animate one image (first frame) or two (first and last frame) following a prompt."""

    image_urls: tuple[str | Path, ...] = attrs.field(default=(), converter=_to_tuple)
    last_frame_image: str | Path | None = attrs.field(default=None, kw_only=True)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        urls = self.image_urls
        kling_v3 = self.model == KLING_V3
        if not isinstance(urls, tuple) or not (1 <= len(urls) <= 2 if kling_v3 else urls):
            rule = "must be a list of 1 or 2 images" if kling_v3 else "must list at least 1 image"
            raise RequestValidationError("image_urls", rule, urls)
        # Frozen: normalise through object.__setattr__ (path-likes become Path).
        object.__setattr__(self, "image_urls", tuple(_image("image_urls", u) for u in urls))
        if self.last_frame_image is not None:
            object.__setattr__(
                self, "last_frame_image", _image("last_frame_image", self.last_frame_image)
            )
            if kling_v3 and len(urls) != 1:
                raise RequestValidationError(
                    "last_frame_image",
                    "only with exactly one image in image_urls (two images already set the "
                    "last frame)",
                    self.last_frame_image,
                )
        # 4k's limits are not documented beyond 3-15 s: the server decides.
        if kling_v3 and self.mode != "4k" and self.duration > MAX_DURATION_I2V_OR_PRO:
            raise RequestValidationError(
                "duration",
                f"image-to-video goes up to {MAX_DURATION_I2V_OR_PRO} seconds",
                self.duration,
            )

    def image_fields(self) -> Iterator[tuple[str, Path]]:
        """Every local image of the request, with the field it is in."""
        for image in self.image_urls:
            if isinstance(image, Path):
                yield "image_urls", image
        if isinstance(self.last_frame_image, Path):
            yield "last_frame_image", self.last_frame_image
        yield from super().image_fields()

    def _replaced(self, urls: Mapping[Path, str]) -> dict[str, Any]:
        return {
            **super()._replaced(urls),
            "image_urls": tuple(_with_urls(image, urls) for image in self.image_urls),
            "last_frame_image": _with_urls(self.last_frame_image, urls),
        }


@attrs.frozen
class GenericRequest(VideoRequest):
    """Any model on the generation endpoint, as the API's JSON: ``model``, ``prompt`` and
    every other field in ``extra_fields``, sent as given (the server checks them).

    The SDK checks only what every request needs: a model name, a non-empty prompt (unless
    ``multi_prompt`` replaces it, as Kling documents), JSON values, and images in
    ``image_urls``/``last_frame_image`` as http(s) URLs; any ``pathlib.Path`` in the
    fields is a local image, uploaded first and replaced by its URL.
    """

    model: str = attrs.field(kw_only=True, validator=_check_model)

    @property
    def prompt_optional(self) -> bool:
        """True when ``multi_prompt`` is given: per-shot prompts replace ``prompt``."""
        return "multi_prompt" in self.extra_fields

    def __attrs_post_init__(self) -> None:
        fields = self.extra_fields
        images = fields.get("image_urls")
        if images is not None:
            if not isinstance(images, tuple):
                raise RequestValidationError("image_urls", "must be a list of images", images)
            for image in images:
                _image("image_urls", image)
        if fields.get("last_frame_image") is not None:
            _image("last_frame_image", fields["last_frame_image"])

    @property
    def kind(self) -> tuple[str, str | None, int | None, bool]:
        """What the server's run time depends on: model, mode (or resolution), duration,
        image input (read from the fields, as far as they say)."""
        fields = self.extra_fields
        mode = fields.get("mode", fields.get("resolution"))
        duration = fields.get("duration")
        images = any(key in fields for key in ("image_urls", "first_frame_image", "image_list"))
        return (
            self.model,
            None if mode is None else str(mode),
            duration if type(duration) is int else None,
            images,
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
