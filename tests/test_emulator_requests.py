"""Submits as API.md §4 has them: idempotency keys, lost responses, response and error shapes."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from support.emulator_http import AUTH, BODY, SUBMIT, fast, post, status, submit

from kling_async.emulator import Emulator, Fault
from kling_async.emulator._faults import hang

KEY = "7f3c1a2e-b0d4-4c55-9d8e-2a61f0c9e001"


def keyed(key: str = KEY, token: str = "test-key") -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Idempotency-Key": key}


async def send(
    http: aiohttp.ClientSession,
    emu: Emulator,
    body: Any = None,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> tuple[int, Any, aiohttp.typedefs.LooseHeaders]:
    """POST a submit; (status, JSON body, headers)."""
    async with http.post(
        emu.url + SUBMIT, json=BODY if body is None else body,
        headers=keyed() if headers is None else headers, **kwargs,
    ) as response:  # fmt: skip
        return response.status, await response.json(content_type=None), response.headers


def message_of(body: dict[str, Any]) -> str:
    """The message of an error body in any of the three shapes."""
    if "error" in body:
        return str(body["error"]["message"])
    return str(body["message"])


# -- idempotency keys ------------------------------------------------------------------


async def test_same_key_and_body_replays_the_original_task(
    http: aiohttp.ClientSession,
) -> None:
    """A retry with the same key and body gets the original response, marked replayed."""
    async with Emulator(fast()) as emu:
        code, first, headers = await send(http, emu)
        assert code == 200
        assert "Idempotency-Replayed" not in headers
        code, again, headers = await send(http, emu)
        assert code == 200
        assert again == first
        assert headers["Idempotency-Replayed"] == "true"
        task_id = first["data"][0]["task_id"]
        stats = emu.stats
        assert stats.submissions == 1
        assert stats.idempotent_replays == 1
        assert (stats.submits_with_key, stats.submits_without_key) == (2, 0)
        assert stats.tasks_by_key == {KEY: [task_id]}
        assert emu.task_record(task_id).idempotency_key == KEY


async def test_same_body_means_the_same_json_not_the_same_bytes(
    http: aiohttp.ClientSession,
) -> None:
    """Key order and whitespace do not make a body different."""
    async with Emulator(fast()) as emu:
        first = json.dumps({"model": "kling-v3", "prompt": "a cat", "duration": 5})
        second = json.dumps({"duration": 5, "prompt": "a cat", "model": "kling-v3"}, indent=2)
        answers = []
        for raw in (first, second):
            async with http.post(
                emu.url + SUBMIT, data=raw, headers={**keyed(), "Content-Type": "application/json"}
            ) as response:
                answers.append(await response.json())
        assert answers[0] == answers[1]
        assert emu.stats.submissions == 1


async def test_same_key_with_another_body_is_a_409(http: aiohttp.ClientSession) -> None:
    """Reusing a key for a different request is refused with 409 and creates nothing."""
    async with Emulator(fast()) as emu:
        await send(http, emu)
        code, body, _ = await send(http, emu, {**BODY, "duration": 10})
        assert code == 409
        assert body["code"] == 409
        assert "Idempotency-Key" in body["message"]
        assert "different request" in body["message"]
        assert emu.stats.key_conflicts == 1
        assert emu.stats.submissions == 1


async def test_keys_are_scoped_per_api_key(http: aiohttp.ClientSession) -> None:
    """The same idempotency key sent with two API keys makes two tasks."""
    async with Emulator(fast()) as emu:
        _, one, _ = await send(http, emu, headers=keyed(token="alice"))
        _, two, _ = await send(http, emu, headers=keyed(token="bob"))
        assert one["data"][0]["task_id"] != two["data"][0]["task_id"]
        assert len(emu.stats.tasks_by_key[KEY]) == 2
        assert emu.stats.idempotent_replays == 0


@pytest.mark.parametrize("key", ["", "a" * 192, "has space", "tab\there", "caf\u00e9"])
async def test_malformed_keys_get_400_naming_the_header(
    http: aiohttp.ClientSession, key: str
) -> None:
    """A key that is not 1-191 visible ASCII characters gets 400 naming Idempotency-Key."""
    async with Emulator(fast(error_style="error_object")) as emu:
        headers = {"Authorization": "Bearer test-key", "Idempotency-Key": key}
        code, body, _ = await send(http, emu, headers=headers)
        assert code == 400
        assert body["error"]["param"] == "Idempotency-Key"
        assert body["error"]["message"].startswith("Idempotency-Key: ")
        assert emu.stats.submissions == 0


@pytest.mark.parametrize("key", ["a" * 191, "!", "~", "A-Za-z0-9_.:/+=~!"])
async def test_edge_keys_are_accepted(http: aiohttp.ClientSession, key: str) -> None:
    """Keys of 1 or 191 characters and any visible ASCII are valid."""
    async with Emulator(fast()) as emu:
        code, _, _ = await send(http, emu, headers=keyed(key))
        assert code == 200
        assert emu.stats.tasks_by_key.keys() == {key}


async def test_submit_without_a_key_still_works(http: aiohttp.ClientSession) -> None:
    """Submits without a key each create a task, and are counted as keyless."""
    async with Emulator(fast()) as emu:
        for _ in range(2):
            code, _ = await post(http, emu)
            assert code == 200
        assert emu.stats.submissions == 2
        assert (emu.stats.submits_with_key, emu.stats.submits_without_key) == (0, 2)
        assert emu.stats.tasks_by_key == {}


async def test_a_refused_body_does_not_claim_the_key(http: aiohttp.ClientSession) -> None:
    """A key whose first request got 400 is still free for a valid request."""
    async with Emulator(fast()) as emu:
        code, _, _ = await send(http, emu, {**BODY, "duration": 99})
        assert code == 400
        code, _, _ = await send(http, emu)
        assert code == 200
        assert emu.stats.submissions == 1


async def test_concurrent_retries_create_one_task(http: aiohttp.ClientSession) -> None:
    """Twenty simultaneous submits with one key create exactly one task."""
    async with Emulator(fast()) as emu:
        answers = await asyncio.gather(*(send(http, emu) for _ in range(20)))
        assert {body["data"][0]["task_id"] for _, body, _ in answers} == set(
            emu.stats.created_tasks
        )
        assert emu.stats.submissions == 1
        assert emu.stats.idempotent_replays == 19


# -- lost responses --------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["reset", "500", "truncated", "body_error", "echo_key"])
async def test_a_retry_after_a_lost_response_replays(
    http: aiohttp.ClientSession, kind: str
) -> None:
    """A task created before its response was lost is what the keyed retry gets back."""
    async with Emulator(fast()) as emu:
        emu.inject(Fault(kind, route="submit", when="after"))
        with contextlib.suppress(aiohttp.ClientConnectionError, json.JSONDecodeError):
            await send(http, emu)  # the response is lost, or says nothing of the task
        ((lost_id, _),) = emu.stats.ambiguous_submissions
        code, body, headers = await send(http, emu)
        assert code == 200
        assert body["data"][0]["task_id"] == lost_id
        assert headers["Idempotency-Replayed"] == "true"
        assert emu.stats.submissions == 1


async def test_hang_after_creates_then_never_answers(http: aiohttp.ClientSession) -> None:
    """ "hang" after a submit creates the task and answers nothing until the client gives up."""
    async with Emulator(fast()) as emu:
        emu.inject(Fault("hang", route="submit", when="after"))
        with pytest.raises(asyncio.TimeoutError):
            await send(http, emu, timeout=aiohttp.ClientTimeout(total=0.3))
        assert emu.stats.submissions == 1
        code, body, headers = await send(http, emu)
        assert code == 200
        assert headers["Idempotency-Replayed"] == "true"
        assert [body["data"][0]["task_id"]] == emu.task_ids()
        assert emu.stats.faults_injected == {"hang": 1}


async def test_hang_before_creates_nothing(http: aiohttp.ClientSession) -> None:
    """ "hang" before a submit creates nothing, then normal service resumes."""
    async with Emulator(fast()) as emu:
        emu.inject(Fault("hang", route="any"))
        with pytest.raises(asyncio.TimeoutError):
            await send(http, emu, timeout=aiohttp.ClientTimeout(total=0.3))
        assert emu.stats.submissions == 0
        code, _, headers = await send(http, emu)
        assert code == 200
        assert "Idempotency-Replayed" not in headers


async def test_hang_on_status_answers_nothing(http: aiohttp.ClientSession) -> None:
    """A "hang" on status answers nothing; the next request is served normally."""
    async with Emulator(fast()) as emu:
        task_id = await submit(http, emu)
        emu.inject(Fault("hang", route="status"))
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(status(http, emu, task_id), 0.3)
        code, _ = await status(http, emu, task_id)
        assert code == 200


async def test_hang_ends_when_the_client_goes_away() -> None:
    """The hanging handler returns once the connection is gone (no handler left behind)."""

    class Transport:
        def is_closing(self) -> bool:
            return False

    request = SimpleNamespace(transport=Transport())
    loop = asyncio.get_running_loop()
    loop.call_later(0.1, setattr, request, "transport", None)
    response = await asyncio.wait_for(hang(request), 5)  # type: ignore[arg-type]
    assert response.status == 499  # the dummy that is never sent


async def test_random_after_faults_never_create_twice_per_key(
    http: aiohttp.ClientSession,
) -> None:
    """Retrying every prompt with its key through random faults makes one task per key."""
    config = fast(fault_rate=0.5, fault_kinds=("500", "503", "reset", "truncated", "429"),
                  retry_after=0.0, seed=12)  # fmt: skip
    async with Emulator(config) as emu:
        prompts = [f"keyed cat {i}" for i in range(40)]
        for i, prompt in enumerate(prompts):
            for _ in range(50):
                try:
                    code, body, _ = await send(
                        http, emu, {**BODY, "prompt": prompt}, keyed(f"key-{i}")
                    )
                except (aiohttp.ClientConnectionError, json.JSONDecodeError):
                    continue
                if code == 200 and body.get("code") == 200:
                    break
            else:
                pytest.fail(f"{prompt!r} never got through")
        stats = emu.stats
        assert stats.submissions == len(prompts)
        assert all(len(ids) == 1 for ids in stats.tasks_by_key.values())
        assert len(stats.tasks_by_key) == len(prompts)
        assert any(when == "after" for _, _, when in stats.faulted_submissions)
        assert stats.idempotent_replays >= len(stats.ambiguous_submissions) > 0


# -- response version ------------------------------------------------------------------


async def test_response_version_header_turns_data_into_an_object(
    http: aiohttp.ClientSession,
) -> None:
    """With X-APIMart-Response-Version: 2026-07-27 the submit's data is an object."""
    async with Emulator(fast()) as emu:
        headers = {**AUTH, "X-APIMart-Response-Version": "2026-07-27"}
        code, body, _ = await send(http, emu, headers=headers)
        assert code == 200
        assert body["code"] == 200
        assert body["request_id"].startswith("req_")
        data = body["data"]
        assert data["object"] == "generation.task"
        assert data["status"] == "submitted"
        assert data["id"] == emu.task_ids()[0]
        _, old, _ = await send(http, emu, headers={**AUTH, "X-APIMart-Response-Version": "1"})
        assert isinstance(old["data"], list)


