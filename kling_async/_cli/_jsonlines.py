"""Machine-readable output (``--json``): one JSON object per line on stdout, flushed at once.

Batch events are ``{"event": "start" | "job" | "note" | "summary", ...}``; a ``job``
event is written when a line changes state (not on every progress tick). The last
line a command writes is its result (``summary`` for a batch).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import attrs

from .._models import TaskSnapshot
from ._batch import BatchRun
from ._jobs import Job, JobState

__all__ = ["JsonBatchDisplay", "emit", "job_record", "snapshot_record", "summary_record"]


def emit(record: dict[str, Any]) -> None:
    """Write one JSON line to stdout."""
    sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def job_record(job: Job, out_dir: Path) -> dict[str, Any]:
    """A job as JSON: line, state, task id, progress, file (once saved), error."""
    return {
        "line": job.number,
        "state": job.state,
        "task_id": job.task_id,
        "progress": job.progress,
        "file": str(out_dir / job.filename) if job.state is JobState.DONE else None,
        "error": job.error,
        "cost": job.cost,
        "credits_cost": job.credits_cost,
    }


def snapshot_record(snapshot: TaskSnapshot) -> dict[str, Any]:
    """A task status as JSON, with the API's field names."""
    return {
        "task_id": snapshot.id,
        "status": snapshot.status.value,
        "progress": snapshot.progress,
        "created": snapshot.created,
        "completed": snapshot.completed,
        "estimated_time": snapshot.estimated_time,
        "actual_time": snapshot.actual_time,
        "videos": [{"url": v.url, "expires_at": v.expires_at} for v in snapshot.videos],
        "error": None
        if snapshot.error is None
        else {"code": snapshot.error.code, "message": snapshot.error.message},
        "cost": snapshot.cost,
        "credits_cost": snapshot.credits_cost,
        "extras": snapshot.extras,
    }


def summary_record(run: BatchRun, out_dir: Path, journal: Path | None) -> dict[str, Any]:
    """The end of a batch as JSON: overall success, counts per state and every job."""
    cost = run.cost()
    return {
        "event": "summary",
        "ok": run.ok,
        "interrupted": run.interrupted,
        "stopped_submitting": run.halted,
        "counts": {state: n for state, n in run.counts().items() if n},
        "cost": None if cost is None else attrs.asdict(cost),
        "out_dir": str(out_dir),
        "journal": None if journal is None else str(journal),
        "jobs": [job_record(job, out_dir) for job in run.jobs],
    }


class JsonBatchDisplay:
    """A batch display that writes JSON lines instead of drawing."""

    def __init__(self, out_dir: Path, journal: Path | None) -> None:
        self._out_dir = out_dir
        self._journal = journal
        self._last: dict[int, JobState] = {}

    def start(self, jobs: list[Job]) -> None:
        """Announce the run: how many lines, where videos and journal go, what is left."""
        todo = sum(job.todo is not None for job in jobs)
        emit(
            {
                "event": "start",
                "total": len(jobs),
                "todo": todo,
                "out_dir": str(self._out_dir),
                "journal": None if self._journal is None else str(self._journal),
            }
        )
        for job in jobs:
            self._last[id(job)] = job.state

    def changed(self, job: Job) -> None:
        """Write a ``job`` event if the job's state changed."""
        if self._last.get(id(job)) != job.state:
            self._last[id(job)] = job.state
            emit({"event": "job", **job_record(job, self._out_dir)})

    def note(self, message: str) -> None:
        """Write a ``note`` event."""
        emit({"event": "note", "message": message})

    def stop(self) -> None:
        """Nothing to stop: every line is already written."""
