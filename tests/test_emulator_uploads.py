"""Image uploads (API.md §4) and the durations any whole second from 3 to 15 allows."""

from __future__ import annotations

import asyncio
import io
import json
import time
from typing import Any

import aiohttp
import pytest
from support.emulator_http import AUTH, BODY, call, fast, post, sleep_until, status, submit

from kling_async.emulator import Emulator, EmulatorConfig, Fault
from kling_async.emulator._uploads import sniff_image

UPLOAD = "/v1/uploads/images"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(64)
IMAGES = {
    "image/jpeg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(64),
    "image/png": PNG,
    "image/gif": b"GIF89a" + bytes(64),
    "image/webp": b"RIFF\x24\x00\x00\x00WEBPVP8 " + bytes(64),
}


def form(data: bytes, *, field: str = "file", filename: str | None = "cat.png",
         content_type: str = "application/octet-stream") -> aiohttp.FormData:  # fmt: skip
    """A multipart body with one file part (streamed from memory, as big files must be)."""
    payload = aiohttp.FormData(quote_fields=False)
    payload.add_field(field, io.BytesIO(data), filename=filename, content_type=content_type)
    return payload


async def upload(
    http: aiohttp.ClientSession,
    emu: Emulator,
    data: Any,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    return await call(http, "POST", emu.url + UPLOAD, headers, data=data)


def test_sniffing_reads_the_bytes_not_the_name() -> None:
    """Types come from the magic bytes; GIF87a counts, a RIFF that is not WebP does not."""
    for content_type, data in IMAGES.items():
        assert sniff_image(data) == content_type
    assert sniff_image(b"GIF87a...") == "image/gif"
    assert sniff_image(b"RIFF\x00\x00\x00\x00AVI LIST") is None
    assert sniff_image(b"RIFF") is None
    assert sniff_image(b"<svg xmlns='http://www.w3.org/2000/svg'/>") is None
    assert sniff_image(b"") is None


@pytest.mark.parametrize("content_type", sorted(IMAGES))
async def test_upload_is_served_back_from_the_storage_host(
    http: aiohttp.ClientSession, content_type: str
) -> None:
    """An uploaded image gets a storage-host URL serving its bytes with the detected type."""
    data = IMAGES[content_type]
    async with Emulator(fast(clock_offset=40.0)) as emu:
        before = time.time()
        code, body = await upload(http, emu, form(data, filename="photo.jpg",
                                                     content_type="text/plain"))  # fmt: skip
        assert code == 200, body
        assert body.keys() == {"url", "filename", "content_type", "bytes", "created_at"}
        assert body["content_type"] == content_type
        assert body["bytes"] == len(data)
        assert body["filename"] == "photo.jpg"
        assert body["url"].startswith(emu.storage_url + "/uploads/")
        assert abs(body["created_at"] - (before + 40.0 / 200)) < 2
        assert (body["created_at"] * 200) == pytest.approx(round(body["created_at"] * 200))
        async with http.get(body["url"]) as response:
            assert response.status == 200
            assert response.content_type == content_type
            assert await response.read() == data
        stats = emu.stats
        assert (stats.uploads, stats.upload_requests, stats.requests_total) == (1, 1, 1)
        assert stats.storage_auth_headers == 0


async def test_upload_file_names_are_made_safe(
    http: aiohttp.ClientSession,
) -> None:
    """A file name loses its directories; without one it is named by the upload id."""
    async with Emulator(fast()) as emu:
        _, body = await upload(http, emu, form(PNG, filename="../../etc/pass wd.png"))
        assert body["filename"] == "pass_wd.png"
        _, body = await upload(http, emu, form(PNG, filename="C:\\tmp\\cat.png"))
        assert body["filename"] == "cat.png"
        payload = aiohttp.FormData()
        payload.add_field("file", io.BytesIO(PNG), filename="", content_type="image/png")
        _, body = await upload(http, emu, payload)
        assert body["filename"].startswith("img_") and body["filename"].endswith(".png")


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"just some text", "not a JPEG, PNG, GIF or WebP"),
        (b"RIFF\x00\x00\x00\x00AVI LIST", "not a JPEG, PNG, GIF or WebP"),
        (b"", "not a JPEG, PNG, GIF or WebP"),
    ],
)
async def test_other_bytes_are_refused(
    http: aiohttp.ClientSession, data: bytes, needle: str
) -> None:
    """Bytes that are not one of the four image types get 400 naming the file field."""
    async with Emulator(fast(error_style="error_object")) as emu:
        code, body = await upload(http, emu, form(data, content_type="image/png"))
        assert code == 400
        assert needle in body["error"]["message"]
        assert body["error"]["param"] == "file"
        assert emu.stats.uploads == 0
        assert emu.stats.rejected_uploads == 1


