"""Uploading local images, so image-to-video requests can name a file instead of a URL.

``POST /v1/uploads/images`` takes one multipart ``file`` field and answers with a URL
valid for 72 hours. The image type is read from the bytes before anything is sent (JPEG,
PNG, GIF or WebP; anything else is refused naming the file). An upload has no idempotency
key, so it is retried only when it never left (the rule is ``_submission``'s); otherwise
the error says so, and a 413 says the image is too large and how large it is.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import aiohttp

from ._client import ApiClient
from ._config import RetryPolicy
from ._convert import parse_upload
from ._exceptions import ImageTooLargeError, RequestValidationError, TransportError
from ._models import VideoRequest
from ._submission import Outcome, Submission, classify

__all__ = [
    "UPLOAD_PATH",
    "check_image",
    "image_type",
    "read_image",
    "upload_image",
    "with_uploads",
]

UPLOAD_PATH = "/v1/uploads/images"
_SIGNATURES = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


def image_type(head: bytes) -> str | None:
    """The MIME type of an image from its first bytes, if it is JPEG, PNG, GIF or WebP."""
    for signature, mime in _SIGNATURES:
        if head.startswith(signature):
            return mime
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def check_image(path: Path, field: str) -> str:
    """The MIME type of a local image, judged by its first bytes only (the whole file is
    read when it is uploaded); RequestValidationError as :func:`read_image` raises it."""
    try:
        with path.open("rb") as file:
            head = file.read(16)
    except OSError as exc:
        raise _unreadable(path, field, exc) from exc
    return _mime(head, path, field)


async def read_image(path: Path, field: str) -> tuple[bytes, str]:
    """The bytes and MIME type of a local image; RequestValidationError naming ``field``
    and the file if it cannot be read or is not an image the API takes."""
    try:
        data = await asyncio.to_thread(path.read_bytes)
    except OSError as exc:
        raise _unreadable(path, field, exc) from exc
    return data, _mime(data[:16], path, field)


def _unreadable(path: Path, field: str, exc: OSError) -> RequestValidationError:
    return RequestValidationError(field, f"cannot read the image: {exc.strerror or exc}", str(path))


def _mime(head: bytes, path: Path, field: str) -> str:
    mime = image_type(head)
    if mime is None:
        raise RequestValidationError(
            field, "not a JPEG, PNG, GIF or WebP image (judged by its bytes)", str(path)
        )
    return mime


def _size(count: int) -> str:
    return f"{count / 1024**2:.1f} MB" if count >= 1024**2 else f"{count / 1024:.0f} KB"


async def upload_image(
    client: ApiClient,
    policy: RetryPolicy,
    path: str | os.PathLike[str],
    *,
    field: str = "path",
    image: tuple[bytes, str] | None = None,
) -> str:
    """Upload one local image; return the URL to use in ``image_urls``."""
    path = Path(path)
    data, mime = image if image is not None else await read_image(path, field)
    form = aiohttp.MultipartWriter("form-data")
    part = form.append(data, {"Content-Type": mime})
    part.set_content_disposition("form-data", name="file", filename=path.name)
    body = await form.as_bytes()

    async def send() -> str:
        reply = await client.call(
            "POST", UPLOAD_PATH, body=body, content_type=form.content_type, paid=True
        )
        return parse_upload(reply.payload)

    try:
        return await Submission(policy, keyed=False).send(send, "upload")
    except ImageTooLargeError as exc:
        raise ImageTooLargeError(
            exc.status,
            exc.code,
            f"image too large: {path.name} is {_size(len(data))} ({len(data)} bytes)",
            request_id=exc.request_id,
        ) from exc
    except TransportError as exc:
        if classify(exc) is not Outcome.UNKNOWN:
            raise
        raise type(exc)(
            f"{exc}; the upload of {path.name} may or may not have been stored, and is not "
            "retried (uploads have no idempotency key)"
        ) from exc


async def with_uploads(
    client: ApiClient, policy: RetryPolicy, request: VideoRequest
) -> VideoRequest:
    """``request`` with its local images uploaded and replaced by their URLs (as it is, if
    it has none). Every image is read and checked before the first upload, so a bad one
    sends nothing."""
    found = list(request.image_fields())
    if not found:
        return request
    local = {path: await read_image(path, field) for field, path in found}
    urls: dict[Path, str] = {}
    for path, image in local.items():
        urls[path] = await upload_image(client, policy, path, image=image)
    return request.with_image_urls(urls)
