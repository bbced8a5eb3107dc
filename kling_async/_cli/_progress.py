"""The live display (rich): a batch's overall bar, counts per state and failures as they
happen; a single task's bar; both with an ETA; the closing summary.

Imported only when a live display is wanted, so the core install does not need rich.
Live output goes to stderr; results (paths, the summary) go to stdout: a table on a
terminal, plain rows (one line per job) otherwise.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import TracebackType

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.progress import Task as BarTask
from rich.table import Table
from rich.text import Text

from .._models import TaskSnapshot
from ._batch import BatchRun
from ._jobs import STATES, Job, JobState

__all__ = [
    "RichBatchDisplay",
    "TaskProgress",
    "batch_eta",
    "describe_cost",
    "print_summary",
    "task_eta",
]

SHOW_ALL_ROWS = 30  # larger batches list only the lines that did not end well
MAX_PROBLEM_ROWS = 50


def batch_eta(elapsed: float, done: float, left: float) -> float | None:
    """Seconds until a batch ends if what is left goes at the average rate so far (``done``
    units of work in ``elapsed`` seconds, ``left`` to go); None before anything moved."""
    if left <= 0:
        return 0.0
    if done <= 0 or elapsed <= 0:
        return None
    return left * elapsed / done


def task_eta(
    elapsed: float,
    progress: int,
    first_move: tuple[float, int] | None,
    estimated_time: float | None,
) -> float | None:
    """Seconds until a task likely ends, ``elapsed`` seconds after it was submitted.

    Once its progress has moved since ``first_move`` (elapsed time and progress when a
    progress above 0 was first seen), the rest is extrapolated from that rate; before,
    what remains of the server's ``estimated_time``; None if neither is known.
    """
    if first_move is not None:
        since, start = first_move
        if progress > start and elapsed > since:
            return (100 - progress) * (elapsed - since) / (progress - start)
    if estimated_time is not None and estimated_time > 0:
        return max(0.0, estimated_time - elapsed)
    return None


class _EtaColumn(ProgressColumn):
    """Time left until ``task.fields["finish_at"]`` (a ``time.monotonic()`` instant)."""

    def render(self, task: BarTask) -> Text:
        if task.finished:
            return Text("")
        finish_at = task.fields.get("finish_at")
        if finish_at is None:
            return Text("ETA -:--", style="dim")
        left = finish_at - time.monotonic()
        if left <= 0:
            return Text("ETA soon", style="cyan")
        minutes, seconds = divmod(round(left), 60)
        hours, minutes = divmod(minutes, 60)
        shown = f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"
        return Text(f"ETA {shown}", style="cyan")


def _finish_at(remaining: float | None) -> float | None:
    return None if remaining is None else time.monotonic() + remaining


def _weight(job: Job) -> float:
    """How far along a job is, 0..1, for the overall bar (its state's weight in STATES)."""
    info = STATES[job.state]
    return info.weight * job.progress / 100 if info.by_progress else info.weight


class _Counts:
    """Renders the per-state counts line (re-rendered by Live on every refresh)."""

    def __init__(self, counts: dict[JobState, int]) -> None:
        self._counts = counts

    def __rich__(self) -> RenderableType:
        text = Text()
        for state, info in STATES.items():
            if self._counts[state]:
                if text:
                    text.append(" · ", style="dim")
                text.append(f"{state} {self._counts[state]}", style=info.style)
        return text


class RichBatchDisplay:
    """The live view of a batch on ``console``; failures are printed above it as they happen."""

    def __init__(self, console: Console, title: str) -> None:
        self._console = console
        self._title = title
        self._counts = dict.fromkeys(JobState, 0)
        self._seen: dict[int, tuple[JobState, float]] = {}
        self._done_weight = 0.0
        self._start_weight = 0.0  # what was already done when the run began
        self._started = time.monotonic()
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[ended]}/{task.total:.0f} ended"),
            TimeElapsedColumn(),
            _EtaColumn(),
            console=console,
        )
        self._bar = self._progress.add_task(title, total=1, ended=0, finish_at=None)
        self._live = Live(
            Group(self._progress, _Counts(self._counts)),
            console=console,
            refresh_per_second=8,
            transient=False,
        )

    def start(self, jobs: list[Job]) -> None:
        """Count every job and start the live view."""
        for job in jobs:
            self._track(job)
        self._start_weight = self._done_weight
        self._started = time.monotonic()
        self._progress.update(self._bar, total=max(1, len(jobs)))
        self._update_bar()
        self._live.start()

    def _track(self, job: Job) -> None:
        old = self._seen.get(id(job))
        if old is not None:
            self._counts[old[0]] -= 1
            self._done_weight -= old[1]
        weight = _weight(job)
        self._seen[id(job)] = (job.state, weight)
        self._counts[job.state] += 1
        self._done_weight += weight

    def _update_bar(self) -> None:
        ended = sum(n for state, n in self._counts.items() if STATES[state].ended)
        total = self._progress.tasks[0].total or 1
        remaining = batch_eta(
            time.monotonic() - self._started,
            self._done_weight - self._start_weight,
            total - self._done_weight,
        )
        self._progress.update(
            self._bar, completed=self._done_weight, ended=ended, finish_at=_finish_at(remaining)
        )

    def changed(self, job: Job) -> None:
        """Recount; print the job's failure if it just failed."""
        before = self._seen.get(id(job), (None, 0.0))[0]
        self._track(job)
        self._update_bar()
        info = STATES[job.state]
        if info.problem and before != job.state:
            task = f" ({job.task_id})" if job.task_id else ""
            self._console.print(
                f"[{info.style}]✗ line {job.number}{task} {job.state}:[/] "
                f"{escape(job.error or '')}",
                soft_wrap=True,
            )

    def note(self, message: str) -> None:
        """Print a warning above the live view."""
        self._console.print(f"[yellow]![/] {escape(message)}", soft_wrap=True)

    def stop(self) -> None:
        """Draw the last frame and stop."""
        self._update_bar()
        self._live.stop()
        if not self._console.is_terminal:  # the last frame is printed without a line end
            self._console.line()


