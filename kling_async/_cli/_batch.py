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
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, Protocol

import attrs

from .._exceptions import (
    AuthenticationError,
    ConcurrencyLimitError,
    InsufficientCreditsError,
    KlingError,
    RequestValidationError,
    SubmissionUncertainError,
    TaskCancelledError,
    TaskFailedError,
    TaskNotFoundError,
)
from .._models import VideoRequest
from .._retry import retry_delay
from .._session import KlingSession
from .._submission import RULES, Outcome, classify
from .._task import Task
from ._batchfile import BatchLine, canonical_body, unknown_fields_note
from ._gate import SubmitGate
from ._journal import Journal, JournalRow
from ._options import new_idempotency_key

__all__ = ["ACTIVE", "ENDED", "STATES", "BatchCost", "BatchOptions", "BatchRun", "Display", "Job"]

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
#: States in which a job's task runs on the server (and holds one of the account's slots).
RUNNING = frozenset({"pending", "processing", "unknown"})
#: States in which a job has an outcome for this run ("stopped" has none: it was cut short).
ENDED = frozenset(STATES) - ACTIVE - {"stopped"}

UNCERTAIN_HINT = (
    "its POST may or may not have reached the server and retries ran out; re-running sends "
    "it again with the same idempotency key, so the server returns the task it made, if "
    "any, instead of charging twice"
)
LEGACY_UNCERTAIN_HINT = (
    "its POST may or may not have reached the server (no task id was recorded), and this "
    "journal row predates idempotency keys; left alone so it is never paid twice: pass "
    "--resubmit-uncertain to submit it again"
)
CONFLICT_HINT = (
    "the server refused the journal's idempotency key as used with a different request: "
    "the journal's key and body for this line disagree. It is never sent with a new key "
    "(that could pay twice); check your account for the task, and edit the line to submit "
    "it as a new request"
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
    todo: str | None = None
    """What the run must do: "submit", "resend" (the journal's unsettled POST), "follow"
    (wait, then download), "download" or None."""
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
        return self.state == "uncertain" and self.idempotency_key is None


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
class BatchCost:
    """The cost a run's tasks reported, summed."""

    cost: float | None
    """The sum of the costs reported (None if only credits were)."""
    credits_cost: float | None
    """The sum of the credits reported (None if only costs were)."""
    lines: int
    """How many lines' tasks reported a cost (or credits)."""


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
        rows = journal.rows()
        self.jobs = [self._plan(line, rows.get(line.key)) for line in lines]
        keys = {line.key for line in lines}
        #: Journal rows that match no line of the file (edited lines, another file).
        self.orphans = sorted(
            (row for key, row in rows.items() if key not in keys), key=lambda r: r.line
        )
        self.interrupted = False
        self.halted: str | None = None
        self._submitters: set[asyncio.Task[None]] = set()
        self._followers: set[asyncio.Task[None]] = set()
        self._submit_slots = SubmitGate(options.concurrency)
        self._download_slots = asyncio.Semaphore(options.downloads)
        self._group: asyncio.TaskGroup | None = None

    # -- planning --------------------------------------------------------------------------

    def _plan(self, line: BatchLine, row: JournalRow | None) -> Job:
        if row is None:
            return Job(line, line.filename(), todo="submit")
        job = Job(line, row.filename, task_id=row.task_id)
        state = row.state
        if state == "intent":
            if row.idempotency_key is not None:
                job.todo, job.idempotency_key, job.body = "resend", row.idempotency_key, row.request
            elif self._options.resubmit_uncertain:
                job.todo = "submit"
            else:
                job.state = "uncertain"
                job.error = LEGACY_UNCERTAIN_HINT + (f" (cause: {row.error})" if row.error else "")
        elif state == "submitted":
            job.todo, job.state = "follow", "pending"
        elif state == "completed" or (
            state == "downloaded" and not (self._options.out_dir / row.filename).is_file()
        ):
            job.todo, job.state, job.progress = "download", "downloading", 100
        elif state == "downloaded":
            job.state, job.progress = "done", 100
        elif self._options.retry_failed:  # failed or cancelled
            job.todo, job.task_id = "submit", None
        else:
            job.state, job.error = "failed", row.error
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

    def cost(self) -> BatchCost | None:
        """What the tasks of this run cost, summed over the lines whose task reported a
        cost or credits (None if none did: the provider's reference has no cost field)."""
        billed = [job for job in self.jobs if job.cost is not None or job.credits_cost is not None]
        if not billed:
            return None
        costs = [job.cost for job in billed if job.cost is not None]
        credits = [job.credits_cost for job in billed if job.credits_cost is not None]
        return BatchCost(
            sum(costs) if costs else None, sum(credits) if credits else None, len(billed)
        )

    # -- running ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Run every job that has something to do; Ctrl-C / SIGTERM stop it cleanly."""
        self._display.start(self.jobs)
        note = unknown_fields_note([job.line for job in self.jobs])
        if note is not None:
            self._display.note(note)
        for row in self.orphans:
            self._display.note(
                f"journal entry from line {row.line} ({row.state}"
                f"{', task ' + row.task_id if row.task_id else ''}) matches no line of "
                "this file (edited or removed?): left alone"
            )
        for job in self.jobs:
            if job.state == "uncertain":
                self._display.note(f"line {job.number}: {job.error}")
            elif job.todo == "resend":
                self._display.note(
                    f"line {job.number}: its last POST was never settled; sending it again "
                    "with the same idempotency key (the server returns the task it made, if any)"
                )
        try:
            with self._signals():
                async with asyncio.TaskGroup() as group:
                    self._group = group
                    for job in self.jobs:
                        if job.todo in ("submit", "resend"):
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

    def _halt(self, reason: str) -> None:
        """Submit nothing more (the account or key was refused: waiting will not help)."""
        if self.halted is None:
            self.halted = reason
            self._display.note(f"stopping submissions: {reason.removeprefix('not submitted: ')}")

    def _changed(self, job: Job, state: str | None = None, error: str | None = None) -> None:
        if state is not None:
            job.state = state
        if error is not None:
            job.error = error
        self._display.changed(job)

    async def _submit(self, job: Job) -> None:
        request: VideoRequest | None = None
        rounds = alone = 0  # "too many at once" refusals; those with none of ours running
        while True:
            async with self._submit_slots:
                if self.interrupted or self.halted:
                    self._changed(job, "stopped", self.halted or "not submitted: interrupted")
                    return
                job.error = None
                self._changed(job, "submitting")
                request = request or await self._intent(job)
                if request is None:
                    return
                try:
                    task = await self._post(job, request)
                except _TooManyAtOnce as busy:
                    alone += 0 if self._running(job) else 1
                    wait = self._later(job, busy.error, rounds, alone)
                    rounds += 1
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
            self._changed(job, "stopped", "submitted; interrupted before it ended")
            return
        self._changed(job, "pending")
        self._spawn(self._followers, self._follow(job, task))

    def _running(self, job: Job) -> bool:
        """True if a task of this run other than ``job``'s is running (and will free one of
        the account's slots when it ends)."""
        return any(other is not job and other.state in RUNNING for other in self.jobs)

    def _later(self, job: Job, exc: KlingError, rounds: int, alone: int) -> float | None:
        """After the account refused ``job`` as one too many (code 1303; ``rounds`` times
        before, ``alone`` of them with none of this run's tasks running): submit fewer at
        once, and the seconds until ``job`` is sent again (same key and body), or None once
        that is hopeless (``max_attempts`` refusals with nothing of ours running to free a
        slot; the job then says so and keeps its key)."""
        policy = self._session.config.retry
        if self._submit_slots.refused():
            self._display.note(
                f"the account refuses more tasks at once (code 1303): submitting "
                f"{self._submit_slots.limit} at a time now"
            )
        if alone >= policy.max_attempts:
            self._refused(job, exc)
            return None
        reason = "the account has too many tasks at once (code 1303); it is sent again soon"
        self._journal.problem(job.line.key, reason)
        self._changed(job, "queued", reason)
        return retry_delay(exc, rounds, policy)

    async def _intent(self, job: Job) -> VideoRequest | None:
        """The request to POST, its intent journaled (key and body) before it is sent; None
        if the line cannot be sent (the job then says why)."""
        line, journal = job.line, self._journal
        if job.todo == "resend":
            assert job.body is not None
            try:
                request = VideoRequest.from_fields(json.loads(job.body), unknown="send")
            except (ValueError, RequestValidationError) as exc:
                self._changed(job, "error", f"the journal's request body is unreadable: {exc}")
                return None
            journal.resending(line.key, line.number)
            return request
        try:
            request = await self._session.upload_images(line.request)
        except asyncio.CancelledError:
            self._changed(job, "stopped", "interrupted while uploading its images")
            raise
        except (KlingError, OSError) as exc:
            if isinstance(exc, AuthenticationError | InsufficientCreditsError):
                self._halt(f"not submitted: an earlier upload was refused: {exc}")
            self._changed(job, "error", f"image upload failed, nothing submitted: {exc}")
            return None
        job.idempotency_key, job.body = new_idempotency_key(), canonical_body(request)
        journal.intent(line.key, line.number, job.body, job.filename, job.idempotency_key)
        return request

    async def _post(self, job: Job, request: VideoRequest) -> Task | None:
        """POST the journaled intent; the task, or None (the job then says why)."""
        key, journal = job.line.key, self._journal
        try:
            task = await self._session.submit(request, idempotency_key=job.idempotency_key)
        except asyncio.CancelledError:
            self._changed(
                job,
                "stopped",
                "interrupted mid-POST; re-running sends it again with the same idempotency "
                "key (never paid twice)",
            )
            raise
        except KlingError as exc:
            cause = exc.cause if isinstance(exc, SubmissionUncertainError) else exc
            if isinstance(cause, ConcurrencyLimitError):
                raise _TooManyAtOnce(exc) from exc
            self._refused(job, exc)
            return None
        journal.submitted(key, task.id)
        return task

    def _refused(self, job: Job, exc: KlingError) -> None:
        """Record a POST that made no task (for sure, or as far as we know): the outcome's
        row of the submission rules says whether the journal keeps the line's key."""
        key, journal = job.line.key, self._journal
        cause = exc.cause if isinstance(exc, SubmissionUncertainError) else exc
        if isinstance(cause, AuthenticationError | InsufficientCreditsError):
            self._halt(f"not submitted: an earlier submission was refused: {cause}")
        outcome = classify(exc)
        if outcome is Outcome.UNKNOWN:
            journal.problem(key, str(cause))
            self._changed(job, "uncertain", f"{UNCERTAIN_HINT} (cause: {cause})")
            return
        if outcome is Outcome.CONFLICT:
            reason = f"{CONFLICT_HINT}: {exc}"
        elif not RULES[outcome].keeps_key:
            # The server judged this key and body and refused the body (a known key would
            # have been replayed): no task exists under the key, so the intent is dropped
            # and the next run starts afresh (uploading local images again).
            job.idempotency_key = job.body = None
            reason = f"refused by the server: {exc}"
            if job.todo == "resend" and job.line.local_images:
                reason += (
                    " (its images were uploaded by an earlier run: if that was over 72 hours "
                    "ago their URLs have expired; re-running uploads them again)"
                )
        else:
            # Refused before the key was looked at (401, 402, 429...): an earlier POST of
            # this intent may still have made a task, so the key is kept for the next run.
            reason = (
                f"refused by the server: {exc}; re-running sends it again with the same "
                "idempotency key"
            )
        if RULES[outcome].keeps_key:
            journal.problem(key, reason)
        else:
            journal.not_submitted(key)
        self._changed(job, "error", reason)

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
                if handle.snapshot is not None:
                    job.cost, job.credits_cost = handle.snapshot.cost, handle.snapshot.credits_cost
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
        except KlingError as exc:  # a download refused or unsavable: this line only
            journal.problem(key, str(exc))
            self._changed(job, "error", str(exc))
        except TimeoutError:  # asyncio.timeout (before OSError: TimeoutError is one)
            message = (
                f"not finished within {self._options.timeout:g} s (it keeps running; "
                "re-run to resume)"
            )
            journal.problem(key, message)
            self._changed(job, "error", message)
        except OSError as exc:  # a local file problem is this line's outcome, not a crash
            reason = f"cannot save the video: {exc.strerror or exc}"
            journal.problem(key, reason)
            self._changed(job, "error", reason)
        except asyncio.CancelledError:
            self._changed(job, "stopped", "interrupted (the task keeps running; re-run to resume)")
            raise


class _TooManyAtOnce(Exception):
    """A submission the account refused as one too many at once (code 1303)."""

    def __init__(self, error: KlingError) -> None:
        super().__init__(str(error))
        self.error = error


def _remove_leftovers(target: Path) -> None:
    """Delete partial downloads of ``target`` that a killed run left behind.

    The SDK writes to ``.<name>.<random>.part`` and renames when complete; only a SIGKILL
    or a power cut leaves one. The output folder's lock means no other run writes them now.
    """
    for leftover in target.parent.glob(f".{glob.escape(target.name)}.*.part"):
        with contextlib.suppress(OSError):
            leftover.unlink()
