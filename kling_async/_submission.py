"""Did the server take this POST? The one answer, for paid submits and image uploads.

Each attempt of a POST that creates something (a generation, which is paid; an uploaded
image) ends in one :class:`Outcome`, read from its answer or its failure by
:func:`classify`. What an outcome means is its row of :data:`RULES`, the one table that
the session's submit loop (:class:`Submission`), uploads, ``kling-async generate`` and
the batch runner's journal all read:

=========================  ====  =======  =========  =====  =============
outcome                    took  settles  keeps key  retry  retry, no key
=========================  ====  =======  =========  =====  =============
created                    yes   yes      yes        no     no
replayed                   yes   yes      yes        no     no
not sent                   no    no       yes        yes    yes
refused                    no    yes      no         no     no
key conflict               no    yes      yes        no     no
refused, a task may exist  no    no       yes        yes    no
unknown                    ?     no       yes        yes    no
=========================  ====  =======  =========  =====  =============

*took*: this attempt took effect. *settles*: the answer says whether the request has a
task under its key, so an earlier attempt whose outcome was unknown is settled too (a
refusal of the body or of the key comes after the key was looked up; a 401, 402, 403 or
429 comes before it). *keeps key*: a later try of this request must reuse its key, since
a task may exist under it (or the key is another request's). *retry*: another try with
the same key and body may settle it, when the failure is transient (408, 429, 5xx, a
lost connection). *retry, no key*: a POST without an idempotency key (an upload) is sent
again only if it never left.

The key itself is made here too (:func:`new_idempotency_key`) and checked here
(:func:`check_idempotency_key`), for the session and the command line alike.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

import attrs

from ._client import ApiClient, Reply
from ._config import RetryPolicy, header_token
from ._convert import parse_submission, request_body
from ._exceptions import (
    APIError,
    BadRequestError,
    IdempotencyConflictError,
    KlingError,
    RequestValidationError,
    ServerError,
    SessionClosedError,
    SubmissionUncertainError,
    TransportError,
)
from ._models import VideoRequest
from ._retry import RETRYABLE_STATUS, is_transient, log_retry, retry_delay, too_long_to_wait
from ._telemetry import SubmitTrace, telemetry

__all__ = [
    "MAX_KEY_LENGTH",
    "REPLAYED_HEADER",
    "RULES",
    "Outcome",
    "Rule",
    "Submission",
    "check_idempotency_key",
    "classify",
    "SUBMIT_PATH",
    "new_idempotency_key",
    "post_generation",
    "submit_outcome",
    "surely_not_received",
]

T = TypeVar("T")

logger = logging.getLogger("kling_async")

REPLAYED_HEADER = "Idempotency-Replayed"
"""The answer's header that says the server returned the task of an earlier attempt."""
MAX_KEY_LENGTH = 191
"""The longest ``Idempotency-Key`` the API takes (API.md section 4)."""


def check_idempotency_key(key: object) -> str:
    """``key`` if it is a valid ``Idempotency-Key`` (1-191 visible ASCII characters)."""
    rule = f"must be 1-{MAX_KEY_LENGTH} visible ASCII characters (no spaces)"
    return header_token(key, "idempotency_key", rule, longest=MAX_KEY_LENGTH)


def new_idempotency_key(prefix: str = "kling-async-") -> str:
    """A fresh ``Idempotency-Key`` for one logical request: ``prefix`` and 32 random hex
    digits (``prefix`` says who made it: the session, or the command line)."""
    return prefix + secrets.token_hex(16)


