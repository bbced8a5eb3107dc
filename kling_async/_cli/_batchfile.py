"""Reading a batch file: one JSON request per line, every bad line found before anything runs.

Each non-blank line is a JSON object with the API's field names. A line becomes a
:class:`TextToVideo`, or an :class:`ImageToVideo` when it has ``image_urls``, so the
SDK's validators name the field and the rule that a bad line breaks.

A line's identity (:attr:`BatchLine.key`) is the hash of its canonical request body plus
its occurrence among identical lines, not its line number: inserting or reordering lines
never makes the journal think a finished job is new (which would pay for it twice), while
an edited line is a new job.
"""

from __future__ import annotations

import codecs
import difflib
import hashlib
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import attrs

from .._convert import request_body
from .._exceptions import RequestValidationError
from .._models import ImageToVideo, TextToVideo, VideoRequest

__all__ = ["FIELDS", "BatchFileError", "BatchLine", "parse_request", "read_batch"]

#: The request fields a line may have: the API's own names.
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


class BatchFileError(Exception):
    """The batch file cannot be used; ``problems`` lists every reason, one per bad line."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__(f"{path}: " + "; ".join(problems))


@attrs.frozen
class BatchLine:
    """One valid request of a batch file."""

    number: int
    """1-based line number in the file."""
    request: VideoRequest
    body: str
    """The canonical JSON body sent for this line (defaults filled in, keys sorted)."""
    key: str
    """Stable identity: hash of ``body`` and the occurrence among identical lines."""

    @property
    def digest(self) -> str:
        """A short hex id of the identity, used in file names."""
        return hashlib.sha256(self.key.encode()).hexdigest()[:8]

    def filename(self) -> str:
        """The video's file name: line number, prompt words, identity (never collides)."""
        slug = re.sub(r"[^a-z0-9]+", "-", self.request.prompt.lower()).strip("-")[:32]
        return f"{self.number:04d}-{slug.rstrip('-') or 'video'}-{self.digest}.mp4"


def parse_request(data: Any) -> VideoRequest:
    """The request a decoded JSON line describes; ValueError says what is wrong with it."""
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object with request fields, got {_json_type(data)}")
    unknown = [key for key in data if key not in FIELDS]
    if unknown:
        named = ", ".join(_unknown(key) for key in unknown)
        raise ValueError(f"unknown field {named}; the fields are: {', '.join(FIELDS)}")
    fields = {key: value for key, value in data.items() if value is not None}
    if "prompt" not in fields:
        raise ValueError("prompt: required, a non-empty string")
    if "image_urls" in fields:
        return ImageToVideo(**fields)
    if "last_frame_image" in fields:
        raise ValueError("last_frame_image: only valid together with image_urls (image-to-video)")
    return TextToVideo(**fields)


def read_batch(path: Path) -> list[BatchLine]:
    """Every request in ``path``; raise BatchFileError listing every bad line."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BatchFileError(path, [f"cannot read the file: {exc.strerror or exc}"]) from exc
    problems: list[str] = []
    lines: list[BatchLine] = []
    seen: Counter[str] = Counter()
    for number, chunk in enumerate(raw.splitlines(), 1):
        if number == 1:
            chunk = chunk.removeprefix(codecs.BOM_UTF8)
        try:
            text = chunk.decode("utf-8")
        except UnicodeDecodeError:
            problems.append(f"line {number}: not UTF-8 text")
            continue
        if not text.strip():
            continue
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            problems.append(f"line {number}: not valid JSON: {exc.msg} (column {exc.colno})")
            continue
        except RecursionError:
            problems.append(f"line {number}: not valid JSON: nested too deeply")
            continue
        try:
            request = parse_request(data)
        except RequestValidationError as exc:
            problems.append(f"line {number}: {exc}")
            continue
        except (ValueError, TypeError) as exc:
            problems.append(f"line {number}: {exc}")
            continue
        body = json.dumps(
            request_body(request), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
        digest = hashlib.sha256(body.encode()).hexdigest()[:32]
        seen[digest] += 1
        lines.append(BatchLine(number, request, body, f"{digest}.{seen[digest]}"))
    if not problems and not lines:
        problems.append("no requests: the file has no non-blank lines")
    if problems:
        raise BatchFileError(path, problems)
    return lines


def _unknown(key: str) -> str:
    close = difflib.get_close_matches(key, FIELDS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{key!r}{hint}"


def _json_type(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", int: "a number"}
    return names.get(type(value), "a number" if isinstance(value, float) else "null")
