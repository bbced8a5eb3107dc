"""The batch journal: durable steps, keyed intents, old journals, one process at a time."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from kling_async._cli._journal import SCHEMA_VERSION, Journal, JournalError, default_path

BODY = '{"prompt":"a cat"}'

#: The schema of kling-async journals before idempotency keys (schema 1), verbatim.
SCHEMA_1 = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    key      TEXT PRIMARY KEY,
    line     INTEGER NOT NULL,
    request  TEXT NOT NULL,
    state    TEXT NOT NULL,
    task_id  TEXT,
    filename TEXT NOT NULL,
    error    TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    updated  REAL NOT NULL
);
INSERT INTO meta VALUES ('schema_version', '1');
"""


def write_schema_1(path: Path, *rows: tuple[str, int, str, str | None]) -> None:
    """A journal as the first version wrote it: rows of (key, line, state, task_id)."""
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.executescript(SCHEMA_1)
        for key, line, state, task_id in rows:
            db.execute(
                "INSERT INTO jobs VALUES (?, ?, ?, ?, ?, ?, NULL, 1, 0)",
                (key, line, BODY, state, task_id, f"{line:04d}.mp4"),
            )


def test_steps_survive_reopening(tmp_path: Path) -> None:
    """Every step is committed at once: a fresh connection sees it, key and body included."""
    path = default_path(tmp_path)
    with Journal(path) as journal:
        journal.intent("k1", 1, BODY, "0001-a-cat.mp4", "idem-1")
        journal.submitted("k1", "task_1")
        journal.intent("k2", 2, BODY, "0002-a-cat.mp4", "idem-2")
        journal.submitted("k2", "task_2")
        journal.finished("k2", "completed")
        journal.downloaded("k2", "0002-a-cat.mp4")
        journal.intent("k3", 3, BODY, "0003-a-cat.mp4", "idem-3")
    with Journal(path) as journal:
        rows = journal.rows()
    assert (rows["k1"].state, rows["k1"].task_id) == ("submitted", "task_1")
    assert (rows["k2"].state, rows["k2"].filename) == ("downloaded", "0002-a-cat.mp4")
    assert rows["k3"].unsettled
    assert (rows["k3"].task_id, rows["k3"].idempotency_key, rows["k3"].request) == (
        None,
        "idem-3",
        BODY,
    )


