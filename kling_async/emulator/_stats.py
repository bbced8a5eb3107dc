"""Counters the emulator keeps so tests and benchmarks can judge how a client behaved."""

from __future__ import annotations

from collections import deque
from typing import Any

import attrs

__all__ = ["SlidingWindow", "Stats"]


@attrs.define(eq=False)
class Stats:
    """Live counters; `reset()` zeroes them in place (tasks themselves are kept).

    "API requests" are submit, status and upload calls, whatever their answer;
    control routes (`/_stats`, ...) are never counted.
    """

    requests_total: int = 0
    """API requests received."""
    submit_requests: int = 0
    """POSTs to the submit route, whatever their answer."""
    submissions: int = 0
    """Tasks created (including those whose response was then faulted)."""
    status_calls: dict[str, int] = attrs.Factory(dict)
    """Status requests per task id (unknown ids included)."""
    status_calls_total: int = 0
    """Status requests received."""
    max_requests_per_second: int = 0
    """Most API requests seen in any 1 s sliding window."""
    max_status_per_second: int = 0
    """Most status requests seen in any 1 s sliding window."""
    faults_injected: dict[str, int] = attrs.Factory(dict)
    """Faults served, by kind (scripted and random, all routes)."""
    rate_limited: int = 0
    """Requests answered 429 by the rate limit (not by a fault)."""
    rejected_auth: int = 0
    """Requests answered 401."""
    rejected_invalid: int = 0
    """Submissions answered 400."""
    not_found: int = 0
    """Status requests for unknown task ids."""
    storage_requests: int = 0
    """Requests to the storage host."""
    storage_auth_headers: int = 0
    """Storage requests that carried an Authorization header (a leaked key)."""
    created_tasks: dict[str, str] = attrs.Factory(dict)
    """Task id to prompt, in creation order."""
    ambiguous_submissions: list[tuple[str, str]] = attrs.Factory(list)
    """(task id, prompt) of tasks created whose submit response was then faulted."""
    faulted_submissions: list[tuple[str, str, str]] = attrs.Factory(list)
    """(prompt, fault kind, "before"|"after") of every submit request that got a fault."""
    submits_with_key: int = 0
    """Submit requests that carried an Idempotency-Key header (valid or not)."""
    submits_without_key: int = 0
    """Submit requests without one (with `submits_with_key`: every submit request)."""
    idempotent_replays: int = 0
    """Submits answered with an earlier task of the same key and body (nothing created)."""
    key_conflicts: int = 0
    """Submits refused with 409: a known key with a different body."""
    tasks_by_key: dict[str, list[str]] = attrs.Factory(dict)
    """Idempotency key to the ids of the tasks created with it: one each, unless two API
    keys happened to send the same idempotency key."""
    upload_requests: int = 0
    """POSTs to the upload route, whatever their answer."""
    rejected_uploads: int = 0
    """Uploads answered 400 (not a supported image, malformed) or 413 (too large)."""
    uploads: int = 0
    """Images stored (including those whose upload response was then faulted)."""
    ambiguous_uploads: int = 0
    """Images stored whose upload response was then faulted (the client cannot know)."""

    def reset(self) -> None:
        """Zero every counter in place, so references to this object stay live."""
        fresh = Stats()
        for field in attrs.fields(Stats):
            setattr(self, field.name, getattr(fresh, field.name))

    def count_fault(self, kind: str) -> None:
        """Record one served fault of `kind`."""
        self.faults_injected[kind] = self.faults_injected.get(kind, 0) + 1

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready copy (tuples become lists)."""
        return attrs.asdict(self)


class SlidingWindow:
    """How many events fell in the last `width` seconds: a deque of timestamps, O(1) amortised."""

    __slots__ = ("_times", "_width")

    def __init__(self, width: float = 1.0) -> None:
        self._times: deque[float] = deque()
        self._width = width

    def _prune(self, now: float) -> None:
        times = self._times
        edge = now - self._width
        while times and times[0] <= edge:
            times.popleft()

    def count(self, now: float) -> int:
        """Events in the window ending at `now`."""
        self._prune(now)
        return len(self._times)

    def add(self, now: float) -> int:
        """Record an event at `now` and return the events in the window, this one included."""
        self._prune(now)
        self._times.append(now)
        return len(self._times)
