"""Every state machine is a StrEnum with one table: each member has its row, the rows agree
with what the code does with them, and the strings on the wire and on disk are the ones
they always were."""

from __future__ import annotations

import io
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from rich.console import Console
from rich.style import Style
from support.emulator_http import AUTH, BODY, SUBMIT, fast, submit

from kling_async import TaskStatus, TextToVideo
from kling_async._cli._batchfile import BatchLine
from kling_async._cli._jobs import (
    RUNNING_AS,
    STATES,
    BatchOptions,
    Job,
    JobState,
    Todo,
    plan,
)
from kling_async._cli._journal import (
    FINISHED,
    NEXT,
    Journal,
    JournalError,
    JournalRow,
    JournalState,
)
from kling_async._cli._jsonlines import job_record
from kling_async._cli._progress import RichBatchDisplay
from kling_async._messages import KEPT, Lesson, Message, MessageKind, Pause, Snap, decode, encode
from kling_async.emulator import DEFAULT_FAULT_KINDS, FAULT_KINDS, Emulator, Fault, FaultKind
from kling_async.emulator._faultkinds import API_ROUTES, KINDS, Served, kind_applies

# -- a batch's jobs ------------------------------------------------------------------------


def a_job(state: JobState | str = JobState.QUEUED) -> Job:
    """The job of a one-line batch, in ``state``."""
    line = BatchLine(1, TextToVideo("a lighthouse"), "k.1")
    return Job(line, line.filename(), state=state)


def test_every_job_state_has_one_row_in_the_order_shown() -> None:
    """STATES lists every JobState once, in display order; the values are the words the
    command has always printed."""
    assert list(STATES) == list(JobState)
    assert [state.value for state in JobState] == [
        "queued", "submitting", "pending", "processing", "unknown", "downloading",
        "done", "failed", "uncertain", "error", "stopped",
    ]  # fmt: skip


@pytest.mark.parametrize("state", list(JobState))
def test_each_job_states_row_agrees_with_itself(state: JobState) -> None:
    """Ended is neither moving nor stopped; running is moving; a problem has ended; an
    ended job fills its share of the bar and no other does; its style is one rich draws."""
    info = STATES[state]
    assert info.ended == (not info.active and state is not JobState.STOPPED)
    assert info.active or not info.running
    assert info.ended or not info.problem
    assert (info.weight == 1.0) == info.ended and 0.0 <= info.weight <= 1.0
    Style.parse(info.style)


@pytest.mark.parametrize("state", list(JobState))
def test_every_job_state_is_counted_drawn_and_written_as_its_word(
    state: JobState, tmp_path: Path
) -> None:
    """The live view counts a job in any state under its word, in its style; --json names
    the state by the same word."""
    out = io.StringIO()
    display = RichBatchDisplay(Console(file=out, width=120), "b.jsonl")
    job = a_job(state)
    display.start([job])
    display.stop()
    assert f"{state.value} 1" in out.getvalue()
    assert json.loads(json.dumps(job_record(job, tmp_path)))["state"] == state.value


def test_a_job_state_may_be_set_by_its_word() -> None:
    """A job's state set as a string becomes the JobState (and a wrong word is refused)."""
    job = a_job("processing")
    assert job.state is JobState.PROCESSING
    job.state = "done"
    assert job.state is JobState.DONE
    with pytest.raises(ValueError, match="mystery"):
        job.state = "mystery"


def test_the_servers_running_statuses_are_job_states() -> None:
    """Every status the server reports before the end maps to a running job state."""
    assert set(RUNNING_AS) == {status for status in TaskStatus if not status.is_terminal}
    assert all(STATES[state].running for state in RUNNING_AS.values())


# -- the journal ---------------------------------------------------------------------------


def test_every_journal_state_has_its_moves_and_its_column_value() -> None:
    """NEXT has a row for every JournalState, every state is reachable from an intent, a
    task's end is completed, failed or cancelled; the values are what SQLite holds."""
    assert set(NEXT) == set(JournalState)
    reached, frontier = {JournalState.INTENT}, [JournalState.INTENT]
    while frontier:
        for state in NEXT[frontier.pop()] - reached:
            reached.add(state)
            frontier.append(state)
    assert reached == set(JournalState)
    assert {JournalState.COMPLETED, JournalState.FAILED, JournalState.CANCELLED} == FINISHED
    assert [state.value for state in JournalState] == [
        "intent", "submitted", "completed", "downloaded", "failed", "cancelled",
    ]  # fmt: skip


