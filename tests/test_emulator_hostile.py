"""Hostile-server faults: unreadable bodies, the wrong task, a leaked key, absurd Retry-After."""

from __future__ import annotations

import contextlib
from typing import Any

import aiohttp
import pytest
from support.emulator_http import BODY, SUBMIT, fast, post, sleep_until, status, submit

from kling_async.emulator import DEFAULT_FAULT_KINDS, Emulator, EmulatorConfig, Fault

TOKEN = "sk-live-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def finished(http: aiohttp.ClientSession, emu: Emulator, prompt: str) -> str:
    """Submit `prompt` and wait until its task has ended."""
    task_id = await submit(http, emu, prompt=prompt)
    await sleep_until(emu.task_record(task_id).completes_at)
    return task_id


async def test_garbled_bodies_cannot_be_read(http: aiohttp.ClientSession) -> None:
    """ "garbled" sends valid JSON claiming "completed" whose videos are unusable, in each
    of its two ways."""
    async with Emulator(fast(estimated_time=1.0)) as emu:
        task_id = await submit(http, emu)
        emu.inject(Fault("garbled", route="status", times=40))
        seen = set()
        for _ in range(40):
            code, body = await status(http, emu, task_id)
            assert code == 200
            data = body["data"]
            assert (data["id"], data["status"]) == (task_id, "completed")
            videos = data["result"]["videos"]
            if isinstance(videos, list):
                assert videos[0]["url"] is None
                seen.add("url")
            else:
                assert isinstance(videos, str)
                seen.add("videos")
        assert seen == {"url", "videos"}
        assert emu.stats.faults_injected == {"garbled": 40}


async def test_garbage_fields_keep_what_must_be_read(http: aiohttp.ClientSession) -> None:
    """ "garbage_fields" puts junk in the optional fields and adds unknown extras, but the
    id, the status and a completed task's videos stay as they were."""
    async with Emulator(fast(estimated_time=1.0, seed=3)) as emu:
        task_id = await finished(http, emu, "a cat")
        _, clean = await status(http, emu, task_id)
        emu.inject(Fault("garbage_fields", route="status", times=20))
        junk = set()
        for _ in range(20):
            code, body = await status(http, emu, task_id)
            assert code == 200
            data = body["data"]
            assert (data["id"], data["status"]) == (task_id, "completed")
            assert data["result"]["videos"][0]["url"][0].startswith(emu.storage_url)
            assert "x_debug" in data
            junk |= {
                k
                for k in ("progress", "estimated_time", "cost")
                if data.get(k) != clean["data"].get(k)
            }
        assert junk == {"progress", "estimated_time", "cost"}
        assert emu.stats.faults_injected == {"garbage_fields": 20}


async def test_wrong_id_names_another_task(http: aiohttp.ClientSession) -> None:
    """ "wrong_id" answers a valid body about another task (a made-up one if there is none)."""
    async with Emulator(fast()) as emu:
        alone = await submit(http, emu)
        emu.inject(Fault("wrong_id", route="status"))
        _, body = await status(http, emu, alone)
        assert body["data"]["id"] != alone
        assert body["data"]["id"].startswith("task_")
        other = await submit(http, emu)
        emu.inject(Fault("wrong_id"))
        _, body = await status(http, emu, alone)
        assert body["data"]["id"] == other
        assert body["data"]["status"] in ("pending", "processing")


@pytest.mark.parametrize("style", ["code", "error_object", "success_false"])
async def test_echo_key_on_status_leaks_the_key_everywhere(
    http: aiohttp.ClientSession, style: str
) -> None:
    """ "echo_key" on status repeats the Bearer token in errors, progress, error and URL."""
    async with Emulator(fast(estimated_time=1.0, error_style=style)) as emu:
        ok = await finished(http, emu, "a cat")
        doomed = await finished(http, emu, "a cat [fail]")
        emu.inject(Fault("echo_key", route="status", times=60))
        errors = bodies = 0
        for task_id in [ok, doomed] * 30:
            async with http.get(f"{emu.url}/v1/tasks/{task_id}", headers=AUTH) as response:
                text = await response.text()
                body = await response.json()
            assert TOKEN in text
            if response.status == 500:
                errors += 1
                if style == "code":
                    assert body["code"] == TOKEN
                elif style == "error_object":
                    assert body["error"]["code"] == TOKEN
                message = body["error"]["message"] if style == "error_object" else body["message"]
                assert TOKEN in message
                continue
            bodies += 1
            data = body["data"]
            assert data["progress"] == TOKEN
            if task_id == doomed:
                assert TOKEN in data["error"]["message"]
            else:
                assert TOKEN in data["result"]["videos"][0]["url"][0]
        assert errors > 5 and bodies > 5


