"""Reading a batch file: one JSON request per line, every bad line found before anything runs.

Each non-blank line is a JSON object with the API's field names, made into a request by
:meth:`VideoRequest.from_fields` (so the library's own rules, and words, judge it): a
kling-v3 line is typed (``multi_prompt``, ``shot_type``, ``multi_shot`` included), and its
keys the SDK does not model are sent as extra fields (:func:`unknown_fields_note` warns of
them, naming any field they may be a typo of); a line naming another model is sent as
written. An ``image_urls`` or ``last_frame_image`` entry that is not an ``http(s)://`` URL
is a local image, relative to the batch file's folder: it must exist and be a JPEG, PNG,
GIF or WebP before anything runs, and is uploaded when its line is submitted.

A line's identity (:attr:`BatchLine.key`) is the hash of its canonical request body (local
images as written in the file) plus its occurrence among identical lines, not its line
number: inserting or reordering lines never makes the journal think a finished job is new
(which would pay for it twice), while an edited line is a new job.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote

import attrs

from .._convert import request_body
from .._exceptions import RequestValidationError
from .._models import (
    FIELDS,
    KLING_V3,
    KlingV3Request,
    VideoRequest,
    close_field,
    unknown_field_hint,
)
from .._upload import check_image
from ._errors import validation_message
from ._images import image_arg

__all__ = [
    "BatchFileError",
    "BatchLine",
    "canonical_body",
    "read_batch",
    "unknown_fields_note",
]

_WRITTEN_AS = "https://local-file.invalid/"  # the stand-in URL of a local image in an identity


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
    """The request; local images are paths (relative to the batch file's folder)."""
    key: str
    """Stable identity: hash of the canonical body and the occurrence among identical lines."""
    unknown_fields: tuple[str, ...] = ()
    """The line's keys kling-v3 does not model, sent as extra fields."""

    @property
    def digest(self) -> str:
        """A short hex id of the identity, used in file names."""
        return hashlib.sha256(self.key.encode()).hexdigest()[:8]

    @property
    def local_images(self) -> tuple[Path, ...]:
        """The images this line uploads before its request is sent."""
        return self.request.local_images

    def filename(self) -> str:
        """The video's file name: line number, prompt words (of its first shot, without a
        prompt), identity (never collides)."""
        request = self.request
        words = request.prompt
        if words is None and isinstance(request, KlingV3Request) and request.multi_prompt:
            words = request.multi_prompt[0].prompt
        slug = re.sub(r"[^a-z0-9]+", "-", (words or "").lower()).strip("-")[:32]
        return f"{self.number:04d}-{slug.rstrip('-') or 'video'}-{self.digest}.mp4"


def canonical_body(request: VideoRequest) -> str:
    """The request's JSON body as one canonical string (defaults filled in, keys sorted)."""
    return json.dumps(
        request_body(request), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )


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
        unknown = _unknown_fields(data)
        try:
            request, identity = _request(data, path.parent)
        except RequestValidationError as exc:
            hints = "".join(f"; {key}: {unknown_field_hint(key)}" for key in unknown)
            problems.append(f"line {number}: {validation_message(exc)}{hints}")
            continue
        digest = hashlib.sha256(identity.encode()).hexdigest()[:32]
        seen[digest] += 1
        lines.append(BatchLine(number, request, f"{digest}.{seen[digest]}", unknown))
    if not problems and not lines:
        problems.append("no requests: the file has no non-blank lines")
    if problems:
        raise BatchFileError(path, problems)
    return lines


def _unknown_fields(data: Any) -> tuple[str, ...]:
    """The keys of a kling-v3 line the SDK does not model (a line naming another model has
    none: all its fields are that model's)."""
    if not isinstance(data, dict) or data.get("model", KLING_V3) not in (KLING_V3, None):
        return ()
    return tuple(str(key) for key in data if key not in FIELDS)


def unknown_fields_note(lines: list[BatchLine]) -> str | None:
    """One warning naming every field the lines send without the SDK knowing it, with the
    lines using it and the field each may be a typo of; None if there are none."""
    where: dict[str, list[int]] = {}
    for line in lines:
        for key in line.unknown_fields:
            where.setdefault(key, []).append(line.number)
    if not where:
        return None
    parts = []
    for key, numbers in where.items():
        shown = ", ".join(map(str, numbers[:5])) + (", ..." if len(numbers) > 5 else "")
        close = close_field(key)
        hint = f"; did you mean {close!r}?" if close else ""
        parts.append(f"{key!r} (line{'s' if len(numbers) > 1 else ''} {shown}{hint})")
    return "fields the SDK does not check are sent as given (the server decides): " + ", ".join(
        parts
    )


def _request(data: Any, folder: Path) -> tuple[VideoRequest, str]:
    """The request a decoded line describes and the body its identity hashes."""
    if not isinstance(data, dict):
        VideoRequest.from_fields(data)  # refuses it in the library's words
    written: dict[Path, str] = {}

    def image(value: Any) -> Any:
        if not isinstance(value, str):
            return value  # for the library to refuse
        named = image_arg(value, folder)
        if isinstance(named, Path):
            written[named] = value
        return named

    fields = dict(data)
    if isinstance(fields.get("image_urls"), list):
        fields["image_urls"] = [image(value) for value in fields["image_urls"]]
    if fields.get("last_frame_image") is not None:
        fields["last_frame_image"] = image(fields["last_frame_image"])
    request = VideoRequest.from_fields(fields, unknown="send")
    if not request.local_images:
        return request, canonical_body(request)
    for field, path in request.image_fields():
        check_image(path, field)
    # The identity names each local image as the line wrote it (not its upload's URL,
    # which differs on every upload), through a stand-in URL that can never be fetched.
    as_written = request.with_image_urls(
        {path: _WRITTEN_AS + quote(value) for path, value in written.items()}
    )
    return request, canonical_body(as_written)
