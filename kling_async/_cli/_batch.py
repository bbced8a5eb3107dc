"""Running a batch: plan from the journal, submit with bounded concurrency, wait, download.

Every line is a :class:`Job`. Its POST runs in a *submitter* (never cancelled by a first
Ctrl-C, so an id the server handed out is always recorded); waiting and downloading run
in a *follower* (cancelled at once on Ctrl-C: the task keeps running remotely and the
next run re-attaches to it). The journal is written at each step, before the next one.

A submitter uploads the line's local images first, then writes the intent (the body with
the uploaded URLs, and a fresh ``Idempotency-Key``), then POSTs. A line whose intent is
unsettled (a crash, or retries that ran out) is sent again with its own key and body, so
the server answers with the task it already made instead of making a second one.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import json
import signal
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

from .._exceptions import ConcurrencyLimitError, KlingError, RequestValidationError
from .._models import VideoRequest
from .._session import KlingSession
from .._submission import new_idempotency_key
from .._task import Task
from ._batchfile import BatchLine, canonical_body
from ._connection import KEY_PREFIX
from ._failures import (
    account_refused,
    cause_of,
    record_follow_failure,
    record_refusal,
)
from ._gate import SubmitGate, TooManyAtOnce
from ._jobs import (
    RUNNING_AS,
    STATES,
    BatchCost,
    BatchOptions,
    Display,
    Job,
    JobState,
    Todo,
    opening_notes,
    plan,
    state_counts,
    total_cost,
)
from ._journal import Journal, JournalState

__all__ = ["BatchRun"]


class BatchRun:
    """One run of a batch over a journal; ``await run()`` returns when every job has ended.

    The jobs are planned from the journal (``_jobs.plan``); what a failure means for a line
    is ``_failures``'s to say; how many POSTs are in flight, the gate's (``_gate``).
    """

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
        self.jobs, self.orphans = plan(lines, journal.rows(), options)
        """Every line's job, and the journal rows that match no line of the file."""
        self.interrupted = False
        self.halted: str | None = None
        self._submitters: set[asyncio.Task[None]] = set()
        self._followers: set[asyncio.Task[None]] = set()
        self._submit_slots = SubmitGate(options.concurrency)
        self._download_slots = asyncio.Semaphore(options.downloads)
        self._group: asyncio.TaskGroup | None = None

    def counts(self) -> dict[JobState, int]:
        """How many jobs are in each state (every state listed, in display order)."""
        return state_counts(self.jobs)

    @property
    def ok(self) -> bool:
        """True if every line's video is saved."""
        return all(job.state is JobState.DONE for job in self.jobs)

    def cost(self) -> BatchCost | None:
        """What the tasks of this run cost (see ``_jobs.total_cost``)."""
        return total_cost(self.jobs)

    # -- running ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Run every job that has something to do; Ctrl-C / SIGTERM stop it cleanly."""
        self._display.start(self.jobs)
        for note in opening_notes(self.jobs, self.orphans):
            self._display.note(note)
        try:
            with _signals_call(self.interrupt):
                async with asyncio.TaskGroup() as group:
                    self._group = group
                    for job in self.jobs:
                        if job.todo in (Todo.SUBMIT, Todo.RESEND):
                            self._spawn(self._submitters, self._submit(job))
                        elif job.todo is not None:
                            self._spawn(self._followers, self._follow(job, None))
        finally:
            self._group = None
            for job in self.jobs:
                if STATES[job.state].active:
                    job.state, job.error = JobState.STOPPED, job.error or "interrupted"
            self._display.stop()

    def _spawn(self, tasks: set[asyncio.Task[None]], coro: Coroutine[Any, Any, None]) -> None:
        assert self._group is not None
        task = self._group.create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

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

    def _halt(self, reason: str) -> None:
        """Submit nothing more (the account or key was refused: waiting will not help)."""
        if self.halted is None:
            self.halted = reason
            self._display.note(f"stopping submissions: {reason.removeprefix('not submitted: ')}")

    def _changed(self, job: Job, state: JobState | None = None, error: str | None = None) -> None:
        if state is not None:
            job.state = state
        if error is not None:
            job.error = error
        self._display.changed(job)

    # -- submitting ------------------------------------------------------------------------

    async def _submit(self, job: Job) -> None:
        request: VideoRequest | None = None
        refusals = TooManyAtOnce(self._session.config.retry)
        while True:
            async with self._submit_slots:
                if self.interrupted or self.halted:
                    reason = self.halted or "not submitted: interrupted"
                    self._changed(job, JobState.STOPPED, reason)
                    return
                job.error = None
                self._changed(job, JobState.SUBMITTING)
                request = request or await self._intent(job)
                if request is None:
                    return
                try:
                    task = await self._post(job, request)
                except _TooManyAtOnce as busy:
                    wait = self._later(job, busy.error, refusals)
                else:
                    break
            if wait is None:
                return
            await asyncio.sleep(wait)
        if task is None:
            return
        await self._submit_slots.succeeded()
        job.task_id = task.id
        if self.interrupted:
            self._changed(job, JobState.STOPPED, "submitted; interrupted before it ended")
            return
        self._changed(job, JobState.PENDING)
        self._spawn(self._followers, self._follow(job, task))

    def _running(self, job: Job) -> bool:
        """True if a task of this run other than ``job``'s is running (and will free one of
        the account's slots when it ends)."""
        return any(other is not job and STATES[other.state].running for other in self.jobs)

    def _later(self, job: Job, exc: KlingError, refusals: TooManyAtOnce) -> float | None:
        """After the account refused ``job`` as one too many (code 1303): submit fewer at
        once, and the seconds until ``job`` is sent again (same key and body), or None once
        that is hopeless (the job then says so and keeps its key)."""
        if self._submit_slots.refused():
            self._display.note(
                f"the account refuses more tasks at once (code 1303): submitting "
                f"{self._submit_slots.limit} at a time now"
            )
        wait = refusals.again(exc, freeing=self._running(job))
        if wait is None:
            self._refused(job, exc)
            return None
        reason = "the account has too many tasks at once (code 1303); it is sent again soon"
        self._journal.problem(job.line.key, reason)
        self._changed(job, JobState.QUEUED, reason)
        return wait

    async def _intent(self, job: Job) -> VideoRequest | None:
        """The request to POST, its intent journaled (key and body) before it is sent; None
        if the line cannot be sent (the job then says why)."""
        line, journal = job.line, self._journal
        if job.todo is Todo.RESEND:
            assert job.body is not None
            try:
                request = VideoRequest.from_fields(json.loads(job.body), unknown="send")
            except (ValueError, RequestValidationError) as exc:
                reason = f"the journal's request body is unreadable: {exc}"
                self._changed(job, JobState.ERROR, reason)
                return None
            journal.resending(line.key, line.number)
            return request
        try:
            request = await self._session.upload_images(line.request)
        except asyncio.CancelledError:
            self._changed(job, JobState.STOPPED, "interrupted while uploading its images")
            raise
        except (KlingError, OSError) as exc:
            if isinstance(exc, KlingError) and account_refused(exc):
                self._halt(f"not submitted: an earlier upload was refused: {exc}")
            self._changed(job, JobState.ERROR, f"image upload failed, nothing submitted: {exc}")
            return None
        job.idempotency_key = new_idempotency_key(KEY_PREFIX)
        job.body = canonical_body(request)
        journal.intent(line.key, line.number, job.body, job.filename, job.idempotency_key)
        return request

    async def _post(self, job: Job, request: VideoRequest) -> Task | None:
        """POST the journaled intent; the task, or None (the job then says why)."""
        try:
            task = await self._session.submit(request, idempotency_key=job.idempotency_key)
        except asyncio.CancelledError:
            self._changed(
                job,
                JobState.STOPPED,
                "interrupted mid-POST; re-running sends it again with the same idempotency "
                "key (never paid twice)",
            )
            raise
        except KlingError as exc:
            if isinstance(cause_of(exc), ConcurrencyLimitError):
                raise _TooManyAtOnce(exc) from exc
            self._refused(job, exc)
            return None
        self._journal.submitted(job.line.key, task.id)
        return task

    def _refused(self, job: Job, exc: KlingError) -> None:
        """A POST that made no task (for sure, or as far as we know): journal it, say why,
        and stop submitting if the account itself was refused."""
        if account_refused(exc):
            self._halt(f"not submitted: an earlier submission was refused: {cause_of(exc)}")
        self._changed(job, *record_refusal(self._journal, job, exc))

    # -- following -------------------------------------------------------------------------

    async def _follow(self, job: Job, task: Task | None) -> None:
        journal, key = self._journal, job.line.key
        assert job.task_id is not None
        try:
            handle = task or self._session.task(job.task_id)
            if job.todo is not Todo.DOWNLOAD:
                async with asyncio.timeout(self._options.timeout):
                    async for snapshot in handle.updates():
                        job.progress = snapshot.progress
                        if not snapshot.status.is_terminal:  # the end is handled below
                            self._changed(job, RUNNING_AS[snapshot.status])
                    await handle
                journal.finished(key, JournalState.COMPLETED)
                if handle.snapshot is not None:
                    job.cost, job.credits_cost = handle.snapshot.cost, handle.snapshot.credits_cost
            async with self._download_slots:
                self._changed(job, JobState.DOWNLOADING)
                target = self._options.out_dir / job.filename
                _remove_leftovers(target)
                await self._session.download(handle, target)  # a done handle: no extra GET
            journal.downloaded(key, job.filename)
            job.progress, job.error = 100, None
            self._changed(job, JobState.DONE)
        except (KlingError, OSError) as exc:  # TimeoutError (asyncio.timeout) is an OSError
            self._changed(job, *record_follow_failure(journal, job, exc, self._options.timeout))
        except asyncio.CancelledError:
            reason = "interrupted (the task keeps running; re-run to resume)"
            self._changed(job, JobState.STOPPED, reason)
            raise


class _TooManyAtOnce(Exception):
    """A submission the account refused as one too many at once (code 1303)."""

    def __init__(self, error: KlingError) -> None:
        super().__init__(str(error))
        self.error = error


@contextlib.contextmanager
def _signals_call(handler: Callable[[], None]) -> Iterator[None]:
    """Call ``handler`` on SIGINT and SIGTERM while in the block (where the loop can)."""
    loop = asyncio.get_running_loop()
    installed = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, handler)
        except (NotImplementedError, RuntimeError):  # not the main thread, or Windows
            continue
        installed.append(signum)
    try:
        yield
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


def _remove_leftovers(target: Path) -> None:
    """Delete partial downloads of ``target`` that a killed run left behind.

    The SDK writes to ``.<name>.<random>.part`` and renames when complete; only a SIGKILL
    or a power cut leaves one. The output folder's lock means no other run writes them now.
    """
    for leftover in target.parent.glob(f".{glob.escape(target.name)}.*.part"):
        with contextlib.suppress(OSError):
            leftover.unlink()