async def test_malformed_requests_are_refused(http: aiohttp.ClientSession) -> None:
    """No file field, or no multipart body at all, get 400."""
    async with Emulator(fast()) as emu:
        code, body = await upload(http, emu, form(PNG, field="image"))
        assert code == 400 and body["message"].startswith("file: required")
        async with http.post(emu.url + UPLOAD, json={"file": "x"}, headers=AUTH) as response:
            assert response.status == 400
            assert "multipart/form-data" in (await response.json())["message"]
        assert emu.stats.rejected_uploads == 2


async def test_too_large_uploads_get_413(http: aiohttp.ClientSession) -> None:
    """A file over max_upload_bytes gets 413; one exactly at the limit is stored."""
    async with Emulator(fast(max_upload_bytes=len(PNG))) as emu:
        code, _ = await upload(http, emu, form(PNG))
        assert code == 200
        code, body = await upload(http, emu, form(PNG + b"\x00"))
        assert code == 413
        assert str(len(PNG)) in body["message"]
        assert emu.stats.uploads == 1


async def test_default_limit_is_ten_mebibytes(http: aiohttp.ClientSession) -> None:
    """By default 10 MiB are accepted and a byte more is refused."""
    assert EmulatorConfig().max_upload_bytes == 10 * 1024 * 1024
    big = PNG + bytes(10 * 1024 * 1024 - len(PNG))
    async with Emulator(fast()) as emu:
        assert (await upload(http, emu, form(big)))[0] == 200
        assert (await upload(http, emu, form(big + b"\x00")))[0] == 413


async def test_uploads_need_a_key_and_count_as_api_requests(
    http: aiohttp.ClientSession,
) -> None:
    """Uploads answer 401 without a Bearer token and fall under the rate limit."""
    async with Emulator(fast(rate_limit=2)) as emu:
        code, _ = await upload(http, emu, form(PNG), headers={})
        assert code == 401
        assert (await upload(http, emu, form(PNG)))[0] == 200
        assert (await upload(http, emu, form(PNG)))[0] == 429
        assert emu.stats.upload_requests == 3
        assert emu.stats.rejected_auth == 1
        assert emu.stats.rate_limited == 1


async def test_upload_faults(http: aiohttp.ClientSession) -> None:
    """Faults hit the upload route: before stores nothing, after stores then fails."""
    async with Emulator(fast()) as emu:
        emu.inject(Fault("503", route="upload"))
        assert (await upload(http, emu, form(PNG)))[0] == 503
        assert emu.stats.uploads == 0
        emu.inject(Fault("reset", route="upload", when="after"))
        with pytest.raises(aiohttp.ClientConnectionError):
            await upload(http, emu, form(PNG))
        assert (emu.stats.uploads, emu.stats.ambiguous_uploads) == (1, 1)
        emu.inject(Fault("500", route="any"))  # "any" includes uploads
        assert (await upload(http, emu, form(PNG)))[0] == 500
        emu.inject(Fault("truncated", route="upload"))
        async with http.post(emu.url + UPLOAD, data=form(PNG), headers=AUTH) as response:
            assert response.status == 200
            with pytest.raises(json.JSONDecodeError):
                await response.json()
        assert emu.stats.faults_injected == {"503": 1, "reset": 1, "500": 1, "truncated": 1}
        assert emu.stats.uploads == 1


async def test_random_faults_reach_uploads(http: aiohttp.ClientSession) -> None:
    """With fault_rate 1 every upload gets a fault; the "after" ones stored an image."""
    async with Emulator(fast(fault_rate=1.0, fault_kinds=("500",))) as emu:
        for _ in range(20):
            assert (await upload(http, emu, form(PNG)))[0] == 500
        assert 0 < emu.stats.uploads == emu.stats.ambiguous_uploads < 20


