"""The lines of a batch as jobs: their states (one table: :data:`STATES`), what a run must
do with each (planned from the journal by :func:`plan`), and what a run reports of them.

A job's life in one run::

    queued ──▶ submitting ──▶ pending ⇄ processing, unknown ──▶ downloading ──▶ done
      ▲            │                          │                      │
      └── 1303 ────┤                          ├──▶ failed            │
                   └──▶ uncertain, error      └──▶ error ◀───────────┘

and any state still moving ──Ctrl-C──▶ stopped, which is not an end: the next run picks
the line up where the journal left it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Protocol

import attrs

from .._models import TaskStatus
from ._batchfile import BatchLine, unknown_fields_note
from ._journal import JournalRow, JournalState

__all__ = [
    "LEGACY_UNCERTAIN_HINT",
    "RUNNING_AS",
    "STATES",
    "BatchCost",
    "BatchOptions",
    "Display",
    "Job",
    "JobState",
    "StateInfo",
    "Todo",
    "opening_notes",
    "plan",
    "state_counts",
    "total_cost",
]

LEGACY_UNCERTAIN_HINT = (
    "its POST may or may not have reached the server (no task id was recorded), and this "
    "journal row predates idempotency keys; left alone so it is never paid twice: pass "
    "--resubmit-uncertain to submit it again"
)


class JobState(enum.StrEnum):
    """Where a job is in this run; the members are in the order they are shown."""

    QUEUED = "queued"
    SUBMITTING = "submitting"
    PENDING = "pending"
    PROCESSING = "processing"
    UNKNOWN = "unknown"
    DOWNLOADING = "downloading"
    DONE = "done"
    FAILED = "failed"
    UNCERTAIN = "uncertain"
    ERROR = "error"
    STOPPED = "stopped"


@attrs.frozen
class StateInfo:
    """What a :class:`JobState` means (its row of :data:`STATES`)."""

    active: bool
    """The job is still moving in this run."""
    running: bool
    """Its task runs on the server (and holds one of the account's slots)."""
    ended: bool
    """It has an outcome for this run (a stopped job was cut short: it has none)."""
    problem: bool
    """It did not end well: the live view prints it as it happens."""
    style: str
    """The rich style it is shown in."""
    weight: float
    """How far along it is, 0..1, for the overall bar (times the progress if
    ``by_progress``)."""
    by_progress: bool = False


# fmt: off
STATES: Mapping[JobState, StateInfo] = {
    #                     StateInfo(active, running, ended, problem, style, weight)
    JobState.QUEUED:      StateInfo(True,  False, False, False, "dim",     0.0),
    JobState.SUBMITTING:  StateInfo(True,  False, False, False, "cyan",    0.0),
    JobState.PENDING:     StateInfo(True,  True,  False, False, "blue",    0.0),
    JobState.PROCESSING:  StateInfo(True,  True,  False, False, "magenta", 0.9, by_progress=True),
    JobState.UNKNOWN:     StateInfo(True,  True,  False, False, "yellow",  0.0),
    JobState.DOWNLOADING: StateInfo(True,  False, False, False, "cyan",    0.95),
    JobState.DONE:        StateInfo(False, False, True,  False, "green",   1.0),
    JobState.FAILED:      StateInfo(False, False, True,  True,  "red",     1.0),
    JobState.UNCERTAIN:   StateInfo(False, False, True,  True,  "yellow",  1.0),
    JobState.ERROR:       StateInfo(False, False, True,  True,  "red",     1.0),
    JobState.STOPPED:     StateInfo(False, False, False, False, "yellow",  0.0),
}
# fmt: on
"""The one table of job states: every state and what it means, in display order."""

RUNNING_AS: Mapping[TaskStatus, JobState] = {
    TaskStatus.PENDING: JobState.PENDING,
    TaskStatus.PROCESSING: JobState.PROCESSING,
    TaskStatus.UNKNOWN: JobState.UNKNOWN,
}
"""The job state of a task the server reports as not yet ended."""


class Todo(enum.StrEnum):
    """What a run must do with a job."""

    SUBMIT = "submit"
    """Upload its images, journal a fresh intent, POST it."""
    RESEND = "resend"
    """POST the journal's unsettled intent again, same key and body."""
    FOLLOW = "follow"
    """Wait for its task, then download the video."""
    DOWNLOAD = "download"
    """Download the video of its completed task."""


@attrs.define(eq=False)
class Job:
    """What this run knows about one line: its state, task, progress and outcome."""

    line: BatchLine
    filename: str
    state: JobState = attrs.field(default=JobState.QUEUED, converter=JobState)
    task_id: str | None = None
    progress: int = 0
    error: str | None = None
    todo: Todo | None = None
    """What the run must do (None: nothing, the job has ended)."""
    idempotency_key: str | None = None
    """The key of the job's POST, once an intent is journaled."""
    body: str | None = None
    """The JSON body of the job's POST, once an intent is journaled."""
    cost: float | None = None
    """What the server said the task cost (when it reports it, in this run)."""
    credits_cost: float | None = None
    """The credits the server said the task cost (when it reports them, in this run)."""

    @property
    def number(self) -> int:
        """The job's line number in the batch file."""
        return self.line.number

    @property
    def legacy_uncertain(self) -> bool:
        """Uncertain, from a journal row without an idempotency key."""
        return self.state is JobState.UNCERTAIN and self.idempotency_key is None


class Display(Protocol):
    """Where a batch reports what happens (the live rich view, or JSON lines)."""

    def start(self, jobs: list[Job]) -> None:
        """The run begins with these jobs (some may already be done or failed)."""

    def changed(self, job: Job) -> None:
        """A job changed state or progress."""

    def note(self, message: str) -> None:
        """Something the user should read now (a warning, an uncertain line, stopping)."""

    def stop(self) -> None:
        """The run is over: stop any live view."""


@attrs.frozen
class BatchOptions:
    """How to run a batch."""

    out_dir: Path
    concurrency: int = 4
    downloads: int = 4
    timeout: float | None = None
    resubmit_uncertain: bool = False
    retry_failed: bool = False


def plan(
    lines: list[BatchLine], rows: Mapping[str, JournalRow], options: BatchOptions
) -> tuple[list[Job], list[JournalRow]]:
    """Every line's job, given what the journal recorded (``rows``, by line key), and the
    rows that match no line of the file (edited lines, another file), by line number."""
    jobs = [_plan(line, rows.get(line.key), options) for line in lines]
    keys = {line.key for line in lines}
    orphans = sorted((row for key, row in rows.items() if key not in keys), key=lambda r: r.line)
    return jobs, orphans


def _plan(line: BatchLine, row: JournalRow | None, options: BatchOptions) -> Job:
    """The job of ``line``, given what the journal last recorded of it (``row``)."""
    if row is None:
        return Job(line, line.filename(), todo=Todo.SUBMIT)
    job = Job(line, row.filename, task_id=row.task_id)
    match row.state:
        case JournalState.INTENT if row.idempotency_key is not None:
            job.todo, job.idempotency_key, job.body = Todo.RESEND, row.idempotency_key, row.request
        case JournalState.INTENT if options.resubmit_uncertain:
            job.todo = Todo.SUBMIT
        case JournalState.INTENT:
            job.state = JobState.UNCERTAIN
            job.error = LEGACY_UNCERTAIN_HINT + (f" (cause: {row.error})" if row.error else "")
        case JournalState.SUBMITTED:
            job.todo, job.state = Todo.FOLLOW, JobState.PENDING
        case JournalState.DOWNLOADED if (options.out_dir / row.filename).is_file():
            job.state, job.progress = JobState.DONE, 100
        case JournalState.COMPLETED | JournalState.DOWNLOADED:  # saved, or its file is gone
            job.todo, job.state, job.progress = Todo.DOWNLOAD, JobState.DOWNLOADING, 100
        case JournalState.FAILED | JournalState.CANCELLED if options.retry_failed:
            job.todo, job.task_id = Todo.SUBMIT, None
        case JournalState.FAILED | JournalState.CANCELLED:
            job.state, job.error = JobState.FAILED, row.error
    return job


def opening_notes(jobs: list[Job], orphans: Iterable[JournalRow]) -> list[str]:
    """What a run says before it starts: fields sent unchecked, journal rows no line
    matches, lines left uncertain, unsettled POSTs it sends again."""
    unknown = unknown_fields_note([job.line for job in jobs])
    notes = [] if unknown is None else [unknown]
    notes += [
        f"journal entry from line {row.line} ({row.state}"
        f"{', task ' + row.task_id if row.task_id else ''}) matches no line of "
        "this file (edited or removed?): left alone"
        for row in orphans
    ]
    for job in jobs:
        if job.state is JobState.UNCERTAIN:
            notes.append(f"line {job.number}: {job.error}")
        elif job.todo is Todo.RESEND:
            notes.append(
                f"line {job.number}: its last POST was never settled; sending it again "
                "with the same idempotency key (the server returns the task it made, if any)"
            )
    return notes


def state_counts(jobs: Iterable[Job]) -> dict[JobState, int]:
    """How many jobs are in each state (every state listed, in display order)."""
    counts = dict.fromkeys(JobState, 0)
    for job in jobs:
        counts[job.state] += 1
    return counts


@attrs.frozen
class BatchCost:
    """The cost a run's tasks reported, summed."""

    cost: float | None
    """The sum of the costs reported (None if only credits were)."""
    credits_cost: float | None
    """The sum of the credits reported (None if only costs were)."""
    lines: int
    """How many lines' tasks reported a cost (or credits)."""


def total_cost(jobs: Iterable[Job]) -> BatchCost | None:
    """What the jobs' tasks cost, summed over those whose task reported a cost or credits
    (None if none did: the provider's reference has no cost field)."""
    billed = [job for job in jobs if job.cost is not None or job.credits_cost is not None]
    if not billed:
        return None
    costs = [job.cost for job in billed if job.cost is not None]
    credits = [job.credits_cost for job in billed if job.credits_cost is not None]
    return BatchCost(sum(costs) if costs else None, sum(credits) if credits else None, len(billed))