class Outcome(enum.StrEnum):
    """How one attempt of a creating POST ended."""

    CREATED = "created"
    """Answered with a new task (or image)."""
    REPLAYED = "replayed"
    """Answered with the task an earlier attempt with the same key made."""
    NOT_SENT = "not sent"
    """Never reached the server: no connection, refused locally, bad input, session closed."""
    REFUSED = "refused"
    """The server judged the request and refused it (400, 413, 422): no task under its key."""
    CONFLICT = "key conflict"
    """409: the key belongs to another request (a task with this body would be replayed)."""
    REFUSED_MAY_EXIST = "refused, a task may exist"
    """Refused before the key was looked at (401, 402, 403, 429...): an earlier attempt
    with this key may still have made a task."""
    UNKNOWN = "unknown"
    """A timeout, a connection lost mid-answer, a 408, a 5xx or a garbled answer: only
    the server knows."""


@attrs.frozen
class Rule:
    """What an :class:`Outcome` means for the POST (see the table in the module docstring)."""

    took: bool | None
    """This attempt took effect (None: only the server knows)."""
    settles: bool
    """The answer says whether the request has a task under its key."""
    keeps_key: bool
    """A later try of this request must reuse its key."""
    retry: bool
    """Another try with the same key and body, if the failure is transient."""
    retry_unkeyed: bool
    """Another try of a POST without a key, if the failure is transient."""


RULES: Mapping[Outcome, Rule] = {
    # Rule(took, settles, keeps_key, retry, retry_unkeyed): the module docstring's table
    Outcome.CREATED: Rule(True, True, True, False, False),
    Outcome.REPLAYED: Rule(True, True, True, False, False),
    Outcome.NOT_SENT: Rule(False, False, True, True, True),
    Outcome.REFUSED: Rule(False, True, False, False, False),
    Outcome.CONFLICT: Rule(False, True, True, False, False),
    Outcome.REFUSED_MAY_EXIST: Rule(False, False, True, True, False),
    Outcome.UNKNOWN: Rule(None, False, True, True, False),
}
"""The one table: every outcome and what it means."""


def classify(result: Reply | BaseException) -> Outcome:
    """The outcome of an attempt that got ``result``: its answer, or what it raised."""
    match result:
        case Reply():
            replayed = result.headers.get(REPLAYED_HEADER, "").lower() == "true"
            return Outcome.REPLAYED if replayed else Outcome.CREATED
        case RequestValidationError() | SessionClosedError():
            return Outcome.NOT_SENT
        case TransportError():
            return Outcome.UNKNOWN if result.sent else Outcome.NOT_SENT
        case IdempotencyConflictError():
            return Outcome.CONFLICT
        case ServerError():
            return Outcome.UNKNOWN
        case APIError() if result.status == RETRYABLE_STATUS:
            return Outcome.UNKNOWN
        case BadRequestError():
            return Outcome.REFUSED
        case APIError():
            return Outcome.REFUSED_MAY_EXIST
        case _:  # SubmissionUncertainError, or anything unforeseen: assume the worst
            return Outcome.UNKNOWN


def surely_not_received(exc: BaseException) -> bool:
    """True if a request that raised ``exc`` certainly did not take effect on the server."""
    return RULES[classify(exc)].took is False


class Submission:
    """One creating POST, sent again while :data:`RULES` says another try is safe.

    An explicit loop rather than a ``backoff`` decorator: what an attempt showed (whether
    any outcome was unknown) is the state a caller needs afterwards, and here it is one
    attribute instead of variables captured from a decorated closure.
    """

    __slots__ = ("_keyed", "_policy", "unknown")

    def __init__(self, policy: RetryPolicy, *, keyed: bool) -> None:
        self._policy = policy
        self._keyed = keyed
        self.unknown: KlingError | None = None
        """The latest failure whose outcome only the server knows, if any."""

    async def send(self, attempt: Callable[[], Awaitable[T]], what: str) -> T:
        """``attempt()``'s result; its last failure once another try is not safe, not worth
        it (not transient, or a ``Retry-After`` over the policy's limit) or out of tries."""
        tries = 0
        while True:
            tries += 1
            try:
                return await attempt()
            except KlingError as exc:
                rule = RULES[classify(exc)]
                if rule.took is None:
                    self.unknown = exc
                again = rule.retry if self._keyed else rule.retry_unkeyed
                if (
                    not again
                    or not is_transient(exc)
                    or tries >= self._policy.max_attempts
                    or too_long_to_wait(exc, self._policy)
                ):
                    raise
                wait = retry_delay(exc, tries - 1, self._policy)
                log_retry(what, wait, tries, exc)
            await asyncio.sleep(wait)

    def uncertain(self, exc: BaseException) -> bool:
        """True if giving up with ``exc`` leaves the request uncertain: an attempt's outcome
        was unknown, and ``exc`` does not settle it."""
        return self.unknown is not None and not RULES[classify(exc)].settles

    def uncertainty(
        self, request: object, exc: BaseException, key: str
    ) -> SubmissionUncertainError:
        """The error for giving up with ``exc`` on an uncertain request (see
        :meth:`uncertain`); a closed session's refusal is not the cause, the unknown
        attempt before it is."""
        assert self.unknown is not None
        cause = self.unknown if isinstance(exc, SessionClosedError) else exc
        return SubmissionUncertainError(request, cause, key)


