"""Request validation against the API's support matrix, and the status enum."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kling_async import (
    ImageToVideo,
    RequestValidationError,
    TaskStatus,
    TextToVideo,
    VideoRequest,
)
from kling_async._convert import request_body
from kling_async._models import ASPECT_RATIOS, MAX_DURATION, MIN_DURATION, MODES, check_task_id

IMG = "https://example.com/cat.jpg"


def test_defaults_match_the_api():
    """A bare TextToVideo asks for kling-v3, std, 5 s, 16:9."""
    req = TextToVideo("a cat")
    assert (req.model, req.mode, req.duration, req.aspect_ratio) == ("kling-v3", "std", 5, "16:9")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": None}, "prompt"),
        ({"prompt": "x", "mode": "ultra"}, "mode"),
        ({"prompt": "x", "aspect_ratio": "4:3"}, "aspect_ratio"),
        ({"prompt": "x", "duration": "5"}, "duration"),
        ({"prompt": "x", "duration": 5.0}, "duration"),
        ({"prompt": "x", "duration": True}, "duration"),
        ({"prompt": "x", "duration": 2}, "duration"),
        ({"prompt": "x", "duration": 16}, "duration"),
        ({"prompt": "x", "mode": "pro", "duration": 11}, "duration"),
        ({"prompt": "x", "audio": "yes"}, "audio"),
        ({"prompt": "x", "watermark": 1}, "watermark"),
        ({"prompt": "x", "negative_prompt": 3}, "negative_prompt"),
        ({"prompt": "x", "model": ""}, "model"),
    ],
)
def test_text_to_video_rejects_bad_fields(kwargs, field):
    """Each broken rule raises RequestValidationError naming its field."""
    prompt = kwargs.pop("prompt")
    with pytest.raises(RequestValidationError) as info:
        TextToVideo(prompt, **kwargs)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")


@pytest.mark.parametrize(
    ("args", "kwargs", "field"),
    [
        (([],), {}, "image_urls"),
        (([IMG, IMG, IMG],), {}, "image_urls"),
        ((IMG,), {}, "image_urls"),
        ((["ftp://example.com/a.jpg"],), {}, "image_urls"),
        ((["file:///etc/passwd"],), {}, "image_urls"),
        (([IMG],), {"duration": 11}, "duration"),
        (([IMG, IMG],), {"last_frame_image": IMG}, "last_frame_image"),
        (([IMG],), {"last_frame_image": "not a url"}, "last_frame_image"),
    ],
)
def test_image_to_video_rejects_bad_fields(args, kwargs, field):
    """Image rules: 1-2 http(s) URLs, at most 10 s, last frame only with one image."""
    with pytest.raises(RequestValidationError) as info:
        ImageToVideo("x", *args, **kwargs)
    assert info.value.field == field


def test_validation_error_is_a_value_error():
    """RequestValidationError can be caught as ValueError."""
    with pytest.raises(ValueError, match="mode: must be one of std, pro"):
        TextToVideo("x", mode="hd")


def test_unknown_keyword_is_a_type_error():
    """An unknown option is a TypeError, as for any Python call."""
    with pytest.raises(TypeError):
        TextToVideo("x", fps=30)  # type: ignore[call-arg]


def test_requests_are_frozen():
    """Requests cannot be changed after validation."""
    req = TextToVideo("x")
    with pytest.raises(AttributeError):
        req.duration = 15  # type: ignore[misc]


def test_image_urls_list_becomes_tuple():
    """A list of URLs is stored as a tuple (hashable, immutable)."""
    assert ImageToVideo("x", [IMG]).image_urls == (IMG,)


def test_body_matches_worked_examples():
    """The bodies equal the API reference's worked examples; unset options are omitted."""
    assert request_body(
        TextToVideo("a time-lapse of a flower blooming in a garden", duration=15)
    ) == {
        "model": "kling-v3",
        "prompt": "a time-lapse of a flower blooming in a garden",
        "mode": "std",
        "duration": 15,
        "aspect_ratio": "16:9",
    }
    body = request_body(
        ImageToVideo(
            "smooth cinematic transition",
            ["https://example.com/frame-start.jpg"],
            last_frame_image="https://example.com/frame-end.jpg",
            audio=True,
        )
    )
    assert body["image_urls"] == ["https://example.com/frame-start.jpg"]
    assert body["last_frame_image"] == "https://example.com/frame-end.jpg"
    assert body["audio"] is True
    assert "negative_prompt" not in body and "watermark" not in body
    assert type(body["duration"]) is int


def _allowed(mode: str, duration: int, images: int, last_frame: bool) -> bool:
    if not MIN_DURATION <= duration <= MAX_DURATION or mode not in MODES:
        return False
    if mode == "pro" and duration > 10:
        return False
    if images:  # 4k's limits are not documented beyond 3-15 s: the i2v 10 s cap is not applied
        i2v_cap = mode == "4k" or duration <= 10
        return 1 <= images <= 2 and i2v_cap and not (last_frame and images != 1)
    return not last_frame


