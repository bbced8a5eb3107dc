"""The batch journal: durable steps, uncertain intents, one process at a time."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from kling_async._cli._journal import Journal, JournalError, default_path

BODY = '{"prompt":"a cat"}'


def test_steps_survive_reopening(tmp_path: Path) -> None:
    """Every step is committed at once: a fresh connection sees it."""
    path = default_path(tmp_path)
    with Journal(path) as journal:
        journal.intent("k1", 1, BODY, "0001-a-cat.mp4")
        journal.submitted("k1", "task_1")
        journal.intent("k2", 2, BODY, "0002-a-cat.mp4")
        journal.submitted("k2", "task_2")
        journal.finished("k2", "completed")
        journal.downloaded("k2", "0002-a-cat.mp4")
        journal.intent("k3", 3, BODY, "0003-a-cat.mp4")
    with Journal(path) as journal:
        entries = journal.entries()
    assert (entries["k1"].state, entries["k1"].task_id) == ("submitted", "task_1")
    assert (entries["k2"].state, entries["k2"].filename) == ("downloaded", "0002-a-cat.mp4")
    assert entries["k3"].uncertain
    assert entries["k3"].task_id is None


def test_intent_is_durable_before_anything_else(tmp_path: Path) -> None:
    """An intent is visible to another process while the writer still holds the journal."""
    path = tmp_path / "j.sqlite3"
    with Journal(path) as journal:
        journal.intent("k", 7, BODY, "f.mp4")
        code = "import sqlite3,sys; db=sqlite3.connect(sys.argv[1]);"
        code += "print(db.execute('select state, line from jobs').fetchall()); db.close()"
        seen = subprocess.run(
            [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True
        )
    assert seen.stdout.strip() == "[('intent', 7)]"


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
        journal.intent("a", 1, BODY, "a.mp4")
        journal.not_submitted("a")
        journal.intent("b", 2, BODY, "b.mp4")
        journal.submitted("b", "task_b")
        journal.not_submitted("b")
        assert set(journal.entries()) == {"b"}


def test_new_intent_counts_attempts_and_clears_the_old_id(tmp_path: Path) -> None:
    """Resubmitting records a second attempt and drops the previous outcome."""
    with Journal(tmp_path / "j.sqlite3") as journal:
        journal.intent("a", 1, BODY, "a.mp4")
        journal.submitted("a", "task_old")
        journal.finished("a", "failed", "boom")
        journal.intent("a", 4, BODY, "other.mp4")
        entry = journal.entries()["a"]
    assert (entry.state, entry.task_id, entry.error, entry.attempts) == ("intent", None, None, 2)
    assert (entry.line, entry.filename) == (4, "a.mp4")


def test_uncertain_and_problem_keep_the_state(tmp_path: Path) -> None:
    """Noting a cause or a problem changes the error text, not the state."""
    with Journal(tmp_path / "j.sqlite3") as journal:
        journal.intent("a", 1, BODY, "a.mp4")
        journal.uncertain("a", "timed out after sending")
        journal.intent("b", 2, BODY, "b.mp4")
        journal.submitted("b", "task_b")
        journal.problem("b", "download failed")
        entries = journal.entries()
    assert (entries["a"].state, entries["a"].error) == ("intent", "timed out after sending")
    assert (entries["b"].state, entries["b"].error) == ("submitted", "download failed")


def test_finished_accepts_only_terminal_states(tmp_path: Path) -> None:
    """Recording a non-terminal state as finished is a programming error."""
    with Journal(tmp_path / "j.sqlite3") as journal, pytest.raises(ValueError, match="terminal"):
        journal.finished("a", "processing")


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    """A corrupt or foreign file gives a JournalError naming it, and releases the lock."""
    path = tmp_path / "j.sqlite3"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(JournalError, match=r"j\.sqlite3"):
        Journal(path)
    path.unlink()
    Journal(path).close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    """A journal written by a newer version is not touched."""
    path = tmp_path / "j.sqlite3"
    Journal(path).close()
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("UPDATE meta SET value = '99' WHERE name = 'schema_version'")
    with pytest.raises(JournalError, match="newer"):
        Journal(path)


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
        journal.intent("a", 1, BODY, "a.mp4")
        journal.submitted("a", "task_a")
        assert journal.entries()["a"].task_id == "task_a"
    assert not list(tmp_path.iterdir())
