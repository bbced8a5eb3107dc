"""The single-task commands: generate, status, wait and download."""

from __future__ import annotations

import argparse
import asyncio
import re
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from .._convert import request_body
from .._exceptions import KlingError, RequestValidationError, SubmissionUncertainError
from .._models import VideoRequest
from .._session import KlingSession
from .._submission import check_idempotency_key, new_idempotency_key
from .._task import Task
from ._connection import KEY_PREFIX, Connection, connection_from_args, open_session
from ._errors import EXIT_FAILED, EXIT_OK, PROG, CLIError, validation_message
from ._images import image_arg
from ._jsonlines import emit, snapshot_record
from ._output import json_mode, load_rich, make_console, writable_dir

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["download", "generate", "status", "wait"]


#: The option that sets each request field, for error messages.
OPTION_OF = {
    "prompt": "PROMPT",
    "model": "--model",
    "mode": "--mode",
    "duration": "--duration",
    "aspect_ratio": "--aspect-ratio",
    "negative_prompt": "--negative-prompt",
    "image_urls": "--image",
    "last_frame_image": "--last-frame",
    "audio": "--audio",
    "watermark": "--watermark",
    "shot_type": "--shot-type",
    "multi_prompt": "--shot",
}


def _request_from_args(args: argparse.Namespace) -> VideoRequest:
    shots = [{"index": n, **shot} for n, shot in enumerate(args.shot or [], 1)]
    fields: dict[str, Any] = {
        "prompt": args.prompt,
        "model": args.model,
        "mode": args.mode,
        "duration": args.duration,
        "aspect_ratio": args.aspect_ratio,
        "negative_prompt": args.negative_prompt,
        "audio": args.audio,
        "watermark": args.watermark,
        "image_urls": [image_arg(i) for i in args.image] if args.image else None,
        "last_frame_image": image_arg(args.last_frame) if args.last_frame else None,
        "shot_type": args.shot_type,
        "multi_prompt": shots or None,
    }
    extras = dict(args.field or [])
    for name in extras:
        if name in OPTION_OF:
            raise CLIError(f"--field {name}: set by {OPTION_OF[name]}, not by --field")
    try:
        request = VideoRequest.from_fields(fields)
        if extras:
            request = attrs.evolve(request, extra_fields={**request.extra_fields, **extras})
    except RequestValidationError as exc:  # the library's words, prefixed by the option
        raise CLIError(f"{_option_of(exc.field)}: {validation_message(exc)}") from exc
    return request


def _option_of(field: str) -> str:
    """The option that sets a request field (``multi_prompt[2].duration``: ``--shot``)."""
    root = re.split(r"[.\[]", field, maxsplit=1)[0]
    return OPTION_OF.get(root, f"--field {root}")


def _target(out: Path | None) -> Path | None:
    """Check where a video will go before paying for it (None: ./TASK_ID.mp4)."""
    if out is None:
        writable_dir(Path.cwd(), "the current directory")
        return None
    if out.is_dir():
        writable_dir(out, "--out directory")
        return out
    writable_dir(out.parent if str(out.parent) else Path.cwd(), "--out directory")
    return out


def _final_path(target: Path | None, task_id: str) -> Path:
    if target is None:
        return Path(f"{task_id}.mp4")
    return target / f"{task_id}.mp4" if target.is_dir() else target


async def _watch(task: Task, args: argparse.Namespace, console: Console | None) -> None:
    """Wait for ``task`` to end (live bar unless --json); raise CLIError if it did not succeed."""
    timeout: float | None = args.timeout
    try:
        if task.request is None:  # re-attached: it may have ended long ago, so look right away
            await task.refresh()
        if console is None:
            await task.wait(timeout)
            return
        with load_rich().TaskProgress(console, task.id) as bar:
            async with asyncio.timeout(timeout):
                async for snapshot in task.updates():
                    bar.update(snapshot)
            await task
    except TimeoutError as exc:
        raise CLIError(
            f"task {task.id} not finished within {timeout:g} s; it keeps running: "
            f"{PROG} wait {task.id}",
            EXIT_FAILED,
        ) from exc
    except KlingError as exc:
        raise CLIError(str(exc), EXIT_FAILED) from exc


async def _save(session: KlingSession, task: Task, path: Path, console: Console | None) -> Path:
    try:
        if console is None:
            return await session.download(task, path)
        with load_rich().TaskProgress(console, task.id) as bar:
            bar.phase("downloading")
            return await session.download(task, path)
    except KlingError as exc:
        raise CLIError(
            f"task {task.id} completed but its video could not be saved: {exc}; retry with: "
            f"{PROG} download {task.id} --out {shlex.quote(str(path))}",
            EXIT_FAILED,
        ) from exc


def generate(args: argparse.Namespace) -> int:
    """``generate PROMPT``: check options and destination, submit, follow, save the MP4."""
    request = _request_from_args(args)
    if args.idempotency_key is not None:
        try:
            check_idempotency_key(args.idempotency_key)
        except RequestValidationError as exc:
            raise CLIError(f"--idempotency-key: {exc}") from exc
    connection = connection_from_args(args)
    target = _target(args.out)
    console = None if json_mode(args) else make_console(stderr=True)
    return asyncio.run(_generate(args, connection, request, target, console))


