"""The emulator speaks the API of API.md and its test knobs do what they say."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest

# test_emulator_world imports these from here
from support.emulator_http import (
    AUTH,
    BODY,
    SUBMIT,
    emulator_command,
    fast,
    post,
    sleep_until,
    status,
    submit,
)

from kling_async.emulator import (
    Emulator,
    EmulatorConfig,
    Fault,
    build_parser,
    config_from_args,
    sample_video,
)
from kling_async.emulator._tasks import progress_at


async def test_lifecycle_ends_with_a_downloadable_mp4_on_the_storage_origin(
    http: aiohttp.ClientSession,
) -> None:
    """A job goes pending -> processing with progress -> completed with a storage-host MP4."""
    async with Emulator(fast(queue_time=20.0)) as emu:
        code, body = await post(http, emu)
        assert code == 200
        assert body["code"] == 200
        (entry,) = body["data"]
        assert entry["status"] == "submitted"
        task_id = entry["task_id"]
        assert task_id.startswith("task_")
        assert len(task_id) == len("task_") + 26

        _, first = await status(http, emu, task_id)
        assert first["data"]["status"] == "pending"
        assert first["data"]["progress"] == 0
        assert first["data"]["estimated_time"] == pytest.approx(0.3)
        assert "result" not in first["data"]

        record = emu.task_record(task_id)
        await sleep_until((record.starts_at + record.completes_at) / 2, margin=0)
        _, middle = await status(http, emu, task_id)
        assert middle["data"]["status"] == "processing"
        assert 0 < middle["data"]["progress"] < 100

        await sleep_until(record.completes_at)
        _, done = await status(http, emu, task_id)
        data = done["data"]
        assert data["status"] == "completed"
        assert data["progress"] == 100
        assert data["actual_time"] == pytest.approx(0.4)  # 20 s queue + 60 s run, emulated
        assert data["completed"] == record.reported_completed
        assert data["created"] == record.reported_created
        assert abs(data["created"] - record.created) <= 1 / 200
        (video,) = data["result"]["videos"]
        (url,) = video["url"]
        assert url.startswith(emu.storage_url + "/files/")
        assert not url.startswith(emu.url)
        assert video["expires_at"] > time.time()

        async with http.get(url) as response:
            assert response.status == 200
            assert response.content_type == "video/mp4"
            content = await response.read()
            assert response.content_length == len(content)
        assert content == sample_video()
        assert content[4:8] == b"ftyp"
        assert emu.stats.storage_requests == 1
        assert emu.stats.storage_auth_headers == 0


async def test_sample_video_is_a_small_mp4() -> None:
    """The shipped sample starts with an ftyp box and stays under 50 KB."""
    video = sample_video()
    assert video[4:8] == b"ftyp"
    assert len(video) < 50_000


async def test_every_status_mints_a_fresh_url(http: aiohttp.ClientSession) -> None:
    """Two status calls on a completed job return two different, both valid, signed URLs."""
    async with Emulator(fast(estimated_time=1.0)) as emu:
        task_id = await submit(http, emu)
        await sleep_until(emu.task_record(task_id).completes_at)
        _, first = await status(http, emu, task_id)
        await asyncio.sleep(0.01)
        _, second = await status(http, emu, task_id)
        urls = [body["data"]["result"]["videos"][0]["url"][0] for body in (first, second)]
        assert urls[0] != urls[1]
        for url in urls:
            async with http.get(url) as response:
                assert response.status == 200
                await response.read()


async def test_real_speed_reports_whole_seconds(http: aiohttp.ClientSession) -> None:
    """At time_scale 1 the time fields are integers, as the real API sends them."""
    async with Emulator(EmulatorConfig()) as emu:
        task_id = await submit(http, emu)
        _, body = await status(http, emu, task_id)
        data = body["data"]
        assert data["estimated_time"] == 60
        assert isinstance(data["estimated_time"], int)
        assert isinstance(data["created"], int)
        assert abs(data["created"] - time.time()) < 2


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, 0.3),
        ({"mode": "pro"}, 0.45),
        ({"duration": 10}, 0.48),
        ({"mode": "pro", "duration": 10}, 0.72),
        ({"duration": 15}, 0.66),
    ],
)
async def test_estimate_scales_with_mode_and_duration(
    http: aiohttp.ClientSession, fields: dict[str, Any], expected: float
) -> None:
    """estimated_time is the std 5 s estimate x1.5 for pro, x1.6 for 10 s, x2.2 for 15 s."""
    async with Emulator(fast()) as emu:
        task_id = await submit(http, emu, **fields)
        _, body = await status(http, emu, task_id)
        assert body["data"]["estimated_time"] == pytest.approx(expected)


@pytest.mark.parametrize("cost_per_second", [None, 0.1])
async def test_cost_is_reported_on_completed_tasks_only_when_configured(
    http: aiohttp.ClientSession, cost_per_second: float | None
) -> None:
    """With cost_per_second, a completed task reports cost (per second of video, x1.5 in
    pro) and credits_cost; a task still running, or an emulator without it, reports none."""
    async with Emulator(fast(estimated_time=1.0, cost_per_second=cost_per_second)) as emu:
        emu.script(prompt_contains="slow", time_factor=1000)
        std = await submit(http, emu, duration=10)
        pro = await submit(http, emu, mode="pro")
        running = await submit(http, emu, prompt="slow", duration=15)
        await sleep_until(emu.task_record(pro).completes_at)
        await sleep_until(emu.task_record(std).completes_at)
        reported = {}
        for task_id in (std, pro, running):
            _, body = await status(http, emu, task_id)
            reported[task_id] = (body["data"].get("cost"), body["data"].get("credits_cost"))
    if cost_per_second is None:
        assert set(reported.values()) == {(None, None)}
    else:
        assert reported[std] == (pytest.approx(1.0), pytest.approx(100.0))
        assert reported[pro] == (pytest.approx(0.75), pytest.approx(75.0))
        assert reported[running] == (None, None)


async def test_fail_marker_ends_failed_with_an_error(http: aiohttp.ClientSession) -> None:
    """A prompt with the fail marker ends "failed" with an error code and message, no result."""
    async with Emulator(fast(estimated_time=1.0)) as emu:
        task_id = await submit(http, emu, prompt="a cat [fail]")
        await sleep_until(emu.task_record(task_id).completes_at)
        _, body = await status(http, emu, task_id)
        data = body["data"]
        assert data["status"] == "failed"
        assert data["error"]["code"]
        assert data["error"]["message"]
        assert "result" not in data
        assert "completed" in data


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([1, 2], "body"),
        ({"prompt": "x"}, "model"),
        ({"model": "kling-v3"}, "prompt"),
        ({"model": "kling-v3", "prompt": "  "}, "prompt"),
        ({**BODY, "mode": "ultra"}, "mode"),
        ({**BODY, "duration": "5"}, "duration"),
        ({**BODY, "duration": 5.0}, "duration"),
        ({**BODY, "duration": True}, "duration"),
        ({**BODY, "duration": 2}, "duration"),
        ({**BODY, "duration": 16}, "duration"),
        ({**BODY, "duration": 11, "mode": "pro"}, "duration"),
        ({**BODY, "duration": 11, "image_urls": ["https://e.com/a.jpg"]}, "duration"),
        ({**BODY, "duration": 15, "image_urls": ["https://e.com/a.jpg"]}, "duration"),
        ({**BODY, "duration": 15, "mode": "pro"}, "duration"),
        ({**BODY, "aspect_ratio": "4:3"}, "aspect_ratio"),
        ({**BODY, "negative_prompt": 3}, "negative_prompt"),
        ({**BODY, "image_urls": []}, "image_urls"),
        ({**BODY, "image_urls": "https://e.com/a.jpg"}, "image_urls"),
        ({**BODY, "image_urls": ["https://e.com/a.jpg"] * 3}, "image_urls"),
        ({**BODY, "image_urls": ["ftp://e.com/a.jpg"]}, "image_urls"),
        ({**BODY, "last_frame_image": "https://e.com/z.jpg"}, "last_frame_image"),
        (
            {
                **BODY,
                "image_urls": ["https://e.com/a.jpg", "https://e.com/b.jpg"],
                "last_frame_image": "https://e.com/z.jpg",
            },
            "last_frame_image",
        ),
        ({**BODY, "watermark": "yes"}, "watermark"),
        ({**BODY, "audio": 1}, "audio"),
    ],
)
async def test_invalid_submissions_get_400(
    http: aiohttp.ClientSession, body: Any, field: str
) -> None:
    """A body breaking a rule gets 400 with "<field>: <rule>" and creates no task."""
    async with Emulator(fast()) as emu:
        code, answer = await post(http, emu, body)
        assert code == 400
        assert answer["code"] == 400
        assert answer["message"].startswith(f"{field}: ")
        assert emu.stats.submissions == 0
        assert emu.stats.rejected_invalid == 1


async def test_non_json_body_gets_400(http: aiohttp.ClientSession) -> None:
    """A body that is not JSON at all gets 400."""
    async with (
        Emulator(fast()) as emu,
        http.post(emu.url + SUBMIT, data=b"{nope", headers=AUTH) as response,
    ):
        assert response.status == 400
        assert (await response.json())["message"].startswith("body: ")


@pytest.mark.parametrize(
    "body",
    [
        {"model": "kling-v3", "prompt": "A golden cat", "mode": "std", "duration": 5,
         "aspect_ratio": "16:9"},
        {"model": "kling-v3", "prompt": "Tokyo at night", "negative_prompt": "blurry",
         "mode": "pro", "duration": 10, "aspect_ratio": "16:9"},
        {"model": "kling-v3", "prompt": "a flower blooming", "duration": 15,
         "aspect_ratio": "16:9"},
        {"model": "kling-v3", "prompt": "the cat walks", "image_urls": ["https://e.com/cat.jpg"],
         "mode": "std", "duration": 5},
        {"model": "kling-v3", "prompt": "transition", "image_urls": ["https://e.com/a.jpg"],
         "last_frame_image": "https://e.com/b.jpg", "mode": "std", "duration": 5},
        {"model": "kling-v3", "prompt": "transition", "mode": "pro", "duration": 10,
         "image_urls": ["https://e.com/a.jpg", "https://e.com/b.jpg"]},
        {"model": "kling-v3", "prompt": "A rock singer", "audio": True, "watermark": False,
         "mode": "std", "duration": 5, "some_future_field": {"x": 1}},
    ],
)  # fmt: skip
async def test_documented_bodies_are_accepted(
    http: aiohttp.ClientSession, body: dict[str, Any]
) -> None:
    """The worked request bodies of API.md (and unknown extra fields) are accepted."""
    async with Emulator(fast()) as emu:
        code, answer = await post(http, emu, body)
        assert code == 200, answer
        assert emu.stats.created_tasks == {answer["data"][0]["task_id"]: body["prompt"]}


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer "}, {"Authorization": "Basic abc"}, {"Authorization": "k1"}],
)
async def test_missing_or_malformed_key_gets_401(
    http: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    """Without a Bearer token both routes answer 401 with a JSON error."""
    async with Emulator(fast()) as emu:
        code, body = await post(http, emu, headers=headers)
        assert (code, body["code"]) == (401, 401)
        assert body["message"]
        code, body = await status(http, emu, "task_X", headers=headers)
        assert code == 401
        assert emu.stats.rejected_auth == 2
        assert emu.stats.submissions == 0


async def test_configured_keys_are_enforced(http: aiohttp.ClientSession) -> None:
    """With api_keys set, only those keys are accepted."""
    async with Emulator(fast(api_keys=("good",))) as emu:
        code, _ = await post(http, emu, headers={"Authorization": "Bearer bad"})
        assert code == 401
        code, _ = await post(http, emu, headers={"Authorization": "Bearer good"})
        assert code == 200


async def test_unknown_task_gets_404(http: aiohttp.ClientSession) -> None:
    """A status request for an unknown id answers 404 "task not found"."""
    async with Emulator(fast()) as emu:
        code, body = await status(http, emu, "task_NOPE")
        assert code == 404
        assert body == {"code": 404, "message": "task not found"}
        assert emu.stats.not_found == 1


@pytest.mark.parametrize(
    ("kind", "http_status"),
    [("429", 429), ("500", 500), ("502", 502), ("503", 503), ("html", 502), ("body_error", 200)],
)
async def test_error_faults_on_status(
    http: aiohttp.ClientSession, kind: str, http_status: int
) -> None:
    """Each error-shaped fault answers its status and body once, then normal service resumes."""
    async with Emulator(fast(retry_after=0.05)) as emu:
        task_id = await submit(http, emu)
        emu.inject(Fault(kind, route="status"))
        async with http.get(f"{emu.url}/v1/tasks/{task_id}", headers=AUTH) as response:
            assert response.status == http_status
            if kind == "html":
                assert response.content_type == "text/html"
                assert "<html>" in await response.text()
            else:
                body = await response.json()
                assert body["code"] == (500 if kind == "body_error" else http_status)
            if kind == "429":
                assert response.headers["Retry-After"] == "0.05"
            else:
                assert "Retry-After" not in response.headers
        code, _ = await status(http, emu, task_id)
        assert code == 200
        assert emu.stats.faults_injected == {kind: 1}
        assert emu.pending_faults() == []


async def test_reset_fault_drops_the_connection(http: aiohttp.ClientSession) -> None:
    """A "reset" aborts the connection; aiohttp retries an idempotent GET once by itself."""
    async with Emulator(fast()) as emu:
        task_id = await submit(http, emu)
        emu.inject(Fault("reset", route="status", times=1))
        code, _ = await status(http, emu, task_id)
        assert code == 200  # the GET was silently retried by aiohttp
        emu.inject(Fault("reset", route="status", times=2))
        with pytest.raises(aiohttp.ClientConnectionError):
            await status(http, emu, task_id)
        assert emu.stats.faults_injected == {"reset": 3}
        assert emu.stats.status_calls[task_id] == 4


async def test_slow_fault_delays_a_normal_answer(http: aiohttp.ClientSession) -> None:
    """A "slow" fault holds the response for slow_delay seconds, then answers normally."""
    async with Emulator(fast(slow_delay=0.2)) as emu:
        task_id = await submit(http, emu)
        emu.inject(Fault("slow", route="status"))
        started = time.monotonic()
        code, body = await status(http, emu, task_id)
        assert time.monotonic() - started >= 0.2
        assert code == 200
        assert body["data"]["id"] == task_id


async def test_truncated_fault_cuts_the_json(http: aiohttp.ClientSession) -> None:
    """A "truncated" fault answers 200 JSON whose body is cut in half."""
    async with Emulator(fast()) as emu:
        task_id = await submit(http, emu)
        emu.inject(Fault("truncated", route="status"))
        async with http.get(f"{emu.url}/v1/tasks/{task_id}", headers=AUTH) as response:
            assert response.status == 200
            assert response.content_type == "application/json"
            text = await response.text()
        assert text.startswith('{"code":200')
        with pytest.raises(json.JSONDecodeError):
            json.loads(text)


async def test_unknown_status_fault(http: aiohttp.ClientSession) -> None:
    """An "unknown_status" fault answers a valid body whose status is "mystery"."""
    async with Emulator(fast(estimated_time=1.0)) as emu:
        task_id = await submit(http, emu)
        await sleep_until(emu.task_record(task_id).completes_at)
        emu.inject(Fault("unknown_status", route="any"))
        code, body = await status(http, emu, task_id)
        assert code == 200
        assert body["data"]["status"] == "mystery"
        assert "result" not in body["data"]


async def test_submit_fault_before_creates_no_task(http: aiohttp.ClientSession) -> None:
    """A submit fault "before" fails the request and creates no task."""
    async with Emulator(fast()) as emu:
        emu.inject(Fault("503", route="submit", when="before"))
        code, _ = await post(http, emu)
        assert code == 503
        emu.inject(Fault("reset", route="submit", when="before"))
        with pytest.raises(aiohttp.ClientConnectionError):
            await post(http, emu)
        emu.inject(Fault("truncated", route="submit", when="before"))
        with pytest.raises(json.JSONDecodeError):
            await post(http, emu)
        assert emu.stats.submissions == 0
        assert emu.stats.created_tasks == {}
        assert emu.stats.submit_requests == 3


@pytest.mark.parametrize("kind", ["500", "reset", "truncated", "body_error"])
async def test_submit_fault_after_creates_the_task(http: aiohttp.ClientSession, kind: str) -> None:
    """A submit fault "after" creates the task, fails the answer, and records it as ambiguous."""
    async with Emulator(fast()) as emu:
        emu.inject(Fault(kind, route="submit", when="after"))
        try:
            code, body = await post(http, emu)
        except (aiohttp.ClientConnectionError, json.JSONDecodeError):
            pass  # "reset" and "truncated"
        else:
            assert code != 200 or body["code"] != 200
        assert emu.stats.submissions == 1
        ((task_id, prompt),) = emu.stats.ambiguous_submissions
        assert emu.stats.created_tasks == {task_id: prompt}
        assert prompt == BODY["prompt"]
        code, _ = await status(http, emu, task_id)
        assert code == 200


def test_a_429_cannot_come_after_the_task_was_created() -> None:
    """A 429 means the request was refused, so Fault("429", when="after") is rejected."""
    with pytest.raises(ValueError, match="429"):
        Fault("429", route="submit", when="after")


async def test_slow_submit_after_client_gave_up(http: aiohttp.ClientSession) -> None:
    """A "slow" submit fault "before" creates no task when the client timed out meanwhile."""
    async with Emulator(fast(slow_delay=0.2)) as emu:
        emu.inject(Fault("slow", route="submit", when="before"))
        timeout = aiohttp.ClientTimeout(total=0.05)
        with pytest.raises(asyncio.TimeoutError):
            async with http.post(
                emu.url + SUBMIT, json=BODY, headers=AUTH, timeout=timeout
            ) as response:
                await response.read()
        await asyncio.sleep(0.3)
        assert emu.stats.submissions == 0


async def test_random_submit_faults_reconcile(http: aiohttp.ClientSession) -> None:
    """With fault_rate 1 every submit fails; exactly the "after" ones created tasks."""
    async with Emulator(fast(fault_rate=1.0, fault_kinds=("500", "body_error"))) as emu:
        for _ in range(20):
            code, body = await post(http, emu)
            assert code == 500 or body["code"] == 500
        stats = emu.stats
        assert sum(stats.faults_injected.values()) == 20
        assert 0 < stats.submissions < 20
        assert dict(stats.ambiguous_submissions) == stats.created_tasks


async def test_random_faults_spare_control_routes(http: aiohttp.ClientSession) -> None:
    """Control routes are exempt from auth, faults and the rate limit."""
    config = fast(fault_rate=1.0, fault_kinds=("503",), rate_limit=1.0)
    async with Emulator(config) as emu:
        for _ in range(3):
            async with http.get(emu.url + "/_stats") as response:
                assert response.status == 200
                await response.read()
        assert emu.stats.requests_total == 0


async def test_fault_kind_applicability_is_checked() -> None:
    """Faults that cannot apply to their route, and unknown kinds, are refused."""
    with pytest.raises(ValueError, match="unknown_status"):
        Fault("unknown_status", route="submit")
    with pytest.raises(ValueError, match="body_error"):
        Fault("body_error", route="storage")
    with pytest.raises(ValueError, match="kind"):
        Fault("teapot")
    with pytest.raises(ValueError, match="times"):
        Fault("500", times=0)
    with pytest.raises(ValueError, match="teapot"):
        EmulatorConfig(fault_kinds=("500", "teapot"))
    with pytest.raises(ValueError, match="time_scale"):
        EmulatorConfig(time_scale=0)
    with pytest.raises(ValueError, match="progress_shape"):
        EmulatorConfig(progress_shape="zigzag")  # type: ignore[arg-type]
    assert EmulatorConfig(fault_kinds="500, reset").fault_kinds == ("500", "reset")


async def test_scripted_faults_are_served_in_order(http: aiohttp.ClientSession) -> None:
    """Scripted faults are consumed in order, each by the route it names."""
    async with Emulator(fast()) as emu:
        task_id = await submit(http, emu)
        emu.inject(
            Fault("500", route="status", times=2),
            Fault("502", route="submit"),
            Fault("503", route="any"),
        )
        assert [(await post(http, emu))[0] for _ in range(2)] == [502, 503]
        codes = [(await status(http, emu, task_id))[0] for _ in range(3)]
        assert codes == [500, 500, 200]
        assert emu.pending_faults() == []
        emu.inject(Fault("500", times=5))
        emu.clear_faults()
        assert (await status(http, emu, task_id))[0] == 200


@pytest.mark.slow
async def test_storage_answers_404_403_and_faults(http: aiohttp.ClientSession) -> None:
    """Storage: 404 for unknown files, 403 once expired, faults, and Authorization counted."""
    async with Emulator(fast(estimated_time=1.0, url_ttl=100.0)) as emu:
        task_id = await submit(http, emu)
        await sleep_until(emu.task_record(task_id).completes_at)
        _, body = await status(http, emu, task_id)
        url: str = body["data"]["result"]["videos"][0]["url"][0]

        async with http.get(url, headers=AUTH) as response:
            assert response.status == 200
            await response.read()
        assert emu.stats.storage_auth_headers == 1

        for bad in (
            url.replace(task_id, "task_UNKNOWN"),
            url.replace(".mp4", "0.mp4"),
            f"{emu.storage_url}/files/{task_id}/garbage.mp4",
        ):
            async with http.get(bad) as response:
                assert response.status == 404

        emu.inject(Fault("503", route="storage"))
        async with http.get(url) as response:
            assert response.status == 503
        emu.inject(Fault("truncated", route="storage"))
        with pytest.raises(aiohttp.ClientPayloadError):
            async with http.get(url) as response:
                await response.read()
        emu.inject(Fault("500", route="any"))  # "any" means the API routes only
        async with http.get(url) as response:
            assert response.status == 200
            await response.read()
        emu.clear_faults()

        await sleep_until(body["data"]["result"]["videos"][0]["expires_at"])  # 0.5 s later
        async with http.get(url) as response:
            assert response.status == 403
            assert (await response.json())["code"] == 403
        assert emu.stats.storage_requests == 8


@pytest.mark.slow
async def test_rate_limit_answers_429_with_retry_after(http: aiohttp.ClientSession) -> None:
    """Over rate_limit requests in a 1 s window get 429 with Retry-After; the window frees up."""
    async with Emulator(fast(rate_limit=5, retry_after=0.05)) as emu:
        task_id = await submit(http, emu)

        async def one() -> tuple[int, str | None]:
            async with http.get(f"{emu.url}/v1/tasks/{task_id}", headers=AUTH) as response:
                await response.read()
                return response.status, response.headers.get("Retry-After")

        answers = await asyncio.gather(*(one() for _ in range(9)))
        assert sorted(answers, key=str) == [(200, None)] * 4 + [(429, "0.05")] * 5
        assert emu.stats.rate_limited == 5
        assert emu.stats.max_requests_per_second == 10
        await asyncio.sleep(1.05)
        assert (await one())[0] == 200


async def test_retry_after_whole_seconds_format(http: aiohttp.ClientSession) -> None:
    """A whole-second Retry-After is sent as an integer ("1")."""
    async with Emulator(fast(rate_limit=1)) as emu:
        await post(http, emu)
        async with http.post(emu.url + SUBMIT, json=BODY, headers=AUTH) as response:
            assert response.status == 429
            assert response.headers["Retry-After"] == "1"


async def test_stats_count_requests_and_window_maximum(http: aiohttp.ClientSession) -> None:
    """Counters track requests per route and the busiest 1 s window; reset zeroes them."""
    async with Emulator(fast()) as emu:
        task_id = await submit(http, emu)
        for _ in range(6):
            await status(http, emu, task_id)
        stats = emu.stats
        assert stats.requests_total == 7
        assert stats.submit_requests == 1
        assert stats.submissions == 1
        assert stats.status_calls == {task_id: 6}
        assert stats.status_calls_total == 6
        assert stats.max_requests_per_second == 7
        assert stats.max_status_per_second == 6
        assert emu.task_record(task_id).status_calls == 6

        async with http.get(emu.url + "/_stats") as response:
            remote = await response.json()
        assert remote["status_calls"] == {task_id: 6}
        assert remote["created_tasks"] == {task_id: BODY["prompt"]}
        assert remote["max_requests_per_second"] == 7

        emu.reset_stats()
        assert stats.requests_total == 0
        assert stats.status_calls == {}
        await status(http, emu, task_id)
        async with http.post(emu.url + "/_reset") as response:
            assert response.status == 200
            await response.read()
        assert emu.stats is stats
        assert stats.status_calls_total == 0
        assert emu.task_record(task_id).status_calls == 7  # the task keeps its own count


@pytest.mark.slow
async def test_window_maximum_forgets_old_requests(http: aiohttp.ClientSession) -> None:
    """Requests more than 1 s apart do not share a window."""
    async with Emulator(fast()) as emu:
        for _ in range(3):
            await status(http, emu, "task_A")
        await asyncio.sleep(1.05)
        for _ in range(2):
            await status(http, emu, "task_A")
        assert emu.stats.max_requests_per_second == 3
        assert emu.stats.status_calls_total == 5


async def test_task_record_over_http(http: aiohttp.ClientSession) -> None:
    """GET /_tasks/{id} returns the record with wall-clock completes_at; 404 when unknown."""
    async with Emulator(fast()) as emu:
        task_id = await submit(http, emu)
        async with http.get(f"{emu.url}/_tasks/{task_id}") as response:
            record = await response.json()
        local = emu.task_record(task_id)
        assert record["completes_at"] == pytest.approx(local.completes_at)
        assert record["created"] <= record["starts_at"] <= record["completes_at"]
        assert record["outcome"] == "completed"
        assert record["prompt"] == BODY["prompt"]
        assert record["request"] == BODY
        async with http.get(f"{emu.url}/_tasks/task_NOPE") as response:
            assert response.status == 404
            await response.read()
        with pytest.raises(KeyError):
            emu.task_record("task_NOPE")


async def test_faults_and_scripts_over_http(http: aiohttp.ClientSession) -> None:
    """POST /_faults and /_scripts steer the emulator from another process."""
    async with Emulator(fast(estimated_time=1.0)) as emu:
        async with http.post(
            emu.url + "/_faults", json={"kind": "502", "route": "submit"}
        ) as response:
            assert response.status == 200
            await response.read()
        async with http.post(emu.url + "/_faults", json={"kind": "teapot"}) as response:
            assert response.status == 400
            await response.read()
        async with http.post(
            emu.url + "/_scripts", json={"prompt_contains": "doom", "outcome": "cancelled"}
        ) as response:
            assert response.status == 200
            await response.read()
        assert (await post(http, emu))[0] == 502
        task_id = await submit(http, emu, prompt="doom cat")
        await sleep_until(emu.task_record(task_id).completes_at)
        _, body = await status(http, emu, task_id)
        assert body["data"]["status"] == "cancelled"


async def test_scripted_outcomes(http: aiohttp.ClientSession) -> None:
    """Scripts fix a job's outcome, error and run time by prompt; the first match wins."""
    async with Emulator(fast(estimated_time=2.0, queue_time=0.0)) as emu:
        emu.script(prompt_contains="slow cat", time_factor=50.0)
        emu.script(prompt_contains="doomed", outcome="failed", error_code="E42",
                   error_message="no cats allowed")  # fmt: skip
        emu.script(prompt_contains="stop", outcome="cancelled")
        emu.script(prompt_contains="doomed", outcome="completed")  # shadowed
        normal = emu.task_record(await submit(http, emu, prompt="cat"))
        slow = emu.task_record(await submit(http, emu, prompt="a slow cat"))
        doomed = await submit(http, emu, prompt="doomed cat")
        stopped = await submit(http, emu, prompt="stop it")
        assert slow.actual_time == pytest.approx(50 * normal.actual_time)
        assert slow.outcome == "completed"

        await sleep_until(max(emu.task_record(t).completes_at for t in (doomed, stopped)))
        _, failed = await status(http, emu, doomed)
        assert failed["data"]["status"] == "failed"
        assert failed["data"]["error"] == {"code": "E42", "message": "no cats allowed"}
        _, cancelled = await status(http, emu, stopped)
        assert cancelled["data"]["status"] == "cancelled"
        assert "result" not in cancelled["data"]
        assert "error" not in cancelled["data"]
        _, running = await status(http, emu, slow.task_id)
        assert running["data"]["status"] == "processing"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("shape", "allowed"),
    [("linear", set(range(100))), ("steps", {0, 25, 50, 75}), ("stuck", {0})],
)
async def test_progress_shapes_over_http(
    http: aiohttp.ClientSession, shape: str, allowed: set[int]
) -> None:
    """Polled progress follows the shape: rising 0..99, 25-point steps, or stuck at 0."""
    async with Emulator(fast(progress_shape=shape, queue_time=0.0, estimated_time=120.0)) as emu:
        task_id = await submit(http, emu)
        seen: list[int] = []
        while True:
            _, body = await status(http, emu, task_id)
            if body["data"]["status"] != "processing":
                break
            seen.append(body["data"]["progress"])
            await asyncio.sleep(0.01)
        assert body["data"]["status"] == "completed"
        assert body["data"]["progress"] == 100
        assert seen == sorted(seen)
        assert set(seen) <= allowed
        assert len(set(seen)) >= min(len(allowed), 3)


