"""The emulator speaks today's API (API.md section 5): 4k (slower than pro), multi-shot with
the documented checks, kling-v3-omni and kling-3.0-turbo with their fields, and a switch
for fields a model does not document."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from support.emulator_http import fast, post, status

from kling_async.emulator import Emulator
from kling_async.emulator._tasks import cost_units, estimate_for

V3: dict[str, Any] = {"model": "kling-v3", "prompt": "a golden cat on a meadow"}
SHOTS = [
    {"index": 1, "prompt": "a seed", "duration": 4},
    {"index": 2, "prompt": "a flower", "duration": 6},
]
STORY: dict[str, Any] = {
    "model": "kling-v3",
    "duration": 10,
    "multi_shot": True,
    "shot_type": "customize",
    "multi_prompt": SHOTS,
}
OMNI: dict[str, Any] = {
    "model": "kling-v3-omni",
    "prompt": "the person in <<<image_1>>> waves at <<<image_2>>>",
    "image_urls": ["https://e.com/a.jpg", "https://e.com/b.jpg"],
}
TURBO: dict[str, Any] = {"model": "kling-3.0-turbo", "prompt": "a corgi", "resolution": "720p"}


def test_4k_is_slower_than_pro_and_turbo_faster_than_std() -> None:
    """The estimate of a 4k job is over a pro one's; kling-3.0-turbo's under std's."""
    assert estimate_for(60, "4k", 5) > estimate_for(60, "pro", 5) > estimate_for(60, "std", 5)
    assert estimate_for(60, "720p", 5, model="kling-3.0-turbo") < estimate_for(60, "std", 5)
    assert cost_units({"mode": "4k", "duration": 10}) > cost_units({"mode": "pro", "duration": 10})


