"""Image uploads (API.md §4): `POST /v1/uploads/images`, served back from the storage host.

The request is ``multipart/form-data`` with one ``file`` field. The type is detected
from the bytes, never from the file name or the part's header: JPEG (``FF D8 FF``), PNG
(its 8-byte signature), GIF (``GIF87a`` / ``GIF89a``) or WebP (``RIFF....WEBP``); other
bytes get 400, a file over ``max_upload_bytes`` gets 413. The stored image is served at
a signed storage-host URL until it expires (``url_ttl``, 72 emulated hours).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import attrs
from aiohttp import BodyPartReader, web

from ._signing import UrlSigner

__all__ = ["Upload", "UploadError", "UploadStore", "read_upload", "sniff_image"]

_CHUNK = 64 * 1024
_TYPES = {
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/gif": ".gif",
    "image/webp": ".webp",
}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
UPLOADS_PATH = "/uploads"


def sniff_image(data: bytes) -> str | None:
    """The content type of an image detected from its first bytes, or None."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if len(data) >= 12 and data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "image/webp"
    return None


class UploadError(Exception):
    """Why an upload is refused: an HTTP status and a "file: <rule>" message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def read_upload(request: web.Request, limit: int) -> tuple[bytes, str | None]:
    """The bytes and file name of the request's ``file`` field; UploadError if refused.

    Reads at most `limit` + 1 bytes of the file, so an oversized upload costs little.
    """
    if request.content_type != "multipart/form-data":
        raise UploadError(400, "file: send multipart/form-data with one 'file' field")
    try:
        reader = await request.multipart()
        while True:
            part = await reader.next()
            if part is None:
                raise UploadError(400, "file: required (a multipart field named 'file')")
            if isinstance(part, BodyPartReader) and part.name == "file":
                break
            if isinstance(part, BodyPartReader):
                await part.release()
        data = bytearray()
        while chunk := await part.read_chunk(_CHUNK):
            data.extend(chunk)
            if len(data) > limit:
                raise UploadError(413, f"file: larger than the {limit} bytes allowed")
    except ValueError as exc:  # a malformed multipart body
        raise UploadError(400, f"file: malformed multipart body ({exc})") from exc
    return bytes(data), part.filename


def _safe_name(filename: str | None, upload_id: str, extension: str) -> str:
    if filename:
        name = _UNSAFE.sub("_", filename.replace("\\", "/").rsplit("/", 1)[-1]).strip("._")
        if name:
            return name[:100]
    return upload_id + extension


@attrs.frozen
class Upload:
    """A stored image; times are real unix seconds."""

    upload_id: str
    data: bytes = attrs.field(repr=False)
    content_type: str
    filename: str
    created: float
    expires_at: float

    @property
    def extension(self) -> str:
        """The file extension of its detected type (".jpg", ".png", ...)."""
        return _TYPES[self.content_type]


class UploadStore:
    """Uploaded images by id, and their signed storage-host URLs."""

    __slots__ = ("_signer", "_uploads")

    def __init__(self, signer: UrlSigner) -> None:
        self._signer = signer
        self._uploads: dict[str, Upload] = {}

    def __len__(self) -> int:
        return len(self._uploads)

    def add(
        self, upload_id: str, data: bytes, filename: str | None, now: float, ttl: float
    ) -> Upload:
        """Store `data` (already checked with `sniff_image`) until `now + ttl`."""
        content_type = sniff_image(data)
        if content_type is None:
            raise ValueError("not an image")
        upload = Upload(
            upload_id=upload_id,
            data=data,
            content_type=content_type,
            filename=_safe_name(filename, upload_id, _TYPES[content_type]),
            created=now,
            expires_at=now + ttl,
        )
        self._uploads[upload_id] = upload
        return upload

    def url(self, base: str, upload: Upload) -> str:
        """The signed storage-host URL of `upload`."""
        token = self._signer.mint(upload.upload_id, upload.expires_at)
        return f"{base}{UPLOADS_PATH}/{upload.upload_id}/{token}{upload.extension}"

    def find(self, upload_id: str, file_name: str) -> tuple[Upload, float] | None:
        """The upload a URL's last two path segments name, and its signed expiry; None if bogus."""
        upload = self._uploads.get(upload_id)
        if upload is None or not file_name.endswith(upload.extension):
            return None
        expires_at = self._signer.expiry(upload_id, file_name.removesuffix(upload.extension))
        if expires_at is None:
            return None
        return upload, expires_at

    def url_problem(self, base: str, url: str, now: float) -> str | None:
        """Why the server could not fetch `url`, if it points at an upload of ours; else None."""
        if not base or not url.startswith(base + UPLOADS_PATH + "/"):
            return None
        segments = urlsplit(url).path.split("/")
        found = self.find(segments[-2], segments[-1]) if len(segments) >= 4 else None
        if found is None:
            return "no such uploaded image"
        if now >= found[1]:
            return "the uploaded image's URL has expired"
        return None