@pytest.mark.slow
def test_intent_with_its_key_is_durable_before_anything_else(tmp_path: Path) -> None:
    """An intent, key included, is visible to another process while the writer holds it."""
    path = tmp_path / "j.sqlite3"
    with Journal(path) as journal:
        journal.intent("k", 7, BODY, "f.mp4", "idem-7")
        code = "import sqlite3,sys; db=sqlite3.connect(sys.argv[1]);"
        code += "print(db.execute('select state, line, idempotency_key from jobs').fetchall())"
        seen = subprocess.run(
            [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True
        )
    assert seen.stdout.strip() == "[('intent', 7, 'idem-7')]"


def test_wal_mode(tmp_path: Path) -> None:
    """The journal runs in WAL mode, so readers never block the writer."""
    path = tmp_path / "j.sqlite3"
    Journal(path).close()
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_second_process_cannot_use_the_same_journal(tmp_path: Path) -> None:
    """While one Journal is open, opening it again fails with a clear message."""
    path = tmp_path / "j.sqlite3"
    with Journal(path), pytest.raises(JournalError, match="in use by another"):
        Journal(path)
    Journal(path).close()  # released on close


def test_not_submitted_removes_only_an_intent(tmp_path: Path) -> None:
    """Undoing an intent forgets the job, but never a job that has a task id."""
    with Journal(tmp_path / "j.sqlite3") as journal:
        journal.intent("a", 1, BODY, "a.mp4", "idem-a")
        journal.not_submitted("a")
        journal.intent("b", 2, BODY, "b.mp4", "idem-b")
        journal.submitted("b", "task_b")
        journal.not_submitted("b")
        assert set(journal.rows()) == {"b"}


def test_new_intent_replaces_key_and_body_and_clears_the_old_id(tmp_path: Path) -> None:
    """A new intent is a new logical request: new key and body, a second attempt, no old id."""
    with Journal(tmp_path / "j.sqlite3") as journal:
        journal.intent("a", 1, BODY, "a.mp4", "idem-old")
        journal.submitted("a", "task_old")
        journal.finished("a", "failed", "boom")
        journal.intent("a", 4, '{"prompt":"a dog"}', "other.mp4", "idem-new")
        row = journal.rows()["a"]
    assert (row.state, row.task_id, row.error, row.attempts) == ("intent", None, None, 2)
    assert (row.line, row.filename) == (4, "a.mp4")
    assert (row.idempotency_key, row.request) == ("idem-new", '{"prompt":"a dog"}')


def test_resending_counts_an_attempt_and_keeps_key_and_body(tmp_path: Path) -> None:
    """Re-sending an unsettled intent keeps its key and body and counts one more attempt."""
    with Journal(tmp_path / "j.sqlite3") as journal:
        journal.intent("a", 1, BODY, "a.mp4", "idem-a")
        journal.problem("a", "retries ran out")
        journal.resending("a", 3)
        row = journal.rows()["a"]
    assert (row.state, row.idempotency_key, row.request) == ("intent", "idem-a", BODY)
    assert (row.attempts, row.line, row.error) == (2, 3, "retries ran out")


def test_problem_keeps_the_state(tmp_path: Path) -> None:
    """Noting a problem changes the error text, not the state."""
    with Journal(tmp_path / "j.sqlite3") as journal:
        journal.intent("a", 1, BODY, "a.mp4", "idem-a")
        journal.problem("a", "timed out after sending")
        journal.intent("b", 2, BODY, "b.mp4", "idem-b")
        journal.submitted("b", "task_b")
        journal.problem("b", "download failed")
        rows = journal.rows()
    assert (rows["a"].state, rows["a"].error) == ("intent", "timed out after sending")
    assert (rows["b"].state, rows["b"].error) == ("submitted", "download failed")


def test_finished_accepts_only_terminal_states(tmp_path: Path) -> None:
    """Recording a non-terminal state as finished is a programming error."""
    with Journal(tmp_path / "j.sqlite3") as journal, pytest.raises(ValueError, match="terminal"):
        journal.finished("a", "processing")


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    """A corrupt or foreign file gives a JournalError naming it, and releases the lock."""
    path = tmp_path / "j.sqlite3"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(JournalError, match=r"j\.sqlite3 is not a kling-async journal"):
        Journal(path)
    path.unlink()
    Journal(path).close()


@pytest.mark.parametrize("kind", ["empty", "other-database"])
def test_an_empty_or_foreign_file_is_not_taken_for_a_new_journal(tmp_path: Path, kind: str) -> None:
    """A 0-byte file, or an SQLite database without journal tables, is refused and kept."""
    path = tmp_path / "j.sqlite3"
    if kind == "empty":
        path.write_bytes(b"")
    else:
        with contextlib.closing(sqlite3.connect(path)) as db, db:
            db.execute("CREATE TABLE notes (text TEXT)")
    before = path.read_bytes()
    with pytest.raises(JournalError, match="not a kling-async journal") as caught:
        Journal(path)
    assert "move it away" in str(caught.value)
    assert path.read_bytes() == before


def test_a_new_journal_appears_only_complete(tmp_path: Path) -> None:
    """A new journal is written aside and renamed in: no temporary file stays behind."""
    path = tmp_path / "j.sqlite3"
    (tmp_path / ".j.sqlite3.dead.new").write_bytes(b"a creation cut short")
    with Journal(path) as journal:
        journal.intent("a", 1, BODY, "a.mp4", "idem-a")
    assert not list(tmp_path.glob("*.new"))
    with contextlib.closing(sqlite3.connect(path)) as db:
        version = db.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
    assert version == (str(SCHEMA_VERSION),)


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    """A journal written by a newer version is not touched."""
    path = tmp_path / "j.sqlite3"
    Journal(path).close()
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("UPDATE meta SET value = '99' WHERE name = 'schema_version'")
    with pytest.raises(JournalError, match="newer"):
        Journal(path)


def test_a_schema_1_journal_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    """An old journal gains the key column; its rows stay, without a key."""
    path = tmp_path / "j.sqlite3"
    write_schema_1(path, ("a", 1, "intent", None), ("b", 2, "submitted", "task_b"))
    with Journal(path) as journal:
        rows = journal.rows()
        journal.intent("c", 3, BODY, "c.mp4", "idem-c")
    assert (rows["a"].unsettled, rows["a"].idempotency_key) == (True, None)
    assert (rows["b"].task_id, rows["b"].idempotency_key) == ("task_b", None)
    with contextlib.closing(sqlite3.connect(path)) as db:
        version = db.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
    assert version == (str(SCHEMA_VERSION),)
    with Journal(path) as journal:  # a migrated journal opens again as it is
        assert journal.rows()["c"].idempotency_key == "idem-c"


def test_unwritable_location_is_a_journal_error(tmp_path: Path) -> None:
    """A journal path under a regular file cannot be created: JournalError, not OSError."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(JournalError, match="cannot open"):
        Journal(blocker / "j.sqlite3")


def test_in_memory_journal_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A journal without a path works for one run and writes nothing to disk."""
    monkeypatch.chdir(tmp_path)
    with Journal(None) as journal:
        journal.intent("a", 1, BODY, "a.mp4", "idem-a")
        journal.submitted("a", "task_a")
        assert journal.rows()["a"].task_id == "task_a"
    assert not list(tmp_path.iterdir())
