"""The one rule of "did the server take this POST?": every outcome, its row of the table,
and what the session and uploads do with it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from support.scripted import ScriptedTransport, scripted_session

from kling_async import (
    APIError,
    AuthenticationError,
    BadRequestError,
    IdempotencyConflictError,
    ImageTooLargeError,
    InsufficientCreditsError,
    InvalidResponseError,
    KlingError,
    NetworkError,
    RateLimitError,
    RequestTimeoutError,
    RequestValidationError,
    ServerError,
    SessionClosedError,
    SubmissionUncertainError,
    TextToVideo,
    TransportError,
    _submission,
)
from kling_async._client import Reply
from kling_async._submission import RULES, Outcome, Rule, classify
from kling_async.testing import FAST_RETRY


def _reply(**headers: str) -> Reply:
    return Reply({"code": 200}, CIMultiDictProxy(CIMultiDict(headers)))


OUTCOMES: list[tuple[Any, Outcome]] = [
    (_reply(), Outcome.CREATED),
    (_reply(**{"Idempotency-Replayed": "true"}), Outcome.REPLAYED),
    (NetworkError("refused", sent=False), Outcome.NOT_SENT),
    (TransportError("invalid URL", sent=False), Outcome.NOT_SENT),
    (SessionClosedError("closing"), Outcome.NOT_SENT),
    (RequestValidationError("duration", "3-15 s", 99), Outcome.NOT_SENT),
    (BadRequestError(400, 400, "bad duration"), Outcome.REFUSED),
    (BadRequestError(422, 422, "bad body"), Outcome.REFUSED),
    (ImageTooLargeError(413, 413, "too large"), Outcome.REFUSED),
    (IdempotencyConflictError(409, 409, "key reused"), Outcome.CONFLICT),
    (AuthenticationError(401, 401, "bad key"), Outcome.REFUSED_MAY_EXIST),
    (AuthenticationError(403, 403, "forbidden"), Outcome.REFUSED_MAY_EXIST),
    (InsufficientCreditsError(402, 402, "no credit"), Outcome.REFUSED_MAY_EXIST),
    (RateLimitError(429, 429, "slow down"), Outcome.REFUSED_MAY_EXIST),
    (APIError(404, 404, "no such route"), Outcome.REFUSED_MAY_EXIST),
    (NetworkError("reset mid-answer"), Outcome.UNKNOWN),
    (RequestTimeoutError("timed out"), Outcome.UNKNOWN),
    (InvalidResponseError("garbled"), Outcome.UNKNOWN),
    (ServerError(502, 502, "bad gateway"), Outcome.UNKNOWN),
    (ServerError(200, 500, "an error in a 200 body"), Outcome.UNKNOWN),
    (APIError(408, 408, "request timeout"), Outcome.UNKNOWN),
    (SubmissionUncertainError(None, ServerError(502, 502, "x"), "k"), Outcome.UNKNOWN),
    (KlingError("something unforeseen"), Outcome.UNKNOWN),
]


@pytest.mark.parametrize(("result", "outcome"), OUTCOMES, ids=lambda v: repr(v)[:40])
def test_every_answer_and_failure_has_one_outcome(result: Any, outcome: Outcome) -> None:
    """classify names the outcome of every answer and every failure a POST can meet."""
    assert classify(result) is outcome


def _table() -> dict[str, tuple[bool | None, ...]]:
    """The rows of the table in ``_submission``'s docstring (the documented rule)."""
    words = {"yes": True, "no": False, "?": None}
    rows = {}
    for line in (_submission.__doc__ or "").splitlines():
        cells = line.rsplit(maxsplit=5)
        if len(cells) == 6 and all(cell in words for cell in cells[1:]):
            rows[cells[0].strip()] = tuple(words[cell] for cell in cells[1:])
    return rows


def test_the_rules_are_the_documented_table() -> None:
    """RULES is exactly the module docstring's table: one row per outcome, no other."""
    documented = _table()
    assert set(documented) == {outcome.value for outcome in Outcome}
    for outcome in Outcome:
        assert RULES[outcome] == Rule(*documented[outcome.value]), outcome
    # What the table says, in words the callers rely on:
    assert [o for o in Outcome if RULES[o].took] == [Outcome.CREATED, Outcome.REPLAYED]
    assert [o for o in Outcome if not RULES[o].keeps_key] == [Outcome.REFUSED]
    assert [o for o in Outcome if RULES[o].retry_unkeyed] == [Outcome.NOT_SENT]


LOST = (502, {"code": 502, "message": "bad gateway"}, {})
ANSWERS: dict[Outcome, Any] = {
    Outcome.NOT_SENT: NetworkError("cannot connect", sent=False),
    Outcome.REFUSED: (400, {"code": 400, "message": "bad duration"}, {}),
    Outcome.CONFLICT: (409, {"code": 409, "message": "key reused"}, {}),
    Outcome.REFUSED_MAY_EXIST: (429, {"code": 429, "message": "later"}, {"Retry-After": "0"}),
    Outcome.UNKNOWN: LOST,
}


@pytest.mark.parametrize("outcome", list(ANSWERS), ids=str)
@pytest.mark.parametrize("after_a_lost_answer", [False, True], ids=["first", "after-lost"])
async def test_the_session_follows_the_table(outcome: Outcome, after_a_lost_answer: bool) -> None:
    """A submit is sent again while its row says retry (every answer here is transient or
    final as its kind is), and after a lost answer it is uncertain unless the last answer
    settles it."""
    answer = ANSWERS[outcome]

    def script(method: str, path: str, n: int) -> Any:
        return LOST if after_a_lost_answer and n == 1 else answer

    transport = ScriptedTransport(script)
    async with scripted_session(transport) as session:
        with pytest.raises(KlingError) as info:
            await session.submit(TextToVideo("a cat"))
    rule = RULES[outcome]
    posts = len(transport.paths("POST"))
    assert posts == (FAST_RETRY.max_attempts if rule.retry else 1 + after_a_lost_answer)
    uncertain = (after_a_lost_answer or outcome is Outcome.UNKNOWN) and not rule.settles
    assert isinstance(info.value, SubmissionUncertainError) is uncertain
    if not uncertain:
        assert classify(info.value) is outcome


@pytest.mark.parametrize("outcome", list(ANSWERS), ids=str)
async def test_an_upload_is_sent_again_only_if_it_never_left(
    outcome: Outcome, tmp_path: Path
) -> None:
    """Uploads have no key: only the "retry, no key" row (not sent) is sent again; an
    unknown one says it may have been stored."""
    image = tmp_path / "cat.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 16)
    answer = NetworkError("reset mid-answer") if outcome is Outcome.UNKNOWN else ANSWERS[outcome]
    transport = ScriptedTransport(lambda method, path, n: answer)
    async with scripted_session(transport) as session:
        with pytest.raises(KlingError) as info:
            await session.upload_image(image)
    posts = len(transport.paths("POST"))
    assert posts == (FAST_RETRY.max_attempts if RULES[outcome].retry_unkeyed else 1)
    assert ("may or may not have been stored" in str(info.value)) is (outcome is Outcome.UNKNOWN)