async def test_echo_key_url_still_downloads(http: aiohttp.ClientSession) -> None:
    """The leaky result URL of "echo_key" is still a working URL (the key in its query)."""
    async with Emulator(fast(estimated_time=1.0, seed=1)) as emu:
        task_id = await finished(http, emu, "a cat")
        emu.inject(Fault("echo_key", route="status", times=20))
        for _ in range(20):
            async with http.get(f"{emu.url}/v1/tasks/{task_id}", headers=AUTH) as response:
                if response.status == 200:
                    url = (await response.json())["data"]["result"]["videos"][0]["url"][0]
                    break
                await response.read()
        else:
            pytest.fail("no body variant in 20 draws")
        assert "api_key=" in url
        async with http.get(url) as response:
            assert response.status == 200
            await response.read()


async def test_echo_key_on_submit_is_an_error_echoing_the_key(
    http: aiohttp.ClientSession,
) -> None:
    """ "echo_key" on submit answers 500 with the key in message and code; nothing created."""
    async with Emulator(fast()) as emu:
        emu.inject(Fault("echo_key", route="submit"))
        code, body = await post(http, emu, headers=AUTH)
        assert code == 500
        assert body["code"] == TOKEN
        assert TOKEN in body["message"]
        assert emu.stats.submissions == 0


@pytest.mark.parametrize(
    "value", ["1e12", "inf", "-1", "120", "0.5", "Wed, 21 Oct 2015 07:28:00 GMT", "soon"]
)
async def test_retry_after_override_is_sent_verbatim(
    http: aiohttp.ClientSession, value: str
) -> None:
    """A 429 fault's retry_after string is the Retry-After header, as is."""
    async with Emulator(fast(retry_after=0.05)) as emu:
        emu.inject(Fault("429", route="submit", retry_after=value))
        async with http.post(emu.url + SUBMIT, json=BODY, headers=AUTH) as response:
            assert response.status == 429
            assert response.headers["Retry-After"] == value
        emu.inject(Fault("429", route="status"))
        async with http.get(f"{emu.url}/v1/tasks/task_X", headers=AUTH) as response:
            assert response.headers["Retry-After"] == "0.05"  # the config's, without override


async def test_retry_after_override_over_http(http: aiohttp.ClientSession) -> None:
    """POST /_faults takes retry_after too."""
    async with Emulator(fast()) as emu:
        fault = {"kind": "429", "route": "status", "retry_after": "inf"}
        async with http.post(emu.url + "/_faults", json=fault) as response:
            assert response.status == 200
            await response.read()
        async with http.get(f"{emu.url}/v1/tasks/task_X", headers=AUTH) as response:
            assert (response.status, response.headers["Retry-After"]) == (429, "inf")


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"kind": "500", "retry_after": "1"}, "retry_after"),
        ({"kind": "429", "retry_after": ""}, "retry_after"),
        ({"kind": "429", "retry_after": "1\r\nX-Evil: yes"}, "retry_after"),
        ({"kind": "429", "retry_after": 5}, "retry_after"),
        ({"kind": "garbled", "route": "submit"}, "garbled"),
        ({"kind": "wrong_id", "route": "upload"}, "wrong_id"),
        ({"kind": "echo_key", "route": "storage"}, "echo_key"),
    ],
)
def test_hostile_faults_are_checked(fields: dict[str, Any], needle: str) -> None:
    """Overrides only on 429s, header-safe; status-only kinds refuse other routes."""
    with pytest.raises((ValueError, TypeError), match=needle):
        Fault(**fields)


def test_hang_applies_everywhere() -> None:
    """ "hang" can hit any route, storage included."""
    for route in ("submit", "status", "upload", "storage", "any"):
        assert Fault("hang", route=route).route == route  # type: ignore[arg-type]


async def test_random_faults_draw_only_the_default_kinds(
    http: aiohttp.ClientSession,
) -> None:
    """Without fault_kinds, random faults never draw the hostile kinds."""
    async with Emulator(fast(fault_rate=1.0, slow_delay=0.0, seed=3)) as emu:
        for _ in range(150):
            with contextlib.suppress(aiohttp.ClientError, ValueError):
                await status(http, emu, "task_X")
        faults = emu.stats.faults_injected
        assert set(faults) == set(DEFAULT_FAULT_KINDS)
        assert sum(faults.values()) == emu.stats.requests_total  # resets are retried once
    assert not {"garbled", "wrong_id", "echo_key", "hang"} & set(DEFAULT_FAULT_KINDS)


async def test_random_hostile_faults_when_asked(http: aiohttp.ClientSession) -> None:
    """With fault_kinds naming them, random faults draw the hostile kinds where they apply."""
    config = fast(fault_rate=1.0, fault_kinds=("garbled", "wrong_id", "echo_key"), seed=5)
    async with Emulator(config) as emu:
        task_id = emu._state.create_task(dict(BODY)).task_id  # no request: no fault
        for _ in range(60):
            await status(http, emu, task_id, headers=AUTH)
        assert set(emu.stats.faults_injected) == {"garbled", "wrong_id", "echo_key"}
        emu.reset_stats()
        for _ in range(10):  # on submits only echo_key applies
            code, _ = await post(http, emu, headers=AUTH)
            assert code == 500
        assert emu.stats.faults_injected == {"echo_key": 10}
    assert EmulatorConfig(fault_kinds="hang, garbled").fault_kinds == ("hang", "garbled")
