"""Request validation against the API's support matrix, and the status enum."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kling_async import ImageToVideo, RequestValidationError, TaskStatus, TextToVideo
from kling_async._convert import request_body
from kling_async._models import ASPECT_RATIOS, DURATIONS, MODES, check_task_id

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
        ({"prompt": "x", "duration": 7}, "duration"),
        ({"prompt": "x", "mode": "pro", "duration": 15}, "duration"),
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
        (([IMG],), {"duration": 15}, "duration"),
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
    if duration not in DURATIONS or mode not in MODES:
        return False
    if mode == "pro" and duration > 10:
        return False
    if images:
        return 1 <= images <= 2 and duration <= 10 and not (last_frame and images != 1)
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
