"""What counts as a video, and where a video may be saved."""

from __future__ import annotations

import pytest

from kling_async import DownloadError
from kling_async._download import check_target, looks_like_video


def test_video_signatures():
    """MP4/MOV boxes and WebM magic look like video; HTML and JSON do not."""
    assert looks_like_video(b"\x00\x00\x00\x20ftypisom\x00\x00")
    assert looks_like_video(b"\x1a\x45\xdf\xa3\x01\x00\x00\x00\x00\x00\x00\x00")
    assert not looks_like_video(b"<!DOCTYPE html><html>")
    assert not looks_like_video(b'{"code": 403}')


def test_a_folder_in_the_files_place_is_refused_before_downloading(tmp_path):
    """A directory where the video should go, or a file where its folder should be, is a
    DownloadError before anything is fetched."""
    (tmp_path / "taken").mkdir()
    with pytest.raises(DownloadError, match="is a directory"):
        check_target(tmp_path / "taken")
    (tmp_path / "plain").write_text("x")
    with pytest.raises(DownloadError, match="cannot save"):
        check_target(tmp_path / "plain" / "video.mp4")
    check_target(tmp_path / "new" / "deep" / "video.mp4")
    assert (tmp_path / "new" / "deep").is_dir()