@given(
    mode=st.sampled_from([*MODES, "hd", ""]),
    duration=st.one_of(st.integers(-1, 20), st.sampled_from(["5", 5.0, None])),
    ratio=st.sampled_from([*ASPECT_RATIOS, "4:3"]),
    images=st.integers(0, 3),
    last_frame=st.booleans(),
)
def test_validation_follows_the_support_matrix(mode, duration, ratio, images, last_frame):
    """Construction succeeds exactly for the support matrix, and a success serialises an int."""
    kwargs = {"mode": mode, "duration": duration, "aspect_ratio": ratio}
    ok = (
        type(duration) is int
        and ratio in ASPECT_RATIOS
        and _allowed(mode, duration, images, last_frame)
    )
    try:
        if images or last_frame:
            req = ImageToVideo(
                "p", [IMG] * images, last_frame_image=IMG if last_frame else None, **kwargs
            )
        else:
            req = TextToVideo("p", **kwargs)
    except RequestValidationError as exc:
        assert not ok, exc
        assert exc.field in {"mode", "duration", "aspect_ratio", "image_urls", "last_frame_image"}
    else:
        assert ok
        body = request_body(req)
        assert type(body["duration"]) is int and body["mode"] == mode


@given(st.text())
def test_task_ids_never_carry_path_characters(text):
    """A task id is accepted only if it cannot change the URL it is put into."""
    try:
        check_task_id(text)
    except RequestValidationError:
        return
    assert not set(text) & set("/?#%\\ \t\n") and ".." not in text


def test_status_tolerates_unknown_values():
    """Unknown statuses become UNKNOWN (non-terminal); known ones ignore case."""
    assert TaskStatus("mystery") is TaskStatus.UNKNOWN
    assert TaskStatus("COMPLETED") is TaskStatus.COMPLETED
    assert not TaskStatus.UNKNOWN.is_terminal
    assert {s for s in TaskStatus if s.is_terminal} == {"completed", "failed", "cancelled"}


@pytest.mark.parametrize("duration", range(3, 16))
def test_any_whole_duration_from_3_to_15_seconds_is_accepted(duration):
    """Text-to-video takes 3-15 s; image-to-video and pro mode at most 10 s."""
    assert TextToVideo("x", duration=duration).duration == duration
    for build in (
        lambda: ImageToVideo("x", [IMG], duration=duration),
        lambda: TextToVideo("x", mode="pro", duration=duration),
    ):
        if duration <= 10:
            assert build().duration == duration
        else:
            with pytest.raises(RequestValidationError, match="up to 10 seconds"):
                build()


def test_from_fields_picks_the_request_kind_and_treats_null_as_unset():
    """`image_urls` makes an image-to-video request; None fields are left at their defaults."""
    t2v = VideoRequest.from_fields({"prompt": "a cat", "duration": 10, "audio": None})
    assert type(t2v) is TextToVideo and t2v.duration == 10 and t2v.audio is None
    i2v = VideoRequest.from_fields({"prompt": "walk", "image_urls": [IMG], "mode": "pro"})
    assert type(i2v) is ImageToVideo and i2v.image_urls == (IMG,)


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"prompt": "x", "duraton": 5}, "duraton", "did you mean 'duration'"),
        ({"prompt": "x", "colour": "red"}, "colour", "unknown field"),
        ({"duration": 5}, "prompt", "required"),
        ({"prompt": "x", "last_frame_image": IMG}, "last_frame_image", "image_urls"),
        ({"prompt": "x", "duration": "5"}, "duration", "integer"),
        (["prompt"], "request", "object"),
    ],
)
def test_from_fields_names_the_field_of_every_problem(fields, field, words):
    """Unknown fields, a missing prompt and broken rules are errors naming the field."""
    with pytest.raises(RequestValidationError, match=words) as info:
        VideoRequest.from_fields(fields)
    assert info.value.field == field


def test_local_images_are_paths_checked_to_exist(tmp_path):
    """An image given as a Path must be an existing file; a string must be an http(s) URL."""
    image = tmp_path / "cat.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n")
    request = ImageToVideo("walk", [image], last_frame_image=str(IMG))
    assert request.image_urls == (image,) and request.local_images == (image,)
    with pytest.raises(RequestValidationError, match="no such file") as info:
        ImageToVideo("walk", [tmp_path / "missing.png"])
    assert info.value.field == "image_urls"
    with pytest.raises(RequestValidationError, match=r"pathlib\.Path"):
        ImageToVideo("walk", ["cat.png"])
    with pytest.raises(ValueError, match="uploads it first"):
        request_body(request)


def test_a_local_last_frame_is_a_path_too(tmp_path):
    """`last_frame_image` may also name a local file."""
    frame = tmp_path / "end.jpg"
    frame.write_bytes(b"\xff\xd8\xff\xe0")
    request = ImageToVideo("walk", [IMG], last_frame_image=frame)
    assert request.last_frame_image == frame and request.local_images == (frame,)
    assert isinstance(request.last_frame_image, Path)


def test_a_long_value_in_an_error_keeps_both_ends():
    """A long value (a path, say) is shown by its start and its end, where names are."""
    path = "/very/long/directory/" * 5 + "the-image-that-matters.webp"
    error = RequestValidationError("image_urls", "no such file", path)
    assert str(error).endswith("the-image-that-matters.webp')")
    assert "/very/long" in str(error) and len(str(error)) < 120
