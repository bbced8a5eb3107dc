"""Submit-body checks that mirror the real server (API.md sections 1 and 5), per model.

Each rule answers "<field>: <rule>", the message a 400 carries (its ``param`` is the
field). The endpoint serves three models, each with its own fields and rules:

- ``kling-v3``: the support matrix (std, pro and 4k; 3-15 s; image-to-video and pro at
  most 10 s, 4k not capped below 15 s), multi-shot (``shot_type`` customize with 1-6
  ``multi_prompt`` shots numbered from 1, each 512 characters at most, 1 s or more and at
  most the task's duration, adding up to it; or intelligence, with a prompt), and, as
  upstream Kling, no last frame in multi-shot mode;
- ``kling-v3-omni``: its prompt names images as ``<<<image_N>>>``, N from 1 to the number
  of ``image_urls``;
- ``kling-3.0-turbo``: ``resolution`` (720p, 1080p) and ``first_frame_image`` (a URL or
  base64), a prompt of at most 3,072 characters.

Any other model is refused. A field the model does not have is accepted (the real
endpoint's handling is not documented) unless ``unknown_fields="refuse"``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeGuard
from urllib.parse import urlsplit

__all__ = [
    "ASPECT_RATIOS",
    "MAX_DURATION",
    "MAX_I2V_OR_PRO_DURATION",
    "MIN_DURATION",
    "MODELS",
    "MODES",
    "prompt_of",
    "submission_error",
]

MODES = ("std", "pro", "4k")
MIN_DURATION = 3
MAX_DURATION = 15
MAX_I2V_OR_PRO_DURATION = 10
ASPECT_RATIOS = ("16:9", "9:16", "1:1")
SHOT_TYPES = ("customize", "intelligence")
MAX_SHOTS = 6
MAX_SHOT_PROMPT = 512
TURBO_RESOLUTIONS = ("720p", "1080p")
MAX_TURBO_PROMPT = 3072
_IMAGE_REF = re.compile(r"<<<image_(\d+)>>>")

_COMMON = ("model", "prompt", "negative_prompt", "duration", "aspect_ratio", "watermark", "audio")
MODELS: dict[str, frozenset[str]] = {
    "kling-v3": frozenset(
        {*_COMMON, "mode", "image_urls", "last_frame_image", "multi_shot", "shot_type"}
        | {"multi_prompt"}
    ),
    "kling-v3-omni": frozenset({*_COMMON, "mode", "image_urls"}),
    "kling-3.0-turbo": frozenset({*_COMMON, "resolution", "first_frame_image"}),
}
"""The models the emulator serves, and the fields each documents."""

UrlProblem = Callable[[str], str | None]


def _is_http_url(value: object) -> bool:
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def prompt_of(body: dict[str, Any]) -> str:
    """The text a task is about: its prompt, or its shots' prompts (custom multi-shot)."""
    prompt = body.get("prompt")
    if isinstance(prompt, str) and prompt:
        return prompt
    shots = body.get("multi_prompt")
    if isinstance(shots, list):
        return " / ".join(s["prompt"] for s in shots if isinstance(s, dict) and "prompt" in s)
    return ""


def submission_error(
    body: Any, url_problem: UrlProblem | None = None, *, unknown_fields: str = "accept"
) -> str | None:
    """The first rule `body` breaks, or None when the server would accept it.

    `url_problem` tells why the server could not fetch an image URL (e.g. an expired
    upload of the emulator's own storage host), or None when it can.
    """
    if not isinstance(body, dict):
        return "body: must be a JSON object"
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        return "model: required, a non-empty string"
    fields = MODELS.get(model)
    if fields is None:
        return f"model: unknown model {model!r}; this endpoint serves {', '.join(MODELS)}"
    if unknown_fields == "refuse":
        for key in body:
            if key not in fields:
                return f"{key}: not a field of {model}"
    check = _CHECKS[model]
    return _common(body) or check(body) or _urls(body, url_problem)


def _common(body: dict[str, Any]) -> str | None:
    """What every model's body must respect: a duration that is a JSON number of 3-15 s,
    a known aspect ratio, text and flags of the right type."""
    duration = body.get("duration", 5)
    if not _is_int(duration):
        return "duration: must be an integer (a JSON number, not a string)"
    if not MIN_DURATION <= duration <= MAX_DURATION:
        return f"duration: must be a whole number of seconds from {MIN_DURATION} to {MAX_DURATION}"
    if body.get("aspect_ratio", "16:9") not in ASPECT_RATIOS:
        return "aspect_ratio: must be one of 16:9, 9:16, 1:1"
    negative = body.get("negative_prompt")
    if negative is not None and not isinstance(negative, str):
        return "negative_prompt: must be a string"
    for flag in ("watermark", "audio"):
        if flag in body and body[flag] is not None and not isinstance(body[flag], bool):
            return f"{flag}: must be a boolean"
    return None


def _prompt(body: dict[str, Any]) -> str | None:
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return "prompt: required, a non-empty string"
    return None


def _images(body: dict[str, Any]) -> str | None:
    images = body.get("image_urls")
    if images is not None:
        if not isinstance(images, list) or not images:
            return "image_urls: must be a non-empty list of URLs"
        if not all(_is_http_url(url) for url in images):
            return "image_urls: every entry must be an http(s) URL"
    return None