async def _generate(
    args: argparse.Namespace,
    connection: Connection,
    request: VideoRequest,
    target: Path | None,
    console: Console | None,
) -> int:
    key: str = args.idempotency_key or new_idempotency_key(KEY_PREFIX)
    local = bool(request.local_images)
    async with open_session(connection) as session:
        try:
            task = await session.submit(request, idempotency_key=key)
        except asyncio.CancelledError:
            message = "interrupted while submitting: the task may or may not have been created"
            if not local:
                message += f"; {_settle_hint(key)}"
            print(message, file=sys.stderr)
            raise
        except KlingError as exc:
            raise _submit_error(exc, local) from exc
        if console is None:
            emit({"event": "submitted", "task_id": task.id})
        else:
            console.print(f"submitted [bold]{task.id}[/]")
        path = _final_path(target, task.id)
        try:
            await _watch(task, args, console)
            saved = await _save(session, task, path, console)
        except asyncio.CancelledError:
            if connection.emulator is None:  # an emulated task ends with us
                print(
                    f"interrupted: task {task.id} keeps running; save it later with: "
                    f"{PROG} download {task.id} --out {shlex.quote(str(path))}",
                    file=sys.stderr,
                )
            raise
    _report_saved(args, task, saved)
    return EXIT_OK


def _submit_error(exc: KlingError, local: bool) -> CLIError:
    """What a submit that made no task (as far as the session knows) tells the user: the
    session's own verdict (uncertain, or refused) decided by the submission rules."""
    if isinstance(exc, SubmissionUncertainError):  # retries ran out: settle it by its key
        hint = _settle_hint(exc.idempotency_key, exc.request if local else None)
        return CLIError(f"{exc}. {hint}", EXIT_FAILED)
    if isinstance(exc, RequestValidationError):  # e.g. an image that is not one: nothing sent
        return CLIError(f"{_option_of(exc.field)}: {validation_message(exc)}")
    return CLIError(f"submission refused: {exc}", EXIT_FAILED)


def _settle_hint(key: str, uploaded: VideoRequest | None = None) -> str:
    """How to learn, without paying twice, whether an uncertain submit made a task.

    ``uploaded`` is the request as sent when local images were uploaded for it: the
    re-run must name their URLs, since a new upload makes a new request (and a 409)."""
    hint = (
        f"to settle it without paying twice, re-run the same command with --idempotency-key {key}"
    )
    if uploaded is not None:
        body = request_body(uploaded)
        images = [f"--image {shlex.quote(str(url))}" for url in body.get("image_urls", ())]
        if body.get("last_frame_image") is not None:
            images.append(f"--last-frame {shlex.quote(str(body['last_frame_image']))}")
        hint += f" and {' '.join(images)} in place of the local files (already uploaded)"
    return hint


def _report_saved(args: argparse.Namespace, task: Task, path: Path) -> None:
    snapshot = task.snapshot
    url = snapshot.videos[0].url if snapshot and snapshot.videos else None
    cost = (snapshot.cost, snapshot.credits_cost) if snapshot else (None, None)
    if json_mode(args):
        emit(
            {
                "event": "saved",
                "task_id": task.id,
                "status": "completed",
                "file": str(path),
                "url": url,
                "cost": cost[0],
                "credits_cost": cost[1],
            }
        )
    else:
        billed = "" if cost == (None, None) else f" (cost {load_rich().describe_cost(*cost)})"
        print(f"saved {task.id} to {path}{billed}")


def status(args: argparse.Namespace) -> int:
    """``status TASK_ID``: one status request, printed."""
    connection = connection_from_args(args)
    return asyncio.run(_status(args, connection))


async def _status(args: argparse.Namespace, connection: Connection) -> int:
    async with open_session(connection) as session:
        try:
            snapshot = await session.status(args.task_id)
        except RequestValidationError as exc:
            raise CLIError(str(exc)) from exc
        except KlingError as exc:
            raise CLIError(str(exc), EXIT_FAILED) from exc
    if json_mode(args):
        emit(snapshot_record(snapshot))
        return EXIT_OK
    line = f"{snapshot.id}: {snapshot.status.value}"
    if not snapshot.status.is_terminal:
        line += f" {snapshot.progress}%"
    if snapshot.estimated_time:
        line += f" (estimated {snapshot.estimated_time:g} s)"
    print(line)
    for video in snapshot.videos:
        print(f"video: {video.url}")
    if snapshot.error is not None:
        print(f"error: {snapshot.error.code}: {snapshot.error.message}")
    return EXIT_OK


def wait(args: argparse.Namespace) -> int:
    """``wait TASK_ID``: follow the task to its end, print its video URLs."""
    connection = connection_from_args(args)
    console = None if json_mode(args) else make_console(stderr=True)
    return asyncio.run(_wait(args, connection, console))


async def _wait(args: argparse.Namespace, connection: Connection, console: Console | None) -> int:
    async with open_session(connection) as session:
        task = _attach(session, args.task_id)
        await _watch(task, args, console)
    assert task.snapshot is not None
    if json_mode(args):
        emit(snapshot_record(task.snapshot))
    else:
        print(f"{task.id}: {task.snapshot.status.value}")
        for video in task.snapshot.videos:
            print(f"video: {video.url}")
    return EXIT_OK


def _attach(session: KlingSession, task_id: str) -> Task:
    try:
        return session.task(task_id)
    except RequestValidationError as exc:
        raise CLIError(str(exc)) from exc


def download(args: argparse.Namespace) -> int:
    """``download TASK_ID --out FILE``: wait if needed, then save the video."""
    connection = connection_from_args(args)
    target = _target(args.out)
    assert target is not None
    console = None if json_mode(args) else make_console(stderr=True)
    return asyncio.run(_download(args, connection, target, console))


async def _download(
    args: argparse.Namespace, connection: Connection, target: Path, console: Console | None
) -> int:
    async with open_session(connection) as session:
        task = _attach(session, args.task_id)
        await _watch(task, args, console)
        saved = await _save(session, task, _final_path(target, task.id), console)
    _report_saved(args, task, saved)
    return EXIT_OK
