"""Reading a batch file: one JSON request per line, every bad line found before anything runs.

Each non-blank line is a JSON object with the API's field names, made into a request by
:meth:`VideoRequest.from_fields` (so the library's own rules, and words, judge it). An
``image_urls`` or ``last_frame_image`` entry that is not an ``http(s)://`` URL is a local
image, relative to the batch file's folder: it must exist and be a JPEG, PNG, GIF or WebP
before anything runs, and is uploaded when its line is submitted.

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
from .._models import ImageToVideo, VideoRequest
from .._upload import image_type
from ._options import validation_message

__all__ = ["IMAGE_FIELDS", "BatchFileError", "BatchLine", "canonical_body", "read_batch"]

#: The fields that name images: URLs, or local files.
IMAGE_FIELDS = ("image_urls", "last_frame_image")
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

    @property
    def digest(self) -> str:
        """A short hex id of the identity, used in file names."""
        return hashlib.sha256(self.key.encode()).hexdigest()[:8]

    @property
    def local_images(self) -> tuple[Path, ...]:
        """The images this line uploads before its request is sent."""
        request = self.request
        return request.local_images if isinstance(request, ImageToVideo) else ()

    def filename(self) -> str:
        """The video's file name: line number, prompt words, identity (never collides)."""
        slug = re.sub(r"[^a-z0-9]+", "-", self.request.prompt.lower()).strip("-")[:32]
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
        try:
            request, identity = _request(data, path.parent)
        except RequestValidationError as exc:
            problems.append(f"line {number}: {validation_message(exc)}")
            continue
        digest = hashlib.sha256(identity.encode()).hexdigest()[:32]
        seen[digest] += 1
        lines.append(BatchLine(number, request, f"{digest}.{seen[digest]}"))
    if not problems and not lines:
        problems.append("no requests: the file has no non-blank lines")
    if problems:
        raise BatchFileError(path, problems)
    return lines


def _request(data: Any, folder: Path) -> tuple[VideoRequest, str]:
    """The request a decoded line describes and the body its identity hashes."""
    if not isinstance(data, dict):
        VideoRequest.from_fields(data)  # refuses it in the library's words
    written: dict[Path, str] = {}

    def image(value: Any) -> Any:
        if not isinstance(value, str) or value.lower().startswith(("http://", "https://")):
            return value  # a URL, or something for the library to refuse
        path = folder / value
        written[path] = value
        return path

    fields = dict(data)
    if isinstance(fields.get("image_urls"), list):
        fields["image_urls"] = [image(value) for value in fields["image_urls"]]
    if fields.get("last_frame_image") is not None:
        fields["last_frame_image"] = image(fields["last_frame_image"])
    request = VideoRequest.from_fields(fields)
    if not isinstance(request, ImageToVideo) or not request.local_images:
        return request, canonical_body(request)
    for field in IMAGE_FIELDS:
        values = getattr(request, field)
        for value in values if isinstance(values, tuple) else (values,):
            if isinstance(value, Path):
                _check_image(value, field)

    # The identity names each local image as the line wrote it (not its upload's URL,
    # which differs on every upload), through a stand-in URL that can never be fetched.
    def stand_in(value: Any) -> Any:
        return _WRITTEN_AS + quote(written[value]) if isinstance(value, Path) else value

    as_written = attrs.evolve(
        request,
        image_urls=tuple(stand_in(value) for value in request.image_urls),
        last_frame_image=stand_in(request.last_frame_image),
    )
    return request, canonical_body(as_written)


def _check_image(path: Path, field: str) -> None:
    """Refuse a local image that cannot be read or is not a type the API takes, reading
    only its first bytes (the whole file is read when it is uploaded)."""
    try:
        with path.open("rb") as file:
            head = file.read(16)
    except OSError as exc:
        raise RequestValidationError(
            field, f"cannot read the image: {exc.strerror or exc}", str(path)
        ) from exc
    if image_type(head) is None:
        raise RequestValidationError(
            field, "not a JPEG, PNG, GIF or WebP image (judged by its bytes)", str(path)
        )