# -- error shapes ----------------------------------------------------------------------


async def _every_error(http: aiohttp.ClientSession, emu: Emulator) -> dict[int, Any]:
    """One of each error the API host sends, by HTTP status."""
    seen: dict[int, Any] = {}
    _, seen[400], _ = await send(http, emu, {**BODY, "duration": "5"}, AUTH)
    _, seen[401], _ = await send(http, emu, headers={})
    _, seen[404] = await status(http, emu, "task_NOPE")
    await send(http, emu)
    _, seen[409], _ = await send(http, emu, {**BODY, "prompt": "other"})
    emu.inject(Fault("500", route="status"))
    _, seen[500] = await status(http, emu, "task_NOPE")
    emu.inject(Fault("429", route="status"))
    _, seen[429] = await status(http, emu, "task_NOPE")
    form = aiohttp.FormData()
    form.add_field("file", b"\x89PNG\r\n\x1a\n" + b"\0" * 2000, filename="big.png")
    async with http.post(emu.url + "/v1/uploads/images", data=form, headers=AUTH) as response:
        seen[response.status] = await response.json()
    return seen


@pytest.mark.parametrize("style", ["code", "error_object", "success_false"])
async def test_error_style_shapes_every_api_error(http: aiohttp.ClientSession, style: str) -> None:
    """Every API error (400, 401, 404, 409, 413, 429, 5xx) comes in the configured shape."""
    async with Emulator(fast(error_style=style, max_upload_bytes=1000)) as emu:
        seen = await _every_error(http, emu)
    assert sorted(seen) == [400, 401, 404, 409, 413, 429, 500]
    for http_status, body in seen.items():
        assert message_of(body)
        if style == "code":
            assert body.keys() == {"code", "message"}
            assert body["code"] == http_status
        elif style == "success_false":
            assert body == {"success": False, "message": body["message"]}
        else:
            assert body.keys() == {"error", "request_id"}
            assert body["error"].keys() == {"message", "type", "code", "param"}
            assert body["request_id"].startswith("req_")
    if style == "error_object":
        assert seen[400]["error"]["param"] == "duration"
        assert seen[400]["error"]["type"] == "invalid_request_error"
        assert seen[409]["error"]["param"] == "Idempotency-Key"
        assert seen[413]["error"]["param"] == "file"
        assert seen[404]["error"]["param"] is None
        assert seen[401]["error"]["type"] == "authentication_error"
        assert seen[429]["error"]["type"] == "rate_limit_error"


