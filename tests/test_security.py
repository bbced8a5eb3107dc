"""Key hygiene and hostile responses: the key stays secret, broken answers stay KlingErrors."""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web
from support.scripted import ScriptedTransport, scripted_session, status_body, task_of
from support.sessions import fast_session

from kling_async import (
    DownloadError,
    InvalidResponseError,
    KlingError,
    KlingSession,
    RequestValidationError,
    SubmissionUncertainError,
    TaskTimeoutError,
    TextToVideo,
    Video,
    VideoResult,
)
from kling_async.emulator import Emulator, EmulatorConfig, Fault, sample_video
from kling_async.testing import FAST_RETRY

SECRET = "sk-LEAKCANARY-7f3a9c1e5b"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Recorder:
    """A tiny server that records every request's headers and answers with a handler."""

    def __init__(self, handler: Handler | None = None) -> None:
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.handler = handler

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.path_qs, dict(request.headers)))
        if self.handler is None:
            return web.Response(body=sample_video(), content_type="video/mp4")
        return await self.handler(request)

    @property
    def saw_authorization(self) -> bool:
        return any("Authorization" in headers for _, headers in self.requests)


@asynccontextmanager
async def serve(recorder: Recorder) -> AsyncIterator[str]:
    """Run ``recorder`` on a loopback port; yield its base URL."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", recorder.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def json_answer(body: Any, status: int = 200) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(text=json.dumps(body), status=status, content_type="application/json")

    return handler


def raw_answer(raw: bytes, status: int = 200, content_type: str = "application/json") -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(body=raw, status=status, content_type=content_type)

    return handler


def hostile_session(url: str) -> KlingSession:
    return fast_session(url, api_key=SECRET)


def texts_of(obj: object) -> list[str]:
    """Every text a user could see of an object: str, repr, and for errors the whole chain."""
    out = [str(obj), repr(obj)]
    if isinstance(obj, BaseException):
        out.append("".join(traceback.format_exception(obj)))
        out.extend(repr(arg) for arg in obj.args)
        cause = obj.__cause__ or obj.__context__
        if cause is not None:
            out.extend(texts_of(cause))
    return out


@pytest.mark.slow
async def test_the_key_never_appears_in_reprs_logs_or_errors(tmp_path, caplog):
    """With faults, failures and a key-echoing server, no repr, log or error text shows the key."""
    caplog.set_level(logging.DEBUG)  # every logger, aiohttp's included
    seen: list[object] = []
    config = EmulatorConfig(time_scale=200.0, retry_after=0.01, api_keys=[SECRET])
    async with Emulator(config) as emu:
        session = hostile_session(emu.url)
        seen += [session, session.config, session._transport, session._client]
        emu.inject(Fault("500", route="status"), Fault("429", route="status"))
        emu.inject(Fault("echo_key", route="status", times=4))
        task = await session.submit(TextToVideo("a secret cat"))
        result = await task
        seen += [task, task.snapshot, result, await session.download(result, tmp_path / "v.mp4")]
        failing = await session.submit(TextToVideo("a cat [fail]"))
        for attempt in (failing.wait(), session.task("task_unknown").wait(), task.wait(1e-9)):
            try:
                await attempt
            except KlingError as exc:
                seen.append(exc)
        emu.inject(Fault("echo_key", route="submit", times=FAST_RETRY.max_attempts))
        try:
            await session.submit(TextToVideo("ambiguous"))
        except SubmissionUncertainError as exc:
            seen.append(exc)
        await session.close()
        seen.append(session)
    assert len(seen) >= 12
    assert_no_key(seen, caplog)


def assert_no_key(seen: list[object], caplog: pytest.LogCaptureFixture) -> None:
    """Neither the key nor any 8-character piece of it shows in objects or log records."""
    pieces = {SECRET[i : i + 8] for i in range(len(SECRET) - 7)}
    for obj in seen:
        for text in texts_of(obj):
            assert not any(piece in text for piece in pieces), (type(obj), text)
    assert caplog.records
    for record in caplog.records:
        shown = record.getMessage() + repr(record.args)
        assert not any(piece in shown for piece in pieces), shown


ECHOES = {
    "a message cut across the key": (400, {"code": 400, "message": "x" * 490 + SECRET}, {}),
    "the error code": (400, {"code": SECRET, "message": "bad"}, {}),
    "the error object": (
        422,
        {"error": {"message": SECRET, "type": SECRET, "code": SECRET, "param": SECRET}},
        {"X-Request-Id": SECRET},
    ),
    "a success:false body": (200, {"success": False, "message": f"key {SECRET} refused"}, {}),
    "the submit task id": (200, {"code": 200, "data": [{"task_id": SECRET}]}, {}),
}


@pytest.mark.parametrize("echo", list(ECHOES.values()), ids=list(ECHOES))
async def test_an_echoed_key_never_reaches_an_error(echo, caplog):
    """Wherever a server echoes the key in an answer to a submit, the error shows none of it."""
    caplog.set_level(logging.DEBUG)
    logging.getLogger("kling_async").debug("start")
    transport = ScriptedTransport(lambda method, path, n: echo)
    async with scripted_session(transport, api_key=SECRET) as session:
        with pytest.raises(KlingError) as info:
            await session.submit(TextToVideo("x"))
    assert_no_key([info.value], caplog)


@pytest.mark.slow
async def test_an_echoed_key_never_reaches_a_status_a_result_or_a_failure(caplog):
    """A status echoing the key in a failed task's message, the progress or the result URL
    shows none of it in snapshots, results, errors or logs."""
    caplog.set_level(logging.DEBUG)
    bodies = {
        "failed": status_body("failed", "failed", 0, error={"code": SECRET, "message": SECRET}),
        "progress": status_body("progress", "processing", SECRET),
        "url": status_body(
            "url", result={"videos": [{"url": f"https://cdn.test/v.mp4?key={SECRET}"}]}
        ),
    }
    transport = ScriptedTransport(lambda method, path, n: bodies[task_of(path)])
    seen: list[object] = []
    async with scripted_session(transport, api_key=SECRET) as session:
        for task_id in bodies:
            task = session.task(task_id)
            try:
                seen.append(await task.wait(timeout=5))
            except KlingError as exc:
                seen.append(exc)
            seen += [task, task.snapshot]
    assert_no_key(seen, caplog)


async def test_result_urls_on_other_hosts_never_get_the_key(tmp_path):
    """Downloads never send the key: not to the storage host, nor to where it redirects."""
    final = Recorder()
    async with serve(final) as final_url:
        redirecting = Recorder(_redirect_to(final_url + "/video.mp4"))
        async with serve(redirecting) as storage_url, Emulator() as emu:
            session = hostile_session(emu.url)
            async with session:
                stale = VideoResult("task_x", (Video(url=storage_url + "/v.mp4"),))
                path = await session.download(stale, tmp_path / "v.mp4")
    assert path.read_bytes() == sample_video()
    assert redirecting.requests
    assert final.requests
    assert not redirecting.saw_authorization
    assert not final.saw_authorization


def _redirect_to(location: str) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(location)

    return handler


async def test_api_redirects_are_not_followed():
    """A redirect from the API host is an error; the key never travels to the new location."""
    elsewhere = Recorder(json_answer({"code": 200, "data": {"id": "task_1"}}))
    async with serve(elsewhere) as elsewhere_url:
        api = Recorder(_redirect_to(elsewhere_url + "/v1/tasks/task_1"))
        async with serve(api) as api_url, hostile_session(api_url) as session:
            with pytest.raises(KlingError):
                await session.status("task_1")
    assert api.saw_authorization
    assert elsewhere.requests == []


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (json_answer({"code": 200, "data": {"id": 5, "status": []}}), InvalidResponseError),
        (json_answer({"code": 200, "data": {"id": "../../admin"}}), InvalidResponseError),
        (
            json_answer(
                {
                    "code": 200,
                    "data": {"id": "task_1", "status": "completed", "result": {"videos": [1]}},
                }
            ),
            InvalidResponseError,
        ),
        (raw_answer(b"[" * 100_000 + b"]" * 100_000), InvalidResponseError),
        (raw_answer(b'{"code": 200, "data": "' + b"x" * 3_000_000 + b'"}'), InvalidResponseError),
        (raw_answer(b"<html>502 Bad Gateway</html>", 502, "text/html"), KlingError),
        (raw_answer(b"\xff\xfe\x00garbage"), InvalidResponseError),
    ],
)
async def test_hostile_status_answers_are_kling_errors(answer, expected):
    """Wrong types, path-like ids, deep nesting, huge and binary bodies raise KlingErrors."""
    async with serve(Recorder(answer)) as url, hostile_session(url) as session:
        with pytest.raises(expected):
            await session.status("task_1")


async def test_hostile_status_answers_never_crash_the_poller():
    """A task whose status stays garbage fails with the parse error; the session still works."""
    unreadable = {"id": "task_1", "status": "completed", "result": {"videos": [{"url": None}]}}
    garbage = json_answer({"code": 200, "data": unreadable})
    fine = json_answer({"code": 200, "data": {"id": "task_2", "status": "processing"}})

    async def handler(request: web.Request) -> web.StreamResponse:
        return await (garbage if request.path.endswith("task_1") else fine)(request)

    async with serve(Recorder(handler)) as url, fast_session(url) as session:
        with pytest.raises(InvalidResponseError, match="videos cannot be read"):
            await session.task("task_1").wait(timeout=5)
        with pytest.raises(TaskTimeoutError):
            await session.task("task_2").wait(timeout=0.2)


async def test_submit_answer_with_a_path_like_id_is_uncertain():
    """A submit answer whose task id could rewrite URLs is never used: retried with the
    same key, then uncertain."""
    answer = json_answer({"code": 200, "data": [{"status": "submitted", "task_id": "a/../b"}]})
    async with serve(Recorder(answer)) as url, hostile_session(url) as session:
        with pytest.raises(SubmissionUncertainError):
            await session.submit(TextToVideo("x"))


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/v.mp4", "javascript:x"])
async def test_result_urls_with_odd_schemes_are_never_fetched(url, tmp_path):
    """A result URL that is not http(s) is refused before any request."""
    async with Emulator() as emu, hostile_session(emu.url) as session:
        with pytest.raises(DownloadError, match="not http"):
            await session.download(VideoResult("task_x", (Video(url=url),)), tmp_path / "v.mp4")
    assert list(tmp_path.iterdir()) == []


async def test_downloads_are_size_capped(tmp_path):
    """A body larger than max_download_bytes is refused and nothing is left on disk."""
    async with serve(Recorder()) as storage, Emulator() as emu:
        session = KlingSession(
            api_key=SECRET, base_url=emu.url, retry=FAST_RETRY, max_download_bytes=1000
        )
        async with session:
            with pytest.raises(DownloadError, match="cap"):
                await session.download(
                    VideoResult("task_x", (Video(url=storage + "/v.mp4"),)), tmp_path / "v.mp4"
                )
    assert list(tmp_path.iterdir()) == []


async def test_downloads_must_look_like_video(tmp_path):
    """An HTML page served as the video is refused; the target path is never created."""
    page = Recorder(raw_answer(b"<!DOCTYPE html><html>login</html>" * 10, 200, "text/html"))
    async with serve(page) as storage, Emulator() as emu, hostile_session(emu.url) as session:
        with pytest.raises(DownloadError, match="look like a video"):
            await session.download(
                VideoResult("task_x", (Video(url=storage + "/v.mp4"),)), tmp_path / "v.mp4"
            )
    assert list(tmp_path.iterdir()) == []


def test_insecure_base_url_is_refused_without_opt_in():
    """A key over plain http to a non-loopback host needs allow_insecure=True."""
    with pytest.raises(KlingError, match="unencrypted"):
        KlingSession(api_key=SECRET, base_url="http://10.0.0.5:8000")
    with pytest.raises(KlingError) as info:
        KlingSession(api_key=SECRET, base_url="http://api.example.com")
    assert SECRET not in str(info.value)


def test_validation_errors_name_field_and_rule():
    """Bad input fails before any network call with the field and rule in the message."""
    with pytest.raises(RequestValidationError, match=r"^duration: .*from 3 to 15"):
        TextToVideo("x", duration=16)
