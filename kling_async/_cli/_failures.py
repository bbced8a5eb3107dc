"""What a line's failure means: the job's new state and reason, and what the journal keeps.

A POST that made no task (:func:`record_refusal`) is judged by the submission rules
(``_submission.RULES``): whether the line's key must be kept for the next run. A wait or
a download that failed (:func:`record_follow_failure`) is that line's outcome, never the
batch's. Either way the journal is written first, then the job says why.
"""

from __future__ import annotations

from .._exceptions import (
    AuthenticationError,
    InsufficientCreditsError,
    KlingError,
    SubmissionUncertainError,
    TaskCancelledError,
    TaskFailedError,
    TaskNotFoundError,
)
from .._submission import RULES, Outcome, classify
from ._jobs import Job, JobState, Todo
from ._journal import Journal, JournalState

__all__ = [
    "CONFLICT_HINT",
    "UNCERTAIN_HINT",
    "account_refused",
    "cause_of",
    "record_follow_failure",
    "record_refusal",
]

UNCERTAIN_HINT = (
    "its POST may or may not have reached the server and retries ran out; re-running sends "
    "it again with the same idempotency key, so the server returns the task it made, if "
    "any, instead of charging twice"
)
CONFLICT_HINT = (
    "the server refused the journal's idempotency key as used with a different request: "
    "the journal's key and body for this line disagree. It is never sent with a new key "
    "(that could pay twice); check your account for the task, and edit the line to submit "
    "it as a new request"
)


def cause_of(exc: KlingError) -> BaseException:
    """The server's or network's own error: what an uncertain submission gave up on."""
    return exc.cause if isinstance(exc, SubmissionUncertainError) else exc


def account_refused(exc: KlingError) -> bool:
    """True if ``exc`` refuses the key or the account itself (401, 402, 403): sending more
    lines cannot succeed, so the run submits nothing more."""
    return isinstance(cause_of(exc), AuthenticationError | InsufficientCreditsError)


def record_refusal(journal: Journal, job: Job, exc: KlingError) -> tuple[JobState, str]:
    """Record a POST that made no task (for sure, or as far as we know): the outcome's row
    of the submission rules says whether the journal keeps the line's key."""
    key, cause = job.line.key, cause_of(exc)
    outcome = classify(exc)
    if outcome is Outcome.UNKNOWN:
        journal.problem(key, str(cause))
        return JobState.UNCERTAIN, f"{UNCERTAIN_HINT} (cause: {cause})"
    if outcome is Outcome.CONFLICT:
        reason = f"{CONFLICT_HINT}: {exc}"
    elif not RULES[outcome].keeps_key:
        # The server judged this key and body and refused the body (a known key would
        # have been replayed): no task exists under the key, so the intent is dropped
        # and the next run starts afresh (uploading local images again).
        reason = f"refused by the server: {exc}"
        if job.todo is Todo.RESEND and job.line.local_images:
            reason += (
                " (its images were uploaded by an earlier run: if that was over 72 hours "
                "ago their URLs have expired; re-running uploads them again)"
            )
        job.idempotency_key = job.body = None
    else:
        # Refused before the key was looked at (401, 402, 429...): an earlier POST of
        # this intent may still have made a task, so the key is kept for the next run.
        reason = (
            f"refused by the server: {exc}; re-running sends it again with the same idempotency key"
        )
    if RULES[outcome].keeps_key:
        journal.problem(key, reason)
    else:
        journal.not_submitted(key)
    return JobState.ERROR, reason


def record_follow_failure(
    journal: Journal, job: Job, exc: KlingError | OSError, timeout: float | None
) -> tuple[JobState, str]:
    """Record why waiting for ``job``'s task or saving its video failed (``timeout``: the
    wait's limit, for a TimeoutError)."""
    key = job.line.key
    match exc:
        case TaskFailedError():
            reason = f"{exc.message or 'no message'} (code {exc.code})"
            journal.finished(key, JournalState.FAILED, reason)
            return JobState.FAILED, reason
        case TaskCancelledError():
            journal.finished(key, JournalState.CANCELLED, "cancelled on the server")
            return JobState.FAILED, "cancelled on the server"
        case TaskNotFoundError():
            journal.problem(key, str(exc))
            return JobState.ERROR, f"the server does not know task {job.task_id}: {exc}"
        case KlingError():  # a download refused or unsavable: this line only
            journal.problem(key, str(exc))
            return JobState.ERROR, str(exc)
        case TimeoutError():  # asyncio.timeout (after KlingError: RequestTimeoutError is one)
            reason = f"not finished within {timeout:g} s (it keeps running; re-run to resume)"
        case _:  # a local file problem is this line's outcome, not a crash
            reason = f"cannot save the video: {exc.strerror or exc}"
    journal.problem(key, reason)
    return JobState.ERROR, reason
