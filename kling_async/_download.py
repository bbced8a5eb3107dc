"""Streaming a result video to disk: chunked, size-capped, checked, atomic.

The body goes to a hidden temporary file beside the target and is renamed over it only
when complete, so a download cut off part-way never leaves a partial file under the
target name. The API key is never sent (see ``Transport.open_download``).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

from ._exceptions import DownloadError, KlingError
from ._transport import Transport, map_exception

__all__ = ["ExpiredURLError", "looks_like_video", "stream_to_file"]

CHUNK_SIZE = 1 << 16
_BOX_TYPES = (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip")
_EBML = b"\x1a\x45\xdf\xa3"  # WebM / Matroska


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once at import: os.umask can only be read by setting it


class ExpiredURLError(DownloadError):
    """The storage host refused the URL (403/404/410): it expired or was replaced."""


def looks_like_video(head: bytes) -> bool:
    """True if ``head`` starts like an MP4/MOV (ISO box) or a WebM/Matroska file."""
    return head[4:8] in _BOX_TYPES or head.startswith(_EBML)


async def stream_to_file(transport: Transport, url: str, target: Path, *, max_bytes: int) -> int:
    """Download ``url`` to ``target`` atomically; return the number of bytes written."""
    if urlsplit(url).scheme not in ("http", "https"):
        raise DownloadError(f"refusing to download a non-http(s) URL: {url[:80]!r}")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            written = await _copy(transport, url, out, max_bytes)
        os.chmod(tmp_name, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual mode
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    return written


async def _copy(transport: Transport, url: str, out: BinaryIO, max_bytes: int) -> int:
    try:
        async with transport.open_download(url) as response:
            if response.status in (403, 404, 410):
                raise ExpiredURLError(f"storage answered HTTP {response.status}")
            if response.status != 200:
                raise DownloadError(f"storage answered HTTP {response.status}")
            if (response.content_length or 0) > max_bytes:
                raise DownloadError(f"video is larger than the {max_bytes}-byte cap")
            head = b""
            written = 0
            async for chunk in response.content.iter_chunked(CHUNK_SIZE):
                written += len(chunk)
                if written > max_bytes:
                    raise DownloadError(f"video is larger than the {max_bytes}-byte cap")
                if len(head) < 12:
                    head += chunk[: 12 - len(head)]
                    if len(head) >= 12 and not looks_like_video(head):
                        raise DownloadError("the downloaded body does not look like a video")
                out.write(chunk)
            if not looks_like_video(head):
                raise DownloadError("the downloaded body does not look like a video")
            return written
    except KlingError:
        raise
    except Exception as exc:
        raise map_exception(exc) from exc
