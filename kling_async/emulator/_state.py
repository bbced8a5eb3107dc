"""Everything the emulator remembers, and the JSON bodies it derives from it.

Kept free of HTTP so the task and status logic reads (and tests) as plain functions
of the config, the random generator and the wall clock. Fates are decided on the real
clock; bodies report them through the `EmulatedClock` (offset, whole emulated seconds).
"""

from __future__ import annotations

import random
import time
from typing import Any

from ._clock import EmulatedClock
from ._config import EmulatorConfig
from ._errors import ErrorWriter, new_request_id
from ._fates import Slots, draw_timing
from ._faults import FaultBox
from ._idempotency import IdempotencyStore
from ._signing import UrlSigner
from ._stats import SlidingWindow, Stats
from ._tasks import DEFAULT_ERROR, Job, Script, cost_units, estimate_for, new_task_id, progress_at
from ._uploads import Upload, UploadStore
from ._validation import prompt_of

__all__ = ["RESPONSE_VERSION", "EmulatorState", "bearer_token"]

RESPONSE_VERSION = "2026-07-27"
"""The ``X-APIMart-Response-Version`` value that turns a submit's ``data`` into an object."""
_QUIRK_NUMBERS = ("progress", "created", "completed", "estimated_time", "actual_time")


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, None if there is none."""
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


class EmulatorState:
    """Tasks, uploads, scripts, faults, keys, counters and rate-limit window of one emulator."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.stats = Stats()
        self.clock = EmulatedClock(config.time_scale, config.clock_offset)
        self.errors = ErrorWriter(config.error_style, self.rng)
        self.tasks: dict[str, Job] = {}
        self.scripts: list[Script] = []
        self.faults = FaultBox(self.rng, config.fault_rate, config.fault_kinds)
        self.signer = UrlSigner(self.rng.randbytes(32) if config.seed is not None else None)
        self.keys = IdempotencyStore()
        self.uploads = UploadStore(self.signer)
        self.slots = Slots(config.max_concurrent)
        self.storage_url = ""
        self._api_window = SlidingWindow()
        self._status_window = SlidingWindow()
        self._accepted = SlidingWindow()

    # -- counting and admission -------------------------------------------------

    def note_api_request(self, route: str, now: float) -> None:
        """Count an API request on `route` at monotonic time `now`."""
        stats = self.stats
        stats.requests_total += 1
        seen = self._api_window.add(now)
        if seen > stats.max_requests_per_second:
            stats.max_requests_per_second = seen
        if route == "status":
            stats.status_calls_total += 1
            seen = self._status_window.add(now)
            if seen > stats.max_status_per_second:
                stats.max_status_per_second = seen
        elif route == "upload":
            stats.upload_requests += 1
        else:
            stats.submit_requests += 1

    def over_rate_limit(self, now: float) -> bool:
        """Whether a request at monotonic `now` exceeds the limit; accepted ones are recorded."""
        limit = self.config.rate_limit
        if limit is None:
            return False
        if self._accepted.count(now) >= limit:
            self.stats.rate_limited += 1
            return True
        self._accepted.add(now)
        return False

    def authorized(self, header: str | None) -> bool:
        """Whether an Authorization header carries an acceptable Bearer token."""
        token = bearer_token(header)
        if token is None:
            return False
        keys = self.config.api_keys
        return keys is None or token in keys

    # -- tasks ------------------------------------------------------------------

    def add_script(self, script: Script) -> None:
        """Fix the fate of later jobs whose prompt matches `script`."""
        self.scripts.append(script)

    def _script_for(self, prompt: str) -> Script | None:
        for script in self.scripts:
            if script.prompt_contains in prompt:
                return script
        return None

    def create_task(self, body: dict[str, Any], idempotency_key: str | None = None) -> Job:
        """Create a job for a validated submit body, its fate drawn now."""
        config = self.config
        now = time.time()
        prompt = prompt_of(body)
        estimate = estimate_for(
            config.estimated_time,
            body.get("mode", body.get("resolution", "std")),
            body.get("duration", 5),
            model=body["model"],
        )
        script = self._script_for(prompt)
        timing = draw_timing(config, self.rng, estimate, script.time_factor if script else 1.0)
        if script is not None:
            outcome, error = script.outcome, script.error()
        elif config.fail_marker is not None and config.fail_marker in prompt:
            outcome, error = "failed", dict(DEFAULT_ERROR)
        else:
            outcome, error = "completed", None
        task_id = new_task_id(self.rng)
        while task_id in self.tasks:  # pragma: no cover - 130 bits of randomness
            task_id = new_task_id(self.rng)
        scale = config.time_scale
        run = timing.run / scale
        starts_at = self.slots.admit(now + timing.queue / scale, run)
        task = Job(
            task_id=task_id,
            prompt=prompt,
            request=body,
            created=now,
            starts_at=starts_at,
            completes_at=starts_at + run,
            estimated_time=estimate / scale,
            long_queue=timing.long_queue,
            outcome=outcome,
            error=error,
            idempotency_key=idempotency_key,
        )
        self.tasks[task_id] = task
        stats = self.stats
        stats.submissions += 1
        stats.created_tasks[task_id] = prompt
        if idempotency_key is not None:
            stats.tasks_by_key.setdefault(idempotency_key, []).append(task_id)
        return task

    def note_status_call(self, task_id: str) -> Job | None:
        """Count a status request for `task_id` and return the task if it exists."""
        calls = self.stats.status_calls
        calls[task_id] = calls.get(task_id, 0) + 1
        task = self.tasks.get(task_id)
        if task is not None:
            task.status_calls += 1
        return task

    # -- uploads ----------------------------------------------------------------

    def add_upload(self, data: bytes, filename: str | None) -> Upload:
        """Store an uploaded image (its type already detected) for `url_ttl`."""
        config = self.config
        upload_id = "img_" + new_task_id(self.rng).removeprefix("task_")
        upload = self.uploads.add(
            upload_id, data, filename, time.time(), config.url_ttl / config.time_scale
        )
        self.stats.uploads += 1
        return upload

    def upload_payload(self, upload: Upload) -> dict[str, Any]:
        """The success body of an upload; with quirks sometimes wrapped under ``data``."""
        payload: dict[str, Any] = {
            "url": self.uploads.url(self.storage_url, upload),
            "filename": upload.filename,
            "content_type": upload.content_type,
            "bytes": len(upload.data),
            "created_at": self.clock.stamp(upload.created),
        }
        if self.config.quirks and self.rng.random() < 0.5:
            return {"code": 200, "data": payload}
        return payload

    def image_url_problem(self, url: str) -> str | None:
        """Why the server could not fetch an image URL of its own storage host, if so."""
        return self.uploads.url_problem(self.storage_url, url, time.time())

    # -- bodies -----------------------------------------------------------------

    def submit_payload(self, task_id: str, version: str | None = None) -> dict[str, Any]:
        """The success body of a submit: ``data`` a list, or an object for `RESPONSE_VERSION`."""
        if version == RESPONSE_VERSION:
            return {
                "code": 200,
                "request_id": new_request_id(),
                "data": {"object": "generation.task", "id": task_id, "status": "submitted"},
            }
        payload: dict[str, Any] = {
            "code": 200,
            "data": [{"status": "submitted", "task_id": task_id}],
        }
        if self.config.quirks and self.rng.random() < 0.5:
            payload["request_id"] = new_request_id()
            payload["data"][0]["created"] = str(self.clock.stamp(time.time()))
        return payload

    def result_url(self, task: Job, now: float) -> tuple[str, int | float]:
        """A freshly signed storage URL for a completed task, and its reported expiry."""
        expires_at = now + self.config.url_ttl / self.config.time_scale
        token = self.signer.mint(task.task_id, expires_at)
        return f"{self.storage_url}/files/{task.task_id}/{token}.mp4", self.clock.stamp(expires_at)

    def status_payload(self, task: Job, now: float) -> dict[str, Any]:
        """The status body for `task` at wall time `now` (API.md §2)."""
        config = self.config
        clock = self.clock
        status = task.status(now)
        if status == "pending":
            progress = 0
        elif status == "processing":
            progress = progress_at(config.progress_shape, task.fraction(now), config.progress_step)
        elif status == "completed":
            progress = 100
        else:
            progress = progress_at(config.progress_shape, 1.0, config.progress_step)
        created = clock.stamp(task.created)
        data: dict[str, Any] = {
            "id": task.task_id,
            "status": status,
            "progress": progress,
            "created": created,
            "estimated_time": clock.duration(task.estimated_time),
        }
        if status in ("completed", "failed", "cancelled"):
            completed = clock.stamp(task.completes_at)
            data["completed"] = completed
            data["actual_time"] = clock.between(created, completed)
        if status == "completed":
            url, expires_at = self.result_url(task, now)
            data["result"] = {"videos": [{"url": [url], "expires_at": expires_at}]}
            if config.cost_per_second is not None:
                cost = round(config.cost_per_second * cost_units(task.request), 6)
                data["cost"], data["credits_cost"] = cost, round(cost * 100, 4)
        elif status == "failed":
            data["error"] = dict(task.error or DEFAULT_ERROR)
        if config.quirks:
            self._vary(data)
        return {"code": 200, "data": data}

    def _vary(self, data: dict[str, Any]) -> None:
        """Apply the tolerated variations of API.md: string URLs, string numbers, extras."""
        rng = self.rng
        result = data.get("result")
        if result is not None and rng.random() < 0.5:
            video = result["videos"][0]
            video["url"] = video["url"][0]
            if rng.random() < 0.5:
                video["expires_at"] = str(video["expires_at"])
        for key in _QUIRK_NUMBERS:
            if key in data and rng.random() < 0.3:
                data[key] = str(data[key])
        if rng.random() < 0.5:
            data["model"] = "kling-v3"
            data["x_queue_region"] = rng.choice(("us-east", "ap-southeast", "eu-west"))