def test_the_journal_moves_only_as_next_says() -> None:
    """Driven through every path a run takes, the journal's rows go only from a state to
    one NEXT allows, and every state is met."""
    moves: set[tuple[JournalState, JournalState]] = set()
    seen: set[JournalState] = set()
    with Journal(None) as journal:

        def step(key: str, write: Callable[[], None]) -> None:
            before = journal.rows().get(key)
            write()
            after = journal.rows().get(key)
            if after is not None:
                seen.add(after.state)
                if before is not None:
                    moves.add((before.state, after.state))

        def intent(key: str) -> Callable[[], None]:
            return lambda: journal.intent(key, 1, "{}", f"{key}.mp4", f"key-{key}")

        for key, finish in (("a", JournalState.COMPLETED), ("b", JournalState.FAILED)):
            step(key, intent(key))
            step(key, lambda key=key: journal.resending(key, 1))
            step(key, lambda key=key: journal.submitted(key, f"task_{key}"))
            step(key, lambda key=key, finish=finish: journal.finished(key, finish))
        step("a", lambda: journal.downloaded("a", "a.mp4"))
        step("a", lambda: journal.downloaded("a", "a.mp4"))  # saved again: the file went
        step("b", intent("b"))  # --retry-failed
        step("c", intent("c"))
        step("c", lambda: journal.submitted("c", "task_c"))
        step("c", lambda: journal.finished("c", JournalState.CANCELLED))
        step("c", intent("c"))
        step("d", intent("d"))
        journal.not_submitted("d")
        assert "d" not in journal.rows()
    assert seen == set(JournalState)
    assert all(after in NEXT[before] for before, after in moves), moves


PLANS = [
    (JournalState.INTENT, JobState.QUEUED, Todo.RESEND),
    (JournalState.SUBMITTED, JobState.PENDING, Todo.FOLLOW),
    (JournalState.COMPLETED, JobState.DOWNLOADING, Todo.DOWNLOAD),
    (JournalState.DOWNLOADED, JobState.DOWNLOADING, Todo.DOWNLOAD),  # its file is gone
    (JournalState.FAILED, JobState.FAILED, None),
    (JournalState.CANCELLED, JobState.FAILED, None),
]
"""What a run makes of a row in each journal state (with a key, and no flags)."""


def test_the_plans_cover_every_journal_state() -> None:
    """The planning test below meets every JournalState."""
    assert [state for state, _, _ in PLANS] == list(JournalState)


@pytest.mark.parametrize(("state", "job_state", "todo"), PLANS, ids=[s.value for s, *_ in PLANS])
def test_a_run_plans_a_job_for_every_journal_state(
    state: JournalState, job_state: JobState, todo: Todo | None, tmp_path: Path
) -> None:
    """Each journal state becomes the job a run expects."""
    line = a_job().line
    task_id = None if state is JournalState.INTENT else "task_1"
    row = JournalRow(line.key, 1, "{}", state, task_id, "gone.mp4", None, 1, "key-1")
    (job,), orphans = plan([line], {line.key: row}, BatchOptions(out_dir=tmp_path))
    assert (job.state, job.todo, orphans) == (job_state, todo, [])


def test_a_row_in_a_state_no_kling_async_writes_is_an_error(tmp_path: Path) -> None:
    """A journal row whose state is not a JournalState is a JournalError naming it."""
    path = tmp_path / "journal.sqlite3"
    with Journal(path) as journal:
        journal.intent("k", 3, "{}", "k.mp4", "key-k")
    with sqlite3.connect(path) as db:
        db.execute("UPDATE jobs SET state = 'mystery'")
    db.close()
    with Journal(path) as journal, pytest.raises(JournalError, match=r"'mystery'.*line 3"):
        journal.rows()


# -- the emulator's fault kinds ------------------------------------------------------------


def test_every_fault_kind_has_one_row_and_keeps_its_name() -> None:
    """KINDS has a row per FaultKind; FAULT_KINDS and DEFAULT_FAULT_KINDS hold the same
    strings as always, the defaults in their old order (a seeded run draws the same)."""
    assert set(KINDS) == set(FaultKind)
    assert {kind.value for kind in FaultKind} == FAULT_KINDS
    assert DEFAULT_FAULT_KINDS == ("429", "500", "502", "503", "reset", "slow", "truncated", "html")
    assert all(type(kind) is str for kind in (*FAULT_KINDS, *DEFAULT_FAULT_KINDS))
    assert [kind for kind in FaultKind if not KINDS[kind].after] == [FaultKind.TOO_MANY_REQUESTS]


@pytest.mark.parametrize("kind", list(FaultKind))
def test_a_fault_kind_applies_where_its_row_says(kind: FaultKind) -> None:
    """kind_applies reads the table; every kind applies to some API route, and a Fault
    takes the kind by its string."""
    for route in (*API_ROUTES, "storage"):
        assert kind_applies(kind.value, route) == (route in KINDS[kind].routes)
    assert any(kind_applies(kind, route) for route in API_ROUTES)
    assert Fault(kind.value).kind is kind


