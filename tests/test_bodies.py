"""Every request body of API.md sections 1 and 5, built through the public API, reaches the
server as documented (the JSON the server reads is compared); the server's 400 for a rule
the SDK does not check reaches the caller with its ``param``; local images anywhere in a
request are uploaded first."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from support.scripted import ScriptedTransport, scripted_session

from kling_async import (
    BadRequestError,
    GenericRequest,
    ImageToVideo,
    Shot,
    TextToVideo,
    VideoRequest,
)
from kling_async.emulator import Emulator
from kling_async.testing import fast_config, session_for

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32

#: The worked bodies of API.md section 1, verbatim (the "..." of the second kept as is).
SECTION_1 = [
    '{"model":"kling-v3","prompt":"A golden cat running on a sunlit meadow, slow motion, '
    'cinematic quality","mode":"std","duration":5,"aspect_ratio":"16:9"}',
    '{"model":"kling-v3","prompt":"Tokyo Shibuya crossing at night, ...","negative_prompt":'
    '"blurry, low quality, distorted","mode":"pro","duration":10,"aspect_ratio":"16:9"}',
    '{"model":"kling-v3","prompt":"a time-lapse of a flower blooming in a garden",'
    '"duration":15,"aspect_ratio":"16:9"}',
    '{"model":"kling-v3","prompt":"the cat slowly walks forward and looks around",'
    '"image_urls":["https://example.com/cat.jpg"],"mode":"std","duration":5}',
    '{"model":"kling-v3","prompt":"smooth cinematic transition","image_urls":'
    '["https://example.com/frame-start.jpg"],"last_frame_image":'
    '"https://example.com/frame-end.jpg","mode":"std","duration":5}',
    '{"model":"kling-v3","prompt":"smooth cinematic transition","image_urls":'
    '["https://example.com/frame-start.jpg","https://example.com/frame-end.jpg"],'
    '"mode":"std","duration":5}',
    '{"model":"kling-v3","prompt":"A rock singer singing on this stage, concert scene, '
    'flashing lights","audio":true,"mode":"std","duration":5}',
]
#: Bodies of what section 5 adds: 4k, both multi-shot kinds, and the other two models (as
#: the provider's pages for kling-v3-omni and kling-3.0-turbo show them).
SECTION_5 = [
    '{"model":"kling-v3","prompt":"a red fox in deep snow","mode":"4k","duration":15,'
    '"aspect_ratio":"16:9"}',
    '{"model":"kling-v3","mode":"std","duration":10,"aspect_ratio":"16:9","multi_shot":true,'
    '"shot_type":"customize","multi_prompt":[{"index":1,"prompt":"a seed in dark soil",'
    '"duration":4},{"index":2,"prompt":"a sprout breaks through","duration":3},{"index":3,'
    '"prompt":"the flower opens","duration":3}]}',
    '{"model":"kling-v3","prompt":"a day in a harbour town, dawn to night","mode":"pro",'
    '"duration":10,"aspect_ratio":"9:16","multi_shot":true,"shot_type":"intelligence"}',
    '{"model":"kling-v3-omni","prompt":"Make the person in <<<image_1>>> wave at the camera",'
    '"image_urls":["https://example.com/person.webp"],"mode":"std","duration":5,'
    '"aspect_ratio":"16:9"}',
    '{"model":"kling-3.0-turbo","prompt":"A corgi running on the beach, cinematic, '
    'golden-hour light","aspect_ratio":"16:9","resolution":"1080p","duration":5}',
]
DEFAULTS = {"mode": "std", "duration": 5, "aspect_ratio": "16:9"}


def generic(body: dict[str, Any]) -> GenericRequest:
    """The body as a GenericRequest: model, prompt, and the rest as given."""
    rest = {k: v for k, v in body.items() if k not in ("model", "prompt")}
    return GenericRequest(body.get("prompt"), model=body["model"], extra_fields=rest)


def typed(body: dict[str, Any]) -> VideoRequest:
    """The same body built from the typed requests (kling-v3; the others are generic)."""
    if body["model"] != "kling-v3":
        return generic(body)
    fields = {k: v for k, v in body.items() if k not in ("model", "multi_shot")}
    shots = [Shot(s["prompt"], s["duration"]) for s in fields.pop("multi_prompt", ())]
    images, prompt = fields.pop("image_urls", None), fields.pop("prompt", None)
    if images is not None:
        return ImageToVideo(prompt, images, multi_prompt=shots, **fields)
    return TextToVideo(prompt, multi_prompt=shots, **fields)


def answer(method: str, path: str, n: int) -> Any:
    return {"code": 200, "data": [{"status": "submitted", "task_id": f"task_{n}"}]}


@pytest.mark.parametrize("text", SECTION_1 + SECTION_5, ids=lambda t: json.loads(t)["model"])
async def test_every_documented_body_reaches_the_server_as_documented(text: str) -> None:
    """As a GenericRequest the body goes out byte for byte (keys, order, types); built from
    the typed requests, it is the same JSON plus only the documented defaults left out."""
    documented = json.loads(text)
    transport = ScriptedTransport(answer)
    async with scripted_session(transport) as session:
        await session.submit(generic(documented))
        await session.submit(typed(documented))
    sent = [call.body for call in transport.calls if call.method == "POST"]
    assert sent[0] == json.dumps(documented, ensure_ascii=False).encode()
    pairs = json.loads(sent[0], object_pairs_hook=list)
    assert pairs == json.loads(text, object_pairs_hook=list)  # the keys in the same order
    as_typed = json.loads(sent[1])
    added = {k: v for k, v in as_typed.items() if k not in documented}
    assert {k: v for k, v in as_typed.items() if k in documented} == documented
    if documented["model"] == "kling-v3":
        assert added.items() <= DEFAULTS.items()
        assert type(as_typed["duration"]) is int
    else:
        assert added == {}


@pytest.mark.parametrize("text", SECTION_1 + SECTION_5, ids=lambda t: json.loads(t)["model"])
async def test_the_emulator_takes_every_documented_body(text: str) -> None:
    """Each documented body is accepted, and recorded as sent."""
    documented = json.loads(text)
    async with Emulator(fast_config(unknown_fields="refuse")) as emulator:
        async with session_for(emulator) as session:
            task = await session.submit(generic(documented))
            assert (await task).url.startswith(emulator.storage_url)
        assert emulator.task_record(task.id).request == documented


@pytest.mark.parametrize(
    ("request_", "param"),
    [
        (
            ImageToVideo(
                None,
                ["https://example.com/a.jpg"],
                last_frame_image="https://example.com/b.jpg",
                multi_prompt=[Shot("walk", 5)],
            ),
            "last_frame_image",
        ),
        (
            GenericRequest("x", model="kling-3.0-turbo", extra_fields={"resolution": "8k"}),
            "resolution",
        ),
        (
            GenericRequest(
                "<<<image_2>>> waves",
                model="kling-v3-omni",
                extra_fields={"image_urls": ["https://example.com/a.jpg"]},
            ),
            "prompt",
        ),
        (GenericRequest("x", model="kling-9"), "model"),
        (TextToVideo("x", extra_fields={"fps": 60}), "fps"),
    ],
    ids=["last-frame-in-multi-shot", "turbo-8k", "omni-image-2-of-1", "unknown-model", "fps"],
)
async def test_the_servers_400_for_a_rule_the_sdk_leaves_to_it_names_the_field(
    request_: VideoRequest, param: str
) -> None:
    """What the SDK sends without judging (undocumented rules, other models, extra fields)
    the server may refuse: the 400 is a BadRequestError carrying the server's param."""
    config = fast_config(error_style="error_object", unknown_fields="refuse")
    async with Emulator(config) as emulator, session_for(emulator) as session:
        with pytest.raises(BadRequestError) as info:
            await session.submit(request_)
        assert emulator.stats.submissions == 0
    assert info.value.param == param
    assert f"[field: {param}]" in str(info.value)


async def test_unknown_fields_pass_an_emulator_that_accepts_them() -> None:
    """With unknown_fields="accept" (the default) an extra field is taken as sent."""
    async with Emulator(fast_config()) as emulator, session_for(emulator) as session:
        task = await session.submit(TextToVideo("x", extra_fields={"fps": 60}))
        await task
        assert emulator.task_record(task.id).request["fps"] == 60


async def test_local_images_anywhere_in_a_request_are_uploaded_first(tmp_path: Path) -> None:
    """A pathlib.Path in a generic request's fields (or a typed one's extra fields) is
    uploaded, and the body carries its URL."""
    frame = tmp_path / "corgi.png"
    frame.write_bytes(PNG)
    turbo = GenericRequest(
        "a corgi on the beach", model="kling-3.0-turbo", extra_fields={"first_frame_image": frame}
    )
    async with Emulator(fast_config()) as emulator, session_for(emulator) as session:
        sent = await session.upload_images(turbo)
        task = await session.submit(turbo)
        await task
        url = emulator.task_record(task.id).request["first_frame_image"]
        assert url.startswith(emulator.storage_url + "/uploads/")
        assert sent.local_images == () and emulator.stats.uploads == 2
