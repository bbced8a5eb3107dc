"""Running a batch: plan from the journal, submit with bounded concurrency, wait, download.

Every line is a :class:`Job`. Its POST runs in a *submitter* (never cancelled by a first
Ctrl-C, so an id the server handed out is always recorded); waiting and downloading run
in a *follower* (cancelled at once on Ctrl-C: the task keeps running remotely and the
next run re-attaches to it). The journal is written at each step, before the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import signal
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, Protocol

import attrs

from .._exceptions import (
    APIError,
    AuthenticationError,
    InsufficientCreditsError,
    KlingError,
    NetworkError,
    ServerError,
    SubmissionUncertainError,
    TaskCancelledError,
    TaskFailedError,
    TaskNotFoundError,
)
from .._session import KlingSession
from .._task import Task
from ._batchfile import BatchLine
from ._journal import Entry, Journal

__all__ = ["ACTIVE", "ENDED", "BatchOptions", "BatchRun", "Display", "Job"]

#: Job states, in the order they are shown.
STATES = (
    "queued",
    "submitting",
    "pending",
    "processing",
    "unknown",
    "downloading",
    "done",
    "failed",
    "uncertain",
    "error",
    "stopped",
)
#: States in which a job is still moving.
ACTIVE = frozenset({"queued", "submitting", "pending", "processing", "unknown", "downloading"})
#: States in which a job has ended for this run.
ENDED = frozenset(STATES) - ACTIVE

UNCERTAIN_HINT = (
    "its POST may or may not have reached the server (no task id was recorded); left alone "
    "so it is never paid twice: pass --resubmit-uncertain to submit it again"
)


@attrs.define(eq=False)
class Job:
    """What this run knows about one line: its state, task, progress and outcome."""

    line: BatchLine
    filename: str
    state: str = "queued"
    task_id: str | None = None
    progress: int = 0
    error: str | None = None
    resumed: bool = False
    """The journal already knew this job when the run started."""
    todo: str | None = None
    """What the run must do: "submit", "follow" (wait, then download), "download" or None."""

    @property
    def number(self) -> int:
        """The job's line number in the batch file."""
        return self.line.number


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