@pytest.mark.parametrize(
    "body",
    [
        {**V3, "mode": "4k", "duration": 15},
        {**V3, "mode": "4k", "duration": 15, "image_urls": ["https://e.com/a.jpg"]},
        STORY,
        {**STORY, "prompt": "ignored with customize"},
        {**V3, "multi_shot": True, "shot_type": "intelligence", "duration": 15},
        {**STORY, "image_urls": ["https://e.com/first.jpg"]},
        OMNI,
        {**OMNI, "mode": "4k", "duration": 15},
        TURBO,
        {**TURBO, "first_frame_image": "iVBORw0KGgoAAAANSUhEUg==", "duration": 15},
        {**TURBO, "first_frame_image": "https://e.com/a.jpg", "resolution": "1080p"},
    ],
    ids=[
        "4k-15s",
        "4k-i2v-15s",
        "customize",
        "customize-with-prompt",
        "intelligence",
        "multi-shot-first-frame",
        "omni",
        "omni-4k",
        "turbo",
        "turbo-base64-15s",
        "turbo-url",
    ],
)
async def test_todays_bodies_are_accepted(http: aiohttp.ClientSession, body: Any) -> None:
    """What section 5 documents makes a task (kling-v3's i2v cap is not applied to 4k, nor
    to the other models)."""
    async with Emulator(fast(unknown_fields="refuse")) as emu:
        code, answer = await post(http, emu, body)
        assert code == 200, answer
        (task_id,) = emu.task_ids()
        assert emu.task_record(task_id).request == body


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({**V3, "mode": "8k"}, "mode", "std, pro, 4k"),
        ({**V3, "multi_shot": True}, "shot_type", "required"),
        ({**V3, "multi_shot": "yes"}, "multi_shot", "boolean"),
        ({**STORY, "multi_prompt": []}, "multi_prompt", "1 to 6"),
        ({**STORY, "multi_prompt": [SHOTS[0]] * 7, "duration": 15}, "multi_prompt", "1 to 6"),
        ({**STORY, "multi_prompt": [{**SHOTS[0], "index": 0}, SHOTS[1]]}, "multi_prompt", "from 1"),
        (
            {**STORY, "multi_prompt": [{**SHOTS[0], "prompt": "x" * 513}, SHOTS[1]]},
            "multi_prompt",
            "512",
        ),
        (
            {**STORY, "multi_prompt": [{**SHOTS[0], "prompt": ""}, SHOTS[1]]},
            "multi_prompt",
            "prompt",
        ),
        (
            {**STORY, "multi_prompt": [{**SHOTS[0], "duration": 0}, SHOTS[1]]},
            "multi_prompt",
            "1 to",
        ),
        (
            {**STORY, "multi_prompt": [{**SHOTS[0], "duration": "4"}, SHOTS[1]]},
            "multi_prompt",
            "integer",
        ),
        ({**STORY, "duration": 9}, "multi_prompt", "last 10 s, the task 9 s"),
        (
            {**V3, "multi_shot": True, "shot_type": "intelligence", "prompt": ""},
            "prompt",
            "required",
        ),
        (
            {**STORY, "image_urls": ["https://e.com/a.jpg", "https://e.com/b.jpg"]},
            "image_urls",
            "multi-shot",
        ),
        (
            {
                **STORY,
                "image_urls": ["https://e.com/a.jpg"],
                "last_frame_image": "https://e.com/b.jpg",
            },
            "last_frame_image",
            "multi-shot",
        ),
        ({**OMNI, "prompt": "<<<image_3>>> waves"}, "prompt", "2 given"),
        ({**OMNI, "prompt": "<<<image_0>>> waves"}, "prompt", "counts from 1"),
        ({**OMNI, "mode": "8k"}, "mode", "4k"),
        ({**TURBO, "resolution": "4k"}, "resolution", "720p, 1080p"),
        ({**TURBO, "prompt": "x" * 3073}, "prompt", "3072"),
        ({**TURBO, "first_frame_image": 5}, "first_frame_image", "URL or base64"),
        ({**TURBO, "duration": 16}, "duration", "3 to 15"),
        ({"model": "kling-9", "prompt": "x"}, "model", "unknown model"),
    ],
)
async def test_a_broken_rule_is_a_400_naming_the_field(
    http: aiohttp.ClientSession, body: Any, param: str, words: str
) -> None:
    """Each documented rule a body breaks is a 400 whose param names the field."""
    async with Emulator(fast(error_style="error_object")) as emu:
        code, answer = await post(http, emu, body)
        assert code == 400
        assert answer["error"]["param"] == param
        assert words in answer["error"]["message"], answer
        assert emu.stats.submissions == 0


@pytest.mark.parametrize("unknown_fields", ["accept", "refuse"])
async def test_fields_a_model_does_not_document_are_accepted_or_refused_by_a_switch(
    http: aiohttp.ClientSession, unknown_fields: str
) -> None:
    """unknown_fields="accept" takes an undocumented field (kling-v3's resolution, turbo's
    mode); "refuse" answers 400 naming it."""
    async with Emulator(fast(unknown_fields=unknown_fields, error_style="error_object")) as emu:
        for body, field in (
            ({**V3, "cfg_scale": 0.5}, "cfg_scale"),
            ({**TURBO, "mode": "pro"}, "mode"),
        ):
            code, answer = await post(http, emu, body)
            if unknown_fields == "accept":
                assert code == 200, answer
            else:
                assert (code, answer["error"]["param"]) == (400, field)
                assert "not a field of" in answer["error"]["message"]


@pytest.mark.slow
async def test_a_story_is_about_its_shots(http: aiohttp.ClientSession) -> None:
    """A custom multi-shot task without a prompt is about its shots' prompts: the fail marker
    in one fails it."""
    shots = [{**SHOTS[0], "prompt": "a seed [fail]"}, SHOTS[1]]
    async with Emulator(fast()) as emu:
        code, answer = await post(http, emu, {**STORY, "multi_prompt": shots})
        assert code == 200
        task_id = answer["data"][0]["task_id"]
        assert emu.task_record(task_id).prompt == "a seed [fail] / a flower"
        for _ in range(200):
            _, data = await status(http, emu, task_id)
            if data["data"]["status"] == "failed":
                break
            await asyncio.sleep(0.02)
        assert data["data"]["status"] == "failed"
