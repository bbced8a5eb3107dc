"""Emulated jobs: each one's fate is fixed at submission, its state a pure function of time.

No timer runs per job: a status request compares the wall clock with the job's
`starts_at` / `completes_at`, so ten thousand jobs cost ten thousand small records.
"""

from __future__ import annotations

import random
from typing import Any

import attrs

from ._clock import EmulatedClock
from ._config import OUTCOMES, Outcome

__all__ = [
    "DEFAULT_ERROR",
    "Script",
    "Job",
    "TaskRecord",
    "cost_units",
    "estimate_for",
    "new_task_id",
    "progress_at",
]

_ID_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32, as in ULIDs
_MODE_FACTOR = {"std": 1.0, "720p": 1.0, "pro": 1.5, "1080p": 1.5, "4k": 2.5}
_MODEL_FACTOR = {"kling-3.0-turbo": 0.6}  # built for speed; the others as kling-v3
_PER_SECOND = 0.12  # each second of video over (under) 5 adds (takes) 12 % of the estimate

DEFAULT_ERROR: dict[str, Any] = {
    "code": "generation_failed",
    "message": "video generation failed (the prompt contains the emulator's fail marker)",
}


def new_task_id(rng: random.Random) -> str:
    """A fresh id shaped like the real ones: `task_` and 26 base32 characters."""
    return "task_" + "".join(rng.choices(_ID_ALPHABET, k=26))


def estimate_for(base: float, mode: str, duration: int, *, model: str = "kling-v3") -> float:
    """The emulated estimate for a job, scaled from the kling-v3 std 5 s `base`.

    pro (or 1080p) x1.5, 4k x2.5 (slower than pro); kling-3.0-turbo x0.6; the duration
    factor is linear, 1 + 0.12 x (seconds - 5): 3 s x0.76, 5 s x1, 10 s x1.6, 15 s x2.2.
    """
    factor = _MODE_FACTOR.get(mode, 1.0) * _MODEL_FACTOR.get(model, 1.0)
    return base * factor * (1.0 + _PER_SECOND * (duration - 5))


def cost_units(body: dict[str, Any]) -> float:
    """What a task bills, in seconds of std video: its duration, x1.5 in pro, x2.5 in 4k."""
    duration = body.get("duration", 5)
    seconds = duration if isinstance(duration, int | float) else 5
    return seconds * _MODE_FACTOR.get(body.get("mode", body.get("resolution", "std")), 1.0)


def progress_at(shape: str, fraction: float, step: int = 25) -> int:
    """Progress (0 to 99) a processing job reports `fraction` of the way through.

    "linear" rises evenly, "steps" jumps by `step` (0/25/50/75), "stuck" stays 0,
    "eased" rises fast then slows: 100 x (1 - (1 - f)^2).
    """
    fraction = min(max(fraction, 0.0), 1.0)
    if shape == "stuck":
        return 0
    if shape == "eased":
        fraction = 1 - (1 - fraction) ** 2
    percent = int(round(fraction * 100, 9))  # round first: 0.29 x 100 is 28.999...
    if shape == "steps":
        return min(percent // step * step, 99 // step * step)
    return min(percent, 99)


def _check_outcome(_inst: object, _attr: attrs.Attribute[str], value: str) -> None:
    if value not in OUTCOMES:
        raise ValueError(f"outcome: must be one of {', '.join(OUTCOMES)}")


@attrs.frozen(kw_only=True)
class Script:
    """Fixes the fate of every later job whose prompt contains `prompt_contains`.

    The first matching script (in the order added) wins; `time_factor` stretches the
    job's run time, the error fields shape a failure.
    """

    prompt_contains: str = attrs.field(validator=attrs.validators.min_len(1))
    outcome: Outcome = attrs.field(default="completed", validator=_check_outcome)
    time_factor: float = attrs.field(default=1.0, validator=attrs.validators.gt(0))
    error_code: str | int | None = None
    error_message: str | None = None

    def error(self) -> dict[str, Any] | None:
        """The `error` object a failed job reports, None for other outcomes."""
        if self.outcome != "failed":
            return None
        return {
            "code": self.error_code if self.error_code is not None else DEFAULT_ERROR["code"],
            "message": self.error_message or "video generation failed (scripted)",
        }


@attrs.frozen(kw_only=True)
class TaskRecord:
    """The truth about one job: times are real unix seconds on the real (client's) clock.

    The ``reported_*`` fields are what the status route shows instead: the server clock
    (offset, whole emulated seconds), which is what a client has to work from.
    """

    task_id: str
    prompt: str
    request: dict[str, Any]
    created: float
    """When the submit was accepted."""
    starts_at: float
    """When the job leaves "pending" for "processing"."""
    completes_at: float
    """When the job reaches its final state (completed, failed or cancelled)."""
    estimated_time: float
    """The server's estimate of the run, in real seconds (exact, before rounding)."""
    actual_time: float
    """`completes_at - created`, in real seconds."""
    queue_time: float
    """`starts_at - created`, in real seconds."""
    run_time: float
    """`completes_at - starts_at`, in real seconds."""
    long_queue: bool
    """Whether the job drew a long queue (`long_queue_rate`)."""
    outcome: Outcome
    error: dict[str, Any] | None
    idempotency_key: str | None
    """The `Idempotency-Key` of the submit that created the job, if any."""
    status_calls: int
    reported_created: float
    """`created` as the status route reports it (server clock, whole emulated seconds)."""
    reported_completed: float
    """`completed` as the status route reports it once the job is done."""
    reported_estimated_time: float
    """`estimated_time` as the status route reports it."""
    reported_actual_time: float
    """`actual_time` as the status route reports it once the job is done."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return attrs.asdict(self)


@attrs.define(slots=True, eq=False, kw_only=True)
class Job:
    """The mutable per-job record the server keeps (status calls grow)."""

    task_id: str
    prompt: str
    request: dict[str, Any]
    created: float
    starts_at: float
    completes_at: float
    estimated_time: float
    long_queue: bool = False
    outcome: Outcome
    error: dict[str, Any] | None
    idempotency_key: str | None = None
    status_calls: int = 0

    def status(self, now: float) -> str:
        """The API status at wall time `now`."""
        if now < self.starts_at:
            return "pending"
        if now < self.completes_at:
            return "processing"
        return self.outcome

    def fraction(self, now: float) -> float:
        """How far through processing the job is at `now` (0 to 1)."""
        span = self.completes_at - self.starts_at
        if span <= 0:
            return 1.0
        return (now - self.starts_at) / span

    def record(self, clock: EmulatedClock) -> TaskRecord:
        """A frozen snapshot for callers, with what `clock` reports beside the truth."""
        created = clock.stamp(self.created)
        completed = clock.stamp(self.completes_at)
        return TaskRecord(
            task_id=self.task_id,
            prompt=self.prompt,
            request=dict(self.request),
            created=self.created,
            starts_at=self.starts_at,
            completes_at=self.completes_at,
            estimated_time=self.estimated_time,
            actual_time=self.completes_at - self.created,
            queue_time=self.starts_at - self.created,
            run_time=self.completes_at - self.starts_at,
            long_queue=self.long_queue,
            outcome=self.outcome,
            error=self.error,
            idempotency_key=self.idempotency_key,
            status_calls=self.status_calls,
            reported_created=created,
            reported_completed=completed,
            reported_estimated_time=clock.duration(self.estimated_time),
            reported_actual_time=clock.between(created, completed),
        )