class BatchRun:
    """One run of a batch over a journal; ``await run()`` returns when every job has ended."""

    def __init__(
        self,
        session: KlingSession,
        journal: Journal,
        lines: list[BatchLine],
        options: BatchOptions,
        display: Display,
    ) -> None:
        self._session = session
        self._journal = journal
        self._options = options
        self._display = display
        entries = journal.entries()
        self.jobs = [self._plan(line, entries.get(line.key)) for line in lines]
        keys = {line.key for line in lines}
        #: Journal entries that match no line of the file (edited lines, another file).
        self.orphans = sorted(
            (entry for key, entry in entries.items() if key not in keys), key=lambda e: e.line
        )
        self.interrupted = False
        self.halted: str | None = None
        self._submitters: set[asyncio.Task[None]] = set()
        self._followers: set[asyncio.Task[None]] = set()
        self._submit_slots = asyncio.Semaphore(options.concurrency)
        self._download_slots = asyncio.Semaphore(options.downloads)
        self._group: asyncio.TaskGroup | None = None

    # -- planning --------------------------------------------------------------------------

    def _plan(self, line: BatchLine, entry: Entry | None) -> Job:
        if entry is None:
            return Job(line, line.filename(), todo="submit")
        job = Job(line, entry.filename, task_id=entry.task_id, resumed=True)
        state = entry.state
        if state == "intent":
            if self._options.resubmit_uncertain:
                job.todo, job.task_id = "submit", None
            else:
                job.state = "uncertain"
                job.error = UNCERTAIN_HINT + (f" (cause: {entry.error})" if entry.error else "")
        elif state == "submitted":
            job.todo, job.state = "follow", "pending"
        elif state == "completed" or (
            state == "downloaded" and not (self._options.out_dir / entry.filename).is_file()
        ):
            job.todo, job.state, job.progress = "download", "downloading", 100
        elif state == "downloaded":
            job.state, job.progress = "done", 100
        elif self._options.retry_failed:  # failed or cancelled
            job.todo, job.task_id = "submit", None
        else:
            job.state, job.error = "failed", entry.error
        return job

    def counts(self) -> dict[str, int]:
        """How many jobs are in each state (every state listed, in display order)."""
        counts = dict.fromkeys(STATES, 0)
        for job in self.jobs:
            counts[job.state] += 1
        return counts

    @property
    def ok(self) -> bool:
        """True if every line's video is saved."""
        return all(job.state == "done" for job in self.jobs)

    # -- running ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Run every job that has something to do; Ctrl-C / SIGTERM stop it cleanly."""
        self._display.start(self.jobs)
        for entry in self.orphans:
            self._display.note(
                f"journal entry from line {entry.line} ({entry.state}"
                f"{', task ' + entry.task_id if entry.task_id else ''}) matches no line of "
                "this file (edited or removed?): left alone"
            )
        for job in self.jobs:
            if job.state == "uncertain":
                self._display.note(f"line {job.number}: {job.error}")
        try:
            with self._signals():
                async with asyncio.TaskGroup() as group:
                    self._group = group
                    for job in self.jobs:
                        if job.todo == "submit":
                            self._spawn(self._submitters, self._submit(job))
                        elif job.todo is not None:
                            self._spawn(self._followers, self._follow(job, None))
        finally:
            self._group = None
            for job in self.jobs:
                if job.state in ACTIVE:
                    job.state, job.error = "stopped", job.error or "interrupted"
            self._display.stop()

    def _spawn(self, tasks: set[asyncio.Task[None]], coro: Coroutine[Any, Any, None]) -> None:
        assert self._group is not None
        task = self._group.create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        installed = []
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(signum, self.interrupt)
            except (NotImplementedError, RuntimeError):  # not the main thread, or Windows
                continue
            installed.append(signum)
        try:
            yield
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)

    def interrupt(self) -> None:
        """First call: stop waiting, let POSTs in flight record their ids. Second: stop now."""
        if not self.interrupted:
            self.interrupted = True
            self._display.note(
                "stopping: letting submissions in flight record their task ids "
                "(press Ctrl-C again to stop at once)"
            )
            for task in list(self._followers):
                task.cancel()
        else:
            for task in list(self._submitters):
                task.cancel()

    def _changed(self, job: Job, state: str | None = None, error: str | None = None) -> None:
        if state is not None:
            job.state = state
        if error is not None:
            job.error = error
        self._display.changed(job)

    async def _submit(self, job: Job) -> None:
        journal = self._journal
        async with self._submit_slots:
            if self.interrupted or self.halted:
                self._changed(job, "stopped", self.halted or "not submitted: interrupted")
                return
            job.error = None
            self._changed(job, "submitting")
            journal.intent(job.line.key, job.number, job.line.body, job.filename)
            try:
                task = await self._session.submit(job.line.request)
            except asyncio.CancelledError:
                self._changed(job, "uncertain", UNCERTAIN_HINT + " (interrupted mid-POST)")
                raise
            except SubmissionUncertainError as exc:
                journal.uncertain(job.line.key, str(exc.cause))
                self._changed(job, "uncertain", f"{UNCERTAIN_HINT} (cause: {exc.cause})")
                return
            except KlingError as exc:
                if not _surely_not_taken(exc):
                    journal.uncertain(job.line.key, str(exc))
                    self._changed(job, "uncertain", f"{UNCERTAIN_HINT} (cause: {exc})")
                    return
                journal.not_submitted(job.line.key)
                if isinstance(exc, AuthenticationError | InsufficientCreditsError):
                    self.halted = f"not submitted: an earlier submission was refused: {exc}"
                self._changed(job, "error", f"refused by the server: {exc}")
                return
            journal.submitted(job.line.key, task.id)
        job.task_id = task.id
        if self.interrupted:
            self._changed(job, "stopped", "submitted; interrupted before it ended")
            return
        self._changed(job, "pending")
        self._spawn(self._followers, self._follow(job, task))

    async def _follow(self, job: Job, task: Task | None) -> None:
        journal, key = self._journal, job.line.key
        assert job.task_id is not None
        try:
            handle = task or self._session.task(job.task_id)
            if job.todo != "download":
                async with asyncio.timeout(self._options.timeout):
                    async for snapshot in handle.updates():
                        job.progress = snapshot.progress
                        if not snapshot.status.is_terminal:  # the end is handled below
                            self._changed(job, snapshot.status.value)
                    await handle
                journal.finished(key, "completed")
            async with self._download_slots:
                self._changed(job, "downloading")
                target = self._options.out_dir / job.filename
                _remove_leftovers(target)
                await self._session.download(handle, target)  # a done handle: no extra GET
            journal.downloaded(key, job.filename)
            job.progress, job.error = 100, None
            self._changed(job, "done")
        except TaskFailedError as exc:
            reason = f"{exc.message or 'no message'} (code {exc.code})"
            journal.finished(key, "failed", reason)
            self._changed(job, "failed", reason)
        except TaskCancelledError:
            journal.finished(key, "cancelled", "cancelled on the server")
            self._changed(job, "failed", "cancelled on the server")
        except TaskNotFoundError as exc:
            journal.problem(key, str(exc))
            self._changed(job, "error", f"the server does not know task {job.task_id}: {exc}")
        except KlingError as exc:
            journal.problem(key, str(exc))
            self._changed(job, "error", str(exc))
        except TimeoutError:
            message = (
                f"not finished within {self._options.timeout:g} s (it keeps running; "
                "re-run to resume)"
            )
            journal.problem(key, message)
            self._changed(job, "error", message)
        except asyncio.CancelledError:
            self._changed(job, "stopped", "interrupted (the task keeps running; re-run to resume)")
            raise


def _remove_leftovers(target: Path) -> None:
    """Delete partial downloads of ``target`` that a killed run left behind.

    The SDK writes to ``.<name>.<random>.part`` and renames when complete; only a SIGKILL
    or a power cut leaves one. The journal lock means no other run is writing them now.
    """
    for leftover in target.parent.glob(f".{glob.escape(target.name)}.*.part"):
        with contextlib.suppress(OSError):
            leftover.unlink()


def _surely_not_taken(exc: KlingError) -> bool:
    """True if the server certainly did not create a task for a POST that raised ``exc``."""
    if isinstance(exc, NetworkError):
        return not exc.sent
    return isinstance(exc, APIError) and not isinstance(exc, ServerError)
