"""Everything the emulator remembers, and the JSON bodies it derives from it.

Kept free of HTTP so the task and status logic reads (and tests) as plain functions
of the config, the random generator and the wall clock.
"""

from __future__ import annotations

import math
import random
import secrets
import time
from typing import Any

from ._config import EmulatorConfig
from ._faults import FaultBox
from ._signing import UrlSigner
from ._stats import SlidingWindow, Stats
from ._tasks import DEFAULT_ERROR, Script, Task, estimate_for, new_task_id, progress_at

__all__ = ["EmulatorState"]

_QUIRK_NUMBERS = ("progress", "created", "completed", "estimated_time", "actual_time")


class EmulatorState:
    """Tasks, scripts, faults, counters and rate-limit window of one emulator."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.stats = Stats()
        self.tasks: dict[str, Task] = {}
        self.scripts: list[Script] = []
        self.faults = FaultBox(self.rng, config.fault_rate, config.fault_kinds)
        self.signer = UrlSigner(self.rng.randbytes(32) if config.seed is not None else None)
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
        if header is None:
            return False
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
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

    def create_task(self, body: dict[str, Any]) -> Task:
        """Create a job for a validated submit body, its fate drawn now."""
        config = self.config
        now = time.time()
        prompt: str = body["prompt"]
        estimate = estimate_for(
            config.estimated_time, body.get("mode", "std"), body.get("duration", 5)
        )
        if config.spread > 0:
            ratio = self.rng.lognormvariate(config.bias, config.spread)
        else:
            ratio = math.exp(config.bias)
        script = self._script_for(prompt)
        total = estimate * ratio * (script.time_factor if script else 1.0)
        queue = min(config.queue_time, total / 2)
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
        task = Task(
            task_id=task_id,
            prompt=prompt,
            request=body,
            created=now,
            starts_at=now + queue / scale,
            completes_at=now + total / scale,
            estimated_time=estimate / scale,
            outcome=outcome,
            error=error,
        )
        self.tasks[task_id] = task
        self.stats.submissions += 1
        self.stats.created_tasks[task_id] = prompt
        return task

    def note_status_call(self, task_id: str) -> Task | None:
        """Count a status request for `task_id` and return the task if it exists."""
        calls = self.stats.status_calls
        calls[task_id] = calls.get(task_id, 0) + 1
        task = self.tasks.get(task_id)
        if task is not None:
            task.status_calls += 1
        return task

    # -- bodies -----------------------------------------------------------------

    def _seconds(self, value: float) -> float:
        """Real seconds as the API shows them: whole at real speed, fractional when scaled."""
        if self.config.time_scale == 1:
            return round(value)
        return round(value, 6)

    def _timestamp(self, value: float) -> float:
        if self.config.time_scale == 1:
            return int(value)
        return round(value, 6)

    def submit_payload(self, task_id: str) -> dict[str, Any]:
        """The success body of a submit."""
        payload: dict[str, Any] = {
            "code": 200,
            "data": [{"status": "submitted", "task_id": task_id}],
        }
        if self.config.quirks and self.rng.random() < 0.5:
            payload["request_id"] = secrets.token_hex(8)
            payload["data"][0]["created"] = str(int(time.time()))
        return payload

    def result_url(self, task: Task, now: float) -> tuple[str, float]:
        """A freshly signed storage URL for a completed task, and when it expires."""
        expires_at = self._timestamp(now + self.config.url_ttl / self.config.time_scale)
        token = self.signer.mint(task.task_id, expires_at)
        return f"{self.storage_url}/files/{task.task_id}/{token}.mp4", expires_at

    def status_payload(self, task: Task, now: float) -> dict[str, Any]:
        """The status body for `task` at wall time `now` (API.md §2)."""
        status = task.status(now)
        if status == "pending":
            progress = 0
        elif status == "processing":
            progress = progress_at(self.config.progress_shape, task.fraction(now))
        elif status == "completed":
            progress = 100
        else:
            progress = progress_at(self.config.progress_shape, 1.0)
        data: dict[str, Any] = {
            "id": task.task_id,
            "status": status,
            "progress": progress,
            "created": self._timestamp(task.created),
            "estimated_time": self._seconds(task.estimated_time),
        }
        if status in ("completed", "failed", "cancelled"):
            data["completed"] = self._timestamp(task.completes_at)
            data["actual_time"] = self._seconds(task.completes_at - task.created)
        if status == "completed":
            url, expires_at = self.result_url(task, now)
            data["result"] = {"videos": [{"url": [url], "expires_at": expires_at}]}
        elif status == "failed":
            data["error"] = dict(task.error or DEFAULT_ERROR)
        if self.config.quirks:
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