async def test_mixed_error_style_varies_per_response(http: aiohttp.ClientSession) -> None:
    """error_style "mixed" draws one of the three shapes for each response."""
    async with Emulator(fast(error_style="mixed")) as emu:
        shapes = set()
        for _ in range(60):
            code, body = await status(http, emu, "task_NOPE")
            assert code == 404
            shapes.add(frozenset(body))
        assert shapes == {
            frozenset({"code", "message"}),
            frozenset({"error", "request_id"}),
            frozenset({"success", "message"}),
        }


async def test_rate_limit_429_follows_the_error_style(http: aiohttp.ClientSession) -> None:
    """The rate limit's own 429 uses the style and still sends Retry-After."""
    async with Emulator(fast(error_style="success_false", rate_limit=1, retry_after=2)) as emu:
        await post(http, emu)
        async with http.post(emu.url + SUBMIT, json=BODY, headers=AUTH) as response:
            assert response.status == 429
            assert response.headers["Retry-After"] == "2"
            assert (await response.json())["success"] is False


async def test_body_error_keeps_its_code_shape(http: aiohttp.ClientSession) -> None:
    """ "body_error" is an HTTP 200 whose body code is 500, whatever the error style."""
    async with Emulator(fast(error_style="error_object")) as emu:
        emu.inject(Fault("body_error", route="submit"))
        code, body = await post(http, emu)
        assert (code, body) == (200, {"code": 500, "message": "internal"})


async def test_aiohttp_errors_on_api_paths_follow_the_style(
    http: aiohttp.ClientSession,
) -> None:
    """Unknown API routes (404), wrong methods (405) and oversized bodies (413) are styled."""
    async with Emulator(fast(error_style="error_object")) as emu:
        async with http.get(emu.url + "/v1/nope", headers=AUTH) as response:
            assert response.status == 404
            assert (await response.json())["error"]["message"] == "not found"
        async with http.delete(emu.url + "/v1/tasks/task_X", headers=AUTH) as response:
            assert response.status == 405
            assert "GET" in response.headers["Allow"]
            assert (await response.json())["error"]["type"] == "api_error"
        huge = json.dumps({**BODY, "prompt": "x" * (2 * 1024 * 1024)}).encode()
        async with http.post(emu.url + SUBMIT, data=io.BytesIO(huge), headers={
            **AUTH, "Content-Type": "application/json"}) as response:  # fmt: skip
            assert response.status == 413
            assert (await response.json())["error"]["code"] == "payload_too_large"
        assert emu.stats.submissions == 0
        async with http.get(emu.url + "/_nope") as response:
            assert response.status == 404  # control paths keep aiohttp's plain answer
            assert response.content_type == "text/plain"
