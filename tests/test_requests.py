"""Requests as the API is today (API.md section 5): 4k, multi-shot with typed shots, any
model as a generic request, and extra fields on every request; each checked for what the
provider documents, before anything is sent, and nothing more."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import attrs
import pytest

from kling_async import (
    GenericRequest,
    ImageToVideo,
    RequestValidationError,
    Shot,
    TextToVideo,
    VideoRequest,
)
from kling_async._convert import request_body

IMG = "https://example.com/cat.jpg"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
TWO_SHOTS = [Shot("a seed in the soil", 4), Shot("it blooms", 6)]


def refused(build: Any) -> RequestValidationError:
    """The validation error ``build()`` raises."""
    with pytest.raises(RequestValidationError) as info:
        build()
    return info.value


# -- 4k ------------------------------------------------------------------------------------


def test_4k_takes_3_to_15_seconds_in_both_request_kinds():
    """mode "4k" is kling-v3's third mode: 3-15 s, image-to-video too (no 4k limit is
    documented beyond the general one); pro keeps its 10 s cap."""
    assert request_body(TextToVideo("a cat", mode="4k", duration=15))["mode"] == "4k"
    assert ImageToVideo("the cat walks", [IMG], mode="4k", duration=15).duration == 15
    assert refused(lambda: TextToVideo("a cat", mode="4k", duration=16)).field == "duration"
    assert "pro mode" in str(refused(lambda: TextToVideo("x", mode="pro", duration=11)))
    error = refused(lambda: TextToVideo("a cat", mode="8k"))
    assert str(error).startswith("mode: must be one of std, pro, 4k")


# -- multi-shot ----------------------------------------------------------------------------


def test_shots_mean_customize_and_are_sent_numbered_from_1():
    """Shots without a shot_type are "customize" and turn multi_shot on; they replace the
    prompt, which may be left out, and go out as multi_prompt numbered 1, 2, ..."""
    story = TextToVideo(duration=10, multi_prompt=TWO_SHOTS)
    assert (story.shot_type, story.multi_shot, story.prompt) == ("customize", True, None)
    body = request_body(story)
    assert "prompt" not in body
    assert body["multi_shot"] is True and body["shot_type"] == "customize"
    assert body["multi_prompt"] == [
        {"index": 1, "prompt": "a seed in the soil", "duration": 4},
        {"index": 2, "prompt": "it blooms", "duration": 6},
    ]
    intelligent = TextToVideo("a day in a harbour town", shot_type="intelligence")
    assert request_body(intelligent)["multi_shot"] is True
    assert "multi_prompt" not in request_body(intelligent)
    plain = request_body(TextToVideo("a cat"))
    assert not {"multi_shot", "shot_type", "multi_prompt"} & set(plain)  # unchanged body


@pytest.mark.parametrize(
    ("kwargs", "field", "words"),
    [
        ({"multi_prompt": TWO_SHOTS, "multi_shot": False}, "multi_shot", "is False"),
        ({"multi_prompt": TWO_SHOTS, "shot_type": "intelligence"}, "multi_prompt", "customize"),
        ({"prompt": "x", "multi_shot": True}, "shot_type", "required when multi_shot"),
        ({"prompt": "x", "shot_type": "customize"}, "multi_prompt", "1 to 6 shots"),
        ({"shot_type": "intelligence"}, "prompt", "required"),
        ({"prompt": "x", "shot_type": "auto"}, "shot_type", "customize, intelligence"),
        ({"multi_prompt": [Shot("s", 1)] * 7, "duration": 7}, "multi_prompt", "at most 6"),
        ({"multi_prompt": [Shot("x" * 513, 5)]}, "multi_prompt[1].prompt", "512 characters"),
        ({"multi_prompt": [Shot("a", 2), Shot("b", 6)]}, "multi_prompt[2].duration", "at most"),
        ({"multi_prompt": TWO_SHOTS, "duration": 9}, "multi_prompt", "set duration=10"),
        ({"multi_prompt": [{"prompt": "a", "duration": 0}]}, "multi_prompt[1].duration", "1"),
        ({"multi_prompt": [{"prompt": " ", "duration": 5}]}, "multi_prompt[1].prompt", "non-empty"),
        ({"multi_prompt": [{"prompt": "a", "duration": "5"}]}, "multi_prompt[1].duration", "whole"),
        ({"multi_prompt": [{"prompt": "a", "seconds": 5}]}, "multi_prompt[1].seconds", "unknown"),
        ({"multi_prompt": ["a:5"]}, "multi_prompt[1]", "Shot"),
        ({"multi_prompt": "a:5"}, "multi_prompt", "list of shots"),
    ],
)
def test_a_bad_shot_list_names_the_field_and_the_rule(kwargs, field, words):
    """Contradictions and kling-v3's documented shot rules fail at construction (nothing is
    sent), each naming the field (a shot by its number, from 1) and the rule."""
    error = refused(lambda: TextToVideo(**kwargs))
    assert error.field == field
    assert words in error.rule


def test_a_shot_is_checked_on_its_own_too():
    """A Shot is a non-empty prompt and a whole number of seconds, 1 or more."""
    assert refused(lambda: Shot("", 3)).field == "shot.prompt"
    assert refused(lambda: Shot("a", 0)).field == "shot.duration"
    assert refused(lambda: Shot("a", 2.0)).field == "shot.duration"  # type: ignore[arg-type]


def test_image_to_video_shots_and_a_last_frame_are_sent_for_the_server_to_judge():
    """Upstream Kling offers no last frame in multi-shot mode; whether apimart refuses it is
    not documented, so the SDK sends it (the server decides)."""
    request = ImageToVideo(
        None, [IMG], last_frame_image=IMG, duration=5, multi_prompt=[Shot("walk", 5)]
    )
    body = request_body(request)
    assert body["last_frame_image"] == IMG and body["multi_prompt"][0]["index"] == 1


def test_from_fields_reads_the_apis_multi_prompt():
    """Batch files and forms use the API's names: shots as {index, prompt, duration}, taken
    in index order, a duration left out being their total."""
    request = VideoRequest.from_fields(
        {
            "multi_prompt": [
                {"index": 2, "prompt": "b", "duration": 2},
                {"index": 1, "prompt": "a", "duration": 3},
            ],
            "mode": "4k",
        }
    )
    assert isinstance(request, TextToVideo)
    assert request.multi_prompt == (Shot("a", 3), Shot("b", 2))
    assert (request.duration, request.shot_type) == (5, "customize")
    for shots, words in [
        ([{"index": 1, "prompt": "a", "duration": 1}, {"prompt": "b", "duration": 1}], "none"),
        ([{"index": 1, "prompt": "a", "duration": 1}] * 2, "same index"),
    ]:
        error = refused(lambda s=shots: VideoRequest.from_fields({"multi_prompt": s}))
        assert (error.field, words in error.rule) == ("multi_prompt", True)


# -- extra fields ----------------------------------------------------------------------------


def test_extra_fields_are_merged_into_the_body_after_the_modelled_ones():
    """Fields the SDK does not model yet go into the body as given, read-only."""
    request = TextToVideo("a cat", extra_fields={"cfg_scale": 0.5, "camera": {"zoom": [1, 2]}})
    body = request_body(request)
    assert list(body)[-2:] == ["cfg_scale", "camera"]
    assert body["camera"] == {"zoom": [1, 2]}
    with pytest.raises(TypeError, match="read-only"):
        request.extra_fields["cfg_scale"] = 1  # type: ignore[index]
    assert json.loads(json.dumps(body)) == body


@pytest.mark.parametrize(
    ("build", "field", "words"),
    [
        (lambda: TextToVideo("x", extra_fields={"duration": 7}), "duration", "modelled"),
        (lambda: TextToVideo("x", extra_fields={"image_urls": [IMG]}), "image_urls", "modelled"),
        (
            lambda: GenericRequest("x", model="m", extra_fields={"prompt": "y"}),
            "prompt",
            "modelled",
        ),
        (lambda: TextToVideo("x", extra_fields={"a": math.nan}), "a", "finite"),
        (lambda: TextToVideo("x", extra_fields={"a": {"b": [1, {2: 3}]}}), "a.b[1]", "strings"),
        (lambda: TextToVideo("x", extra_fields={"a": {1, 2}}), "a", "JSON"),
        (lambda: TextToVideo("x", extra_fields={"a": Path("missing.png")}), "a", "no such file"),
        (lambda: TextToVideo("x", extra_fields=[("a", 1)]), "extra_fields", "mapping"),
    ],
)
def test_extra_fields_are_json_and_never_a_modelled_field(build, field, words):
    """A clash with a modelled field, or a value JSON cannot carry, names where it is."""
    error = refused(build)
    assert (error.field, words in error.rule) == (field, True)


def test_a_value_that_contains_itself_is_refused_not_a_crash():
    """A self-referencing value is a validation error, not a RecursionError."""
    loop: dict[str, Any] = {}
    loop["again"] = loop
    assert "nested too deeply" in refused(lambda: TextToVideo("x", extra_fields={"a": loop})).rule


# -- any model -------------------------------------------------------------------------------


def test_a_generic_request_is_the_apis_json_as_given():
    """model, prompt, then every field as given, in order: no kling-v3 default added and no
    kling-v3 rule applied (Kling 4.0 clips run to 30 s at 21:9)."""
    request = GenericRequest(
        "a lighthouse at dusk",
        model="kling-4.0",
        extra_fields={"duration": 30, "aspect_ratio": "21:9", "resolution": "4k"},
    )
    assert list(request_body(request).items()) == [
        ("model", "kling-4.0"),
        ("prompt", "a lighthouse at dusk"),
        ("duration", 30),
        ("aspect_ratio", "21:9"),
        ("resolution", "4k"),
    ]
    assert request.kind == ("kling-4.0", "4k", 30, False)


def test_a_generic_request_checks_only_what_every_request_needs(tmp_path: Path):
    """A model name, a prompt (unless multi_prompt replaces it), JSON values, images in
    image_urls/last_frame_image as http(s) URLs or local files."""
    assert refused(lambda: GenericRequest("x", model=" ")).field == "model"
    with pytest.raises(TypeError, match="model"):
        GenericRequest("x")  # type: ignore[call-arg]
    assert refused(lambda: GenericRequest(model="kling-3.0-turbo")).field == "prompt"
    shots = [{"index": 1, "prompt": "a", "duration": 5}]
    assert GenericRequest(model="m", extra_fields={"multi_prompt": shots}).prompt is None
    error = refused(lambda: GenericRequest("x", model="m", extra_fields={"image_urls": ["a.png"]}))
    assert (error.field, "pathlib.Path" in error.rule) == ("image_urls", True)
    (tmp_path / "a.png").write_bytes(PNG)
    local = GenericRequest("x", model="m", extra_fields={"first_frame_image": tmp_path / "a.png"})
    assert local.local_images == (tmp_path / "a.png",)
    assert list(local.image_fields()) == [("first_frame_image", tmp_path / "a.png")]
    with pytest.raises(ValueError, match="uploads it first"):
        request_body(local)
    base64 = GenericRequest("x", model="m", extra_fields={"first_frame_image": "iVBORw0KGgo="})
    assert request_body(base64)["first_frame_image"] == "iVBORw0KGgo="  # the server decides


def test_the_support_matrix_is_kling_v3s_only():
    """A typed request for another model keeps the field types but not kling-v3's rules;
    from_fields makes any other model a GenericRequest carrying the fields as given."""
    sibling = ImageToVideo(
        "<<<image_1>>> waves", [IMG, IMG, IMG], model="kling-v3-omni", mode="4k", duration=15
    )
    assert len(sibling.image_urls) == 3
    assert TextToVideo("x", model="kling-v3-omni", aspect_ratio="21:9").aspect_ratio == "21:9"
    assert refused(lambda: TextToVideo("x", model="kling-v3-omni", duration="5")).field == (
        "duration"
    )
    generic = VideoRequest.from_fields({"model": "kling-3.0-turbo", "prompt": "a", "fps": 60})
    assert isinstance(generic, GenericRequest)
    assert request_body(generic) == {"model": "kling-3.0-turbo", "prompt": "a", "fps": 60}


def test_from_fields_sends_unknown_fields_only_when_asked():
    """By default an unknown key is refused with a hint; unknown="send" makes it extra."""
    error = refused(lambda: VideoRequest.from_fields({"prompt": "x", "duraton": 5}))
    assert "did you mean 'duration'" in error.rule
    request = VideoRequest.from_fields({"prompt": "x", "duraton": 5}, unknown="send")
    assert request.extra_fields == {"duraton": 5}
    with pytest.raises(ValueError, match="unknown"):
        VideoRequest.from_fields({"prompt": "x"}, unknown="maybe")


def test_the_base_class_is_not_a_request_of_its_own():
    """VideoRequest is what every request has; building one says which to build instead."""
    with pytest.raises(TypeError, match="TextToVideo, an ImageToVideo or a GenericRequest"):
        VideoRequest("a cat")


def test_evolve_keeps_every_rule():
    """attrs.evolve re-checks the request (e.g. an extra field that clashes)."""
    request = TextToVideo("a cat", extra_fields={"cfg_scale": 0.5})
    assert attrs.evolve(request, duration=10).extra_fields == {"cfg_scale": 0.5}
    assert refused(lambda: attrs.evolve(request, extra_fields={"mode": "pro"})).field == "mode"