def test_progress_shape_values() -> None:
    """progress_at maps a fraction of processing to the shape's progress value."""
    assert [progress_at("linear", f) for f in (0, 0.5, 0.999, 1, 2)] == [0, 50, 99, 99, 99]
    assert [progress_at("steps", f) for f in (0, 0.3, 0.6, 0.9, 1)] == [0, 25, 50, 75, 75]
    assert [progress_at("stuck", f) for f in (0, 0.5, 1)] == [0, 0, 0]


async def test_spread_is_seeded_and_varies(http: aiohttp.ClientSession) -> None:
    """With spread > 0 run times vary around the estimate, reproducibly for a seed."""
    runs: list[list[float]] = []
    for _ in range(2):
        async with Emulator(fast(spread=0.5, seed=11)) as emu:
            ids = [await submit(http, emu) for _ in range(20)]
            runs.append([emu.task_record(t).actual_time for t in ids])
    assert runs[0] == runs[1]
    assert len(set(runs[0])) == 20
    assert min(runs[0]) < 0.3 < max(runs[0])


async def test_quirks_vary_the_response_shape(http: aiohttp.ClientSession) -> None:
    """With quirks, URLs come as strings or lists, numbers as strings, extra fields appear."""
    async with Emulator(fast(estimated_time=1.0, quirks=True)) as emu:
        task_id = await submit(http, emu)
        await sleep_until(emu.task_record(task_id).completes_at)
        url_types: set[type] = set()
        string_numbers = extras = 0
        for _ in range(40):
            _, body = await status(http, emu, task_id)
            data = body["data"]
            url_types.add(type(data["result"]["videos"][0]["url"]))
            string_numbers += isinstance(data["progress"], str)
            extras += "model" in data
        assert url_types == {str, list}
        assert string_numbers > 0
        assert extras > 0