async def test_quirks_sometimes_wrap_the_answer_in_data(http: aiohttp.ClientSession) -> None:
    """With quirks the upload answer comes bare or under "data"."""
    async with Emulator(fast(quirks=True)) as emu:
        shapes = set()
        for _ in range(20):
            _, body = await upload(http, emu, form(PNG))
            shapes.add("data" in body)
            assert (body.get("data") or body)["content_type"] == "image/png"
        assert shapes == {True, False}


async def test_upload_urls_expire(http: aiohttp.ClientSession) -> None:
    """An upload URL is 403 once url_ttl has passed; forged or unknown ones are 404."""
    async with Emulator(fast(url_ttl=40.0)) as emu:  # 0.2 s of real time
        _, body = await upload(http, emu, form(PNG))
        url: str = body["url"]
        for bad in (url.replace(".png", ".jpg"), url.replace("img_", "img_X"),
                    url[:-6] + "0" + url[-6:]):  # fmt: skip
            async with http.get(bad) as response:
                assert response.status == 404, bad
        await asyncio.sleep(0.3)
        async with http.get(url) as response:
            assert response.status == 403


async def test_generations_accept_uploaded_urls(http: aiohttp.ClientSession) -> None:
    """An uploaded URL works in image_urls and last_frame_image; unknown ones are refused."""
    async with Emulator(fast()) as emu:
        _, first = await upload(http, emu, form(PNG))
        _, last = await upload(http, emu, form(IMAGES["image/jpeg"]))
        code, body = await post(http, emu, {**BODY, "image_urls": [first["url"]],
                                               "last_frame_image": last["url"]})  # fmt: skip
        assert code == 200, body
        bogus = f"{emu.storage_url}/uploads/img_NOPE/123-abc.png"
        code, body = await post(http, emu, {**BODY, "image_urls": [bogus]})
        assert code == 400 and body["message"].startswith("image_urls: cannot fetch")
        code, body = await post(http, emu, {**BODY, "image_urls": ["https://e.com/a.jpg"],
                                               "last_frame_image": bogus})  # fmt: skip
        assert code == 400 and body["message"].startswith("last_frame_image: cannot fetch")


async def test_expired_uploads_cannot_be_used(http: aiohttp.ClientSession) -> None:
    """Once its URL expired, an upload is refused in a generation request."""
    async with Emulator(fast(url_ttl=20.0)) as emu:  # 0.1 s of real time
        _, first = await upload(http, emu, form(PNG))
        problem = emu._state.uploads.url_problem(emu.storage_url, first["url"], time.time() - 1)
        assert problem is None  # it was fine when it was new
        await asyncio.sleep(0.2)
        code, body = await post(http, emu, {**BODY, "image_urls": [first["url"]]})
        assert code == 400 and "expired" in body["message"]


# -- durations and URL lifetime --------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"duration": 3},
        {"duration": 7},
        {"duration": 13},
        {"duration": 15},
        {"duration": 3, "mode": "pro"},
        {"duration": 10, "mode": "pro"},
        {"duration": 4, "image_urls": ["https://e.com/a.jpg"]},
        {"duration": 10, "image_urls": ["https://e.com/a.jpg"], "mode": "pro"},
    ],
)
async def test_any_whole_duration_the_matrix_allows(
    http: aiohttp.ClientSession, fields: dict[str, Any]
) -> None:
    """3-15 s text-to-video, at most 10 s for image-to-video and pro, are accepted."""
    async with Emulator(fast()) as emu:
        code, body = await post(http, emu, {**BODY, **fields})
        assert code == 200, body


async def test_result_urls_last_72_hours_by_default(http: aiohttp.ClientSession) -> None:
    """url_ttl defaults to 72 emulated hours (259200 s)."""
    assert EmulatorConfig().url_ttl == 259200
    async with Emulator(fast(estimated_time=1.0)) as emu:
        task_id = await submit(http, emu)
        await sleep_until(emu.task_record(task_id).completes_at)
        _, body = await status(http, emu, task_id)
        expires_at = body["data"]["result"]["videos"][0]["expires_at"]
        assert expires_at - time.time() == pytest.approx(259200 / 200, abs=2)