SUBMIT_PATH = "/v1/videos/generations"


def submit_outcome(error: BaseException) -> str:
    """How a submit that raised ``error`` ended, for the ``kling.submits`` metric:
    uncertain (retries ran out while an attempt's outcome was unknown), not_sent,
    cancelled or refused."""
    if isinstance(error, SubmissionUncertainError):
        return "uncertain"
    if isinstance(error, asyncio.CancelledError):
        return "cancelled"
    return "not_sent" if classify(error) is Outcome.NOT_SENT else "refused"


async def post_generation(
    client: ApiClient,
    policy: RetryPolicy,
    request: VideoRequest,
    key: str,
    *,
    closed: Callable[[], bool],
) -> tuple[str, float]:
    """POST ``request`` (its images already uploaded) with ``key`` until the server says
    what it made: the task id and when the attempt that made it left (the event loop's
    clock; for a replay, the first attempt, which the server answered for). Uncertain
    retries end in :class:`SubmissionUncertainError`; ``closed()`` says whether a
    cancellation came from the session closing. Traced as one ``kling.submit`` span."""
    trace = telemetry().submit(request)
    try:
        with trace.active():
            task_id, outcome, origin = await _post(client, policy, request, key, trace, closed)
    except BaseException as exc:
        trace.finished(submit_outcome(exc), error=exc)
        raise
    replayed = outcome is Outcome.REPLAYED
    trace.finished(outcome.value, task_id=task_id, replayed=replayed)
    return task_id, origin


async def _post(
    client: ApiClient,
    policy: RetryPolicy,
    request: VideoRequest,
    key: str,
    trace: SubmitTrace,
    closed: Callable[[], bool],
) -> tuple[str, Outcome, float]:
    body = request_body(request)
    loop = asyncio.get_running_loop()
    sent: list[float] = []  # when each attempt went out

    async def attempt() -> tuple[str, Outcome]:
        sent.append(loop.time())
        try:
            reply = await client.call(
                "POST", SUBMIT_PATH, json_body=body, headers={"Idempotency-Key": key}, paid=True
            )
        except KlingError as exc:
            trace.attempt_failed(len(sent), exc)
            raise
        return parse_submission(reply.payload), classify(reply)

    submission = Submission(policy, keyed=True)
    try:
        task_id, outcome = await submission.send(attempt, "submit")
    except asyncio.CancelledError:
        if closed() and submission.unknown is not None:  # closed while waiting to retry
            raise SubmissionUncertainError(request, submission.unknown, key) from None
        raise
    except KlingError as exc:
        if submission.uncertain(exc):
            raise submission.uncertainty(request, exc, key) from exc
        raise
    replayed = outcome is Outcome.REPLAYED
    logger.debug(
        "submitted %s%s",
        task_id,
        " (replayed)" if replayed else "",
        extra={"task_id": task_id, "attempts": len(sent), "replayed": replayed},
    )
    return task_id, outcome, sent[0] if replayed else sent[-1]