#: What a status request answered by each way of serving a fault looks like.
SERVED_STATUS = {
    FaultKind.TOO_MANY_REQUESTS: 429,
    FaultKind.INTERNAL_ERROR: 500,
    FaultKind.BAD_GATEWAY: 502,
    FaultKind.UNAVAILABLE: 503,
    FaultKind.HTML: 502,
    FaultKind.BODY_ERROR: 200,
}


@pytest.mark.parametrize("kind", list(FaultKind))
async def test_every_fault_kind_is_served(kind: FaultKind, http: aiohttp.ClientSession) -> None:
    """A fault of each kind on a status request is served as its row says, and counted
    under its string."""
    async with Emulator(fast(slow_delay=0.05)) as emu:
        task_id = await submit(http, emu)
        emu.inject(Fault(kind.value, route="status"))
        served = KINDS[kind].served
        timeout = aiohttp.ClientTimeout(total=0.2 if served is Served.HANG else 10)
        url = f"{emu.url}/v1/tasks/{task_id}"
        try:
            async with http.get(url, headers=AUTH, timeout=timeout) as response:
                status, text = response.status, await response.text()
        except (aiohttp.ClientError, TimeoutError):
            status, text = None, ""
        if served is Served.ERROR:
            assert status == SERVED_STATUS[kind]
        elif served is Served.HANG:
            assert status is None
        elif served in (Served.SLOW, Served.BODY, Served.DROP):  # a reset GET is sent again
            assert status == 200 and json.loads(text)["code"] == 200
        elif served is Served.TRUNCATED:
            assert status == 200
            with pytest.raises(json.JSONDecodeError):
                json.loads(text)
        else:  # ECHO: the key in an error, or in a valid body
            assert "test-key" in text
        assert emu.stats.faults_injected == {kind.value: 1}


@pytest.mark.parametrize(
    "kind", [kind for kind in FaultKind if kind_applies(kind, "submit") and KINDS[kind].after]
)
async def test_a_fault_after_a_submit_made_its_task(
    kind: FaultKind, http: aiohttp.ClientSession
) -> None:
    """A fault that may come after a submit, there, answers wrong or not at all, and the
    task exists."""
    served = KINDS[kind].served
    async with Emulator(fast(slow_delay=0.05)) as emu:
        emu.inject(Fault(kind.value, route="submit", when="after"))
        timeout = aiohttp.ClientTimeout(total=0.2 if served is Served.HANG else 10)
        try:
            async with http.post(
                emu.url + SUBMIT, json=BODY, headers=AUTH, timeout=timeout
            ) as response:
                await response.read()
        except (aiohttp.ClientError, TimeoutError):
            pass
        assert emu.stats.submissions == 1
        assert emu.stats.faults_injected == {kind.value: 1}


# -- what sessions sharing a Redis tell each other -----------------------------------------

SNAPSHOT = {"id": "task_1", "status": "processing", "progress": 40}
WIRE: list[tuple[Message, dict[str, object]]] = [
    (
        Snap("task_1", SNAPSHOT, 1.5, 2.5),
        {"t": "snap", "id": "task_1", "s": SNAPSHOT, "sent": 1.5, "received": 2.5, "from": "me"},
    ),
    (Pause(2.5), {"t": "pause", "seconds": 2.5, "from": "me"}),
    (
        Lesson(("kling-v3", "std", 5, False), "run", 0.12),
        {
            "t": "lesson",
            "kind": ["kling-v3", "std", 5, False],
            "name": "run",
            "v": 0.12,
            "from": "me",
        },
    ),
]


def test_every_message_kind_is_kept_as_its_row_says_and_has_a_wire() -> None:
    """KEPT has a row per MessageKind, and the wire test below covers every kind."""
    assert set(KEPT) == set(MessageKind)
    assert {message.kind for message, _ in WIRE} == set(MessageKind)


@pytest.mark.parametrize(("message", "wire"), WIRE, ids=[m.kind.value for m, _ in WIRE])
def test_every_message_kind_has_the_wire_it_always_had(
    message: Message, wire: dict[str, object]
) -> None:
    """A message's payload has the fields, in the order, it always had; read back, it is
    the same message from the same sender."""
    payload = encode(message, "me")
    assert list(json.loads(payload).items()) == list(wire.items())
    assert decode(payload) == ("me", message)


def test_a_message_of_a_kind_this_version_does_not_know_is_ignored() -> None:
    """A newer session's message kind is read as nothing, not as an error."""
    assert decode('{"t": "gossip", "from": "other"}') == ("other", None)