def print_summary(console: Console, run: BatchRun, out_dir: Path, journal: Path | None) -> None:
    """The closing summary: on a terminal a table of every line (small batches) or of the
    lines that did not end well; otherwise plain rows, one line per job."""
    jobs = run.jobs
    if console.is_terminal:
        _print_table(console, jobs)
    else:
        for job in jobs:  # tab-separated, written as is (rich would expand the tabs)
            detail = job.filename if job.state is JobState.DONE else job.error or ""
            detail = " ".join(detail.split())  # one line per job, whatever the reason says
            console.file.write(f"{job.number}\t{job.state}\t{job.task_id or '-'}\t{detail}\n")
    counts = ", ".join(f"{n} {state}" for state, n in run.counts().items() if n)
    kept = f"journal {journal}" if journal else "no journal (in-process emulator)"
    cost = run.cost()
    billed = ""
    if cost is not None:
        spent = describe_cost(cost.cost, cost.credits_cost)
        billed = f" Cost reported for {cost.lines} lines: {spent}."
    console.print(
        f"{len(jobs)} lines: {counts}.{billed} Videos in {out_dir}, {kept}.",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


def describe_cost(cost: float | None, credits_cost: float | None) -> str:
    """A reported cost in words: "0.35 (35 credits)"."""
    parts = [f"{cost:g}"] if cost is not None else []
    if credits_cost is not None:
        parts.append(f"({credits_cost:g} credits)" if parts else f"{credits_cost:g} credits")
    return " ".join(parts)


def _print_table(console: Console, jobs: list[Job]) -> None:
    shown = jobs if len(jobs) <= SHOW_ALL_ROWS else [j for j in jobs if j.state != JobState.DONE]
    if not shown:
        return
    table = Table(title="kling-async batch", title_justify="left")
    table.add_column("line", justify="right")
    table.add_column("state")
    table.add_column("task", no_wrap=True)
    table.add_column("file / reason", overflow="fold")
    for job in shown[:MAX_PROBLEM_ROWS]:
        detail = job.filename if job.state is JobState.DONE else job.error or ""
        table.add_row(
            str(job.number),
            Text(job.state, style=STATES[job.state].style),
            job.task_id or "",
            Text(detail),
        )
    if len(shown) > MAX_PROBLEM_ROWS:
        table.caption = f"... and {len(shown) - MAX_PROBLEM_ROWS} more (see --json or the journal)"
    console.print(table)


class TaskProgress:
    """A one-line live bar for a single task: status, progress, elapsed time, ETA."""

    def __init__(self, console: Console, task_id: str) -> None:
        self._task_id = task_id
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            _EtaColumn(),
            console=console,
            transient=True,
        )
        self._bar = self._progress.add_task(f"{task_id} submitted", total=100, finish_at=None)
        self._live = console.is_terminal  # a transient bar means nothing in a log
        self._started = time.monotonic()
        self._first_move: tuple[float, int] | None = None

    def __enter__(self) -> TaskProgress:
        if self._live:
            self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._live:
            self._progress.stop()

    def update(self, snapshot: TaskSnapshot) -> None:
        """Show a new status and progress, and when the task should end."""
        elapsed = time.monotonic() - self._started
        if self._first_move is None and snapshot.progress > 0:
            self._first_move = (elapsed, snapshot.progress)
        remaining = task_eta(elapsed, snapshot.progress, self._first_move, snapshot.estimated_time)
        self._progress.update(
            self._bar,
            description=f"{self._task_id} {snapshot.status.value}",
            completed=snapshot.progress,
            finish_at=_finish_at(remaining),
        )

    def phase(self, text: str) -> None:
        """Show a step after the task ended (e.g. downloading)."""
        self._progress.update(
            self._bar, description=f"{self._task_id} {text}", completed=100, finish_at=None
        )
