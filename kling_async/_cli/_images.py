"""Images as a user names them, on the command line or in a batch file: an ``http(s)://``
URL is sent as is, anything else is a local file, uploaded first (and checked by the
core's ``_upload`` before anything is sent)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["IMAGE_FIELDS", "image_arg"]

IMAGE_FIELDS = ("image_urls", "last_frame_image")
"""The request fields that name images: URLs, or local files."""


def image_arg(value: str, folder: Path | None = None) -> str | Path:
    """An image as written: an http(s) URL as is, anything else a local file (relative to
    ``folder`` when given)."""
    if value.lower().startswith(("http://", "https://")):
        return value
    return Path(value) if folder is None else folder / value
