"""Submit-body checks that mirror the real server's support matrix (API.md §1).

Each rule answers "<field>: <rule>", the message a 400 carries. Unknown fields are
accepted, as the real endpoint serves other models with other fields.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "ASPECT_RATIOS",
    "MAX_DURATION",
    "MAX_I2V_OR_PRO_DURATION",
    "MIN_DURATION",
    "MODES",
    "submission_error",
]

MODES = ("std", "pro")
MIN_DURATION = 3
MAX_DURATION = 15
MAX_I2V_OR_PRO_DURATION = 10
ASPECT_RATIOS = ("16:9", "9:16", "1:1")


def _is_http_url(value: object) -> bool:
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def submission_error(
    body: Any, url_problem: Callable[[str], str | None] | None = None
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
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return "prompt: required, a non-empty string"
    mode = body.get("mode", "std")
    if mode not in MODES:
        return "mode: must be one of std, pro"
    duration = body.get("duration", 5)
    if not _is_int(duration):
        return "duration: must be an integer (a JSON number, not a string)"
    if not MIN_DURATION <= duration <= MAX_DURATION:
        return f"duration: must be a whole number of seconds from {MIN_DURATION} to {MAX_DURATION}"
    aspect_ratio = body.get("aspect_ratio", "16:9")
    if aspect_ratio not in ASPECT_RATIOS:
        return "aspect_ratio: must be one of 16:9, 9:16, 1:1"
    negative = body.get("negative_prompt")
    if negative is not None and not isinstance(negative, str):
        return "negative_prompt: must be a string"
    images = body.get("image_urls")
    if images is not None:
        if not isinstance(images, list) or not 1 <= len(images) <= 2:
            return "image_urls: must be a list of 1 or 2 URLs"
        if not all(_is_http_url(url) for url in images):
            return "image_urls: every entry must be an http(s) URL"
    last_frame = body.get("last_frame_image")
    if last_frame is not None:
        if not images:
            return "last_frame_image: only valid together with image_urls"
        if not _is_http_url(last_frame):
            return "last_frame_image: must be an http(s) URL"
        if len(images) == 2:
            return "last_frame_image: not allowed with two image_urls (the second is the last)"
    for flag in ("watermark", "audio"):
        if flag in body and body[flag] is not None and not isinstance(body[flag], bool):
            return f"{flag}: must be a boolean"
    if images and duration > MAX_I2V_OR_PRO_DURATION:
        return f"duration: image-to-video supports at most {MAX_I2V_OR_PRO_DURATION} s"
    if mode == "pro" and duration > MAX_I2V_OR_PRO_DURATION:
        return f"duration: pro mode supports at most {MAX_I2V_OR_PRO_DURATION} s"
    if url_problem is not None:
        for field, urls in (("image_urls", images or []), ("last_frame_image", [last_frame])):
            for url in urls:
                problem = url_problem(url) if isinstance(url, str) else None
                if problem is not None:
                    return f"{field}: cannot fetch {url} ({problem})"
    return None