def _kling_v3(body: dict[str, Any]) -> str | None:
    mode = body.get("mode", "std")
    if mode not in MODES:
        return "mode: must be one of std, pro, 4k"
    problem = _shots(body)
    if problem is not None:
        return problem
    customize = body.get("multi_shot") is True and body.get("shot_type") == "customize"
    if not customize and (problem := _prompt(body)) is not None:
        return problem
    images = body.get("image_urls")
    if images is not None and (not isinstance(images, list) or not 1 <= len(images) <= 2):
        return "image_urls: must be a list of 1 or 2 URLs"
    if (problem := _images(body)) is not None:
        return problem
    last_frame = body.get("last_frame_image")
    if last_frame is not None:
        if not images:
            return "last_frame_image: only valid together with image_urls"
        if not _is_http_url(last_frame):
            return "last_frame_image: must be an http(s) URL"
        if len(images) == 2:
            return "last_frame_image: not allowed with two image_urls (the second is the last)"
    if body.get("multi_shot") is True and (last_frame is not None or len(images or ()) > 1):
        field = "last_frame_image" if last_frame is not None else "image_urls"
        return f"{field}: no last frame in multi-shot mode (a first frame only)"
    duration = body.get("duration", 5)
    if images and mode != "4k" and duration > MAX_I2V_OR_PRO_DURATION:
        return f"duration: image-to-video supports at most {MAX_I2V_OR_PRO_DURATION} s"
    if mode == "pro" and duration > MAX_I2V_OR_PRO_DURATION:
        return f"duration: pro mode supports at most {MAX_I2V_OR_PRO_DURATION} s"
    return None


def _shots(body: dict[str, Any]) -> str | None:
    """kling-v3's multi-shot rules (API.md section 5)."""
    multi_shot = body.get("multi_shot", False)
    if not isinstance(multi_shot, bool):
        return "multi_shot: must be a boolean"
    shot_type = body.get("shot_type")
    shots = body.get("multi_prompt")
    if not multi_shot:
        return None
    if shot_type not in SHOT_TYPES:
        return "shot_type: required when multi_shot is true: customize or intelligence"
    if shot_type == "intelligence":
        return None
    if not isinstance(shots, list) or not 1 <= len(shots) <= MAX_SHOTS:
        return f"multi_prompt: required with shot_type customize: 1 to {MAX_SHOTS} shots"
    duration = body.get("duration", 5)
    total = 0
    for number, shot in enumerate(shots, 1):
        if not isinstance(shot, dict):
            return f"multi_prompt: shot {number} must be an object"
        if shot.get("index") != number:
            return (
                f"multi_prompt: shot {number} has index {shot.get('index')!r}; shots count from 1"
            )
        prompt = shot.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            return f"multi_prompt: shot {number} needs a prompt"
        if len(prompt) > MAX_SHOT_PROMPT:
            return f"multi_prompt: shot {number}'s prompt is over {MAX_SHOT_PROMPT} characters"
        seconds = shot.get("duration")
        if not _is_int(seconds):
            return f"multi_prompt: shot {number}'s duration must be an integer"
        if not 1 <= seconds <= duration:
            return f"multi_prompt: shot {number} must last 1 to {duration} s (the task's duration)"
        total += seconds
    if total != duration:
        return f"multi_prompt: the shots last {total} s, the task {duration} s"
    return None


def _omni(body: dict[str, Any]) -> str | None:
    if body.get("mode", "std") not in MODES:
        return "mode: must be one of std, pro, 4k"
    problem = _prompt(body) or _images(body)
    if problem is not None:
        return problem
    count = len(body.get("image_urls") or ())
    for reference in _IMAGE_REF.findall(body["prompt"]):
        if not 1 <= int(reference) <= count:
            return (
                f"prompt: <<<image_{reference}>>> names an image image_urls does not have "
                f"({count} given; N counts from 1)"
            )
    return None


def _turbo(body: dict[str, Any]) -> str | None:
    problem = _prompt(body)
    if problem is not None:
        return problem
    if len(body["prompt"]) > MAX_TURBO_PROMPT:
        return f"prompt: at most {MAX_TURBO_PROMPT} characters"
    if body.get("resolution", "1080p") not in TURBO_RESOLUTIONS:
        return f"resolution: must be one of {', '.join(TURBO_RESOLUTIONS)}"
    first_frame = body.get("first_frame_image")
    if first_frame is not None and (not isinstance(first_frame, str) or not first_frame):
        return "first_frame_image: must be an image URL or base64"
    return None


_CHECKS: dict[str, Callable[[dict[str, Any]], str | None]] = {
    "kling-v3": _kling_v3,
    "kling-v3-omni": _omni,
    "kling-3.0-turbo": _turbo,
}


def _urls(body: dict[str, Any], url_problem: UrlProblem | None) -> str | None:
    """Why the server could not fetch one of the body's image URLs, if it cannot."""
    if url_problem is None:
        return None
    images = body.get("image_urls") or []
    for field, urls in (
        ("image_urls", images if isinstance(images, list) else []),
        ("last_frame_image", [body.get("last_frame_image")]),
        ("first_frame_image", [body.get("first_frame_image")]),
    ):
        for url in urls:
            problem = url_problem(url) if isinstance(url, str) and _is_http_url(url) else None
            if problem is not None:
                return f"{field}: cannot fetch {url} ({problem})"
    return None
