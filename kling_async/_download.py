"""Streaming a result video to disk: chunked, size-capped, checked, atomic.

The body goes to a hidden temporary file beside the target and is renamed over it only
when complete, so a download cut off part-way never leaves a partial file under the
target name. The API key is never sent (``Transport.download`` carries no credentials).
A URL that expired (or is about to), or that the storage host refuses, is replaced once
by a fresh one (:func:`save_video`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

from ._config import SessionConfig
from ._exceptions import DownloadError
from ._models import VideoResult
from ._retry import is_transient, retrying
from ._telemetry import telemetry
from ._transport import DownloadStream, Transport

__all__ = ["ExpiredURLError", "check_target", "looks_like_video", "save_video", "stream_to_file"]

logger = logging.getLogger("kling_async")

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


def check_target(target: Path) -> None:
    """Make sure a video can be saved at ``target`` before fetching it: its folder exists
    (created if needed) and nothing that is not a file stands in its place."""
    try:
        if target.is_dir():
            raise DownloadError(f"cannot save to {target}: it is a directory")
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot save to {target}: {exc.strerror or exc}") from exc


async def stream_to_file(
    transport: Transport,
    url: str,
    target: Path,
    *,
    max_bytes: int,
    timeout: float,
    read_timeout: float,
) -> int:
    """Download ``url`` to ``target`` atomically; return the number of bytes written.

    Local failures (a full disk, a folder where the file goes) are DownloadErrors too.
    """
    if urlsplit(url).scheme not in ("http", "https"):
        raise DownloadError("refusing to download a result URL that is not http(s)")
    check_target(target)
    try:
        fd, tmp_name = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name}.", suffix=".part"
        )
    except OSError as exc:
        raise DownloadError(f"cannot save to {target}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "wb") as out:
            async with transport.download(
                url, timeout=timeout, read_timeout=read_timeout
            ) as response:
                written = await _copy(response, out, max_bytes)
        os.chmod(tmp_name, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual mode
        os.replace(tmp_name, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        if isinstance(exc, OSError):
            raise DownloadError(f"cannot save to {target}: {exc.strerror or exc}") from exc
        raise
    return written


async def save_video(
    transport: Transport,
    config: SessionConfig,
    result: VideoResult,
    target: Path,
    index: int,
    fresh: Callable[[str], Awaitable[VideoResult]],
) -> Path:
    """Stream video ``index`` of ``result`` to ``target`` (transient errors retried by the
    session's policy); an expired or refused URL is replaced once by ``fresh(task_id)``.
    Traced as one ``kling.download`` span."""
    trace = telemetry().download(result.task_id, result.videos[index].url)
    try:
        size = await _save(transport, config, result, target, index, fresh)
    except BaseException as exc:
        trace.finished(None, exc)
        raise
    trace.finished(size)
    return target


async def _save(
    transport: Transport,
    config: SessionConfig,
    result: VideoResult,
    target: Path,
    index: int,
    fresh: Callable[[str], Awaitable[VideoResult]],
) -> int:
    download = retrying(config.retry, is_transient)(stream_to_file)
    refreshed = False
    expires_at = result.videos[index].expires_at
    if expires_at is not None and expires_at <= time.time() + 5:
        result, refreshed = await _fresh(fresh, result.task_id), True
    while True:
        try:
            size = await download(
                transport,
                result.videos[index].url,
                target,
                max_bytes=config.max_download_bytes,
                timeout=config.download_timeout,
                read_timeout=config.request_timeout,
            )
        except ExpiredURLError:
            if refreshed:
                raise
            result, refreshed = await _fresh(fresh, result.task_id), True
            continue
        logger.info(
            "downloaded %s (%d bytes) to %s",
            result.task_id,
            size,
            target,
            extra={"task_id": result.task_id, "bytes": size},
        )
        return size


async def _fresh(fresh: Callable[[str], Awaitable[VideoResult]], task_id: str) -> VideoResult:
    logger.info(
        "result URL of %s expired or refused; fetching a fresh one",
        task_id,
        extra={"task_id": task_id},
    )
    return await fresh(task_id)


async def _copy(response: DownloadStream, out: BinaryIO, max_bytes: int) -> int:
    if response.status in (403, 404, 410):
        raise ExpiredURLError(f"storage answered HTTP {response.status}")
    if response.status != 200:
        raise DownloadError(f"storage answered HTTP {response.status}")
    if (response.content_length or 0) > max_bytes:
        raise DownloadError(f"video is larger than the {max_bytes}-byte cap")
    head = b""
    written = 0
    async for chunk in response.iter_chunks(CHUNK_SIZE):
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