async def test_many_tasks_are_cheap(http: aiohttp.ClientSession) -> None:
    """Thousands of tasks cost no background work: status is a function of the clock."""
    async with Emulator(fast()) as emu:
        code, _ = await post(http, emu)
        assert code == 200
        for _ in range(5000):
            emu._state.create_task(dict(BODY))
        assert len(asyncio.all_tasks()) < 10
        assert len(emu.task_ids()) == 5001


async def test_lifecycle_errors() -> None:
    """URLs are unavailable before start; start twice is refused; close is idempotent."""
    emu = Emulator()
    with pytest.raises(RuntimeError):
        _ = emu.url
    await emu.start()
    try:
        with pytest.raises(RuntimeError):
            await emu.start()
        assert emu.url != emu.storage_url
    finally:
        await emu.close()
        await emu.close()


def test_parser_builds_the_config() -> None:
    """Command-line flags map onto EmulatorConfig fields."""
    args = build_parser().parse_args(
        ["--time-scale", "50", "--rate-limit", "10", "--api-key", "a", "--api-key", "b",
         "--fault-kinds", "500,reset", "--fail-marker", "", "--quirks", "--seed", "3"]
    )  # fmt: skip
    config = config_from_args(args)
    assert config.time_scale == 50
    assert config.rate_limit == 10
    assert config.api_keys == frozenset({"a", "b"})
    assert config.fault_kinds == ("500", "reset")
    assert config.fail_marker is None
    assert config.quirks
    assert config.seed == 3


@pytest.mark.slow
async def test_command_prints_its_url(http: aiohttp.ClientSession) -> None:
    """`python -m kling_async.emulator` prints KLING_EMULATOR_URL=... and serves there."""
    async with emulator_command("--time-scale", "100") as command:
        process = command.process
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode().strip()
        key, _, url = line.partition("=")
        assert key == "KLING_EMULATOR_URL"
        assert url.startswith("http://127.0.0.1:")
        storage_line = (await asyncio.wait_for(process.stdout.readline(), 5)).decode()
        assert storage_line.startswith("KLING_EMULATOR_STORAGE_URL=http://127.0.0.1:")
        async with http.get(url + "/_stats") as response:
            assert response.status == 200
            assert (await response.json())["requests_total"] == 0
    assert process.returncode == 0
