"""The batch journal: a SQLite record that lets a batch resume without paying twice.

One row per job (keyed by the line's identity, see ``_batchfile``), moved forward by
single-statement writes, each committed before the next step is taken (the states are
:class:`JournalState`, the moves :data:`NEXT`)::

    intent ──POST returned an id──▶ submitted ──task ended──▶ completed ──file saved──▶ downloaded
                                              └────────────▶ failed / cancelled

``intent`` is written *before* the POST, with the ``Idempotency-Key`` and the exact JSON
body that POST sends. A row still at ``intent`` (no task id) after a crash, a SIGKILL or a
:class:`SubmissionUncertainError` is *unsettled*: the next run sends the same body with the
same key again, and the server answers with the task it made the first time, or makes it
now: one generation either way. Rows written before keys existed (schema 1) have no key:
those stay "uncertain" and are only resubmitted when asked.

WAL mode with ``synchronous=FULL`` makes every commit survive a crash of the process or of
the machine; one process at a time may use a journal (an advisory lock on
``<journal>.lock``). A new journal appears under its name only complete (written aside,
then renamed), so a file that is there but is not a journal (empty, truncated, foreign) is
an error, never mistaken for a new journal.
"""

from __future__ import annotations

import contextlib
import enum
import os
import secrets
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from ._lock import FileLock, LockedError

__all__ = [
    "FINISHED",
    "NEXT",
    "SCHEMA_VERSION",
    "Journal",
    "JournalError",
    "JournalRow",
    "JournalState",
    "default_path",
]

SCHEMA_VERSION = 2  # 2: jobs.idempotency_key
DEFAULT_NAME = ".kling-journal.sqlite3"


class JournalState(enum.StrEnum):
    """A job's state in the journal; the value is what the ``state`` column holds."""

    INTENT = "intent"
    """A POST is about to be sent (or was: its task id never came back): *unsettled*."""
    SUBMITTED = "submitted"
    """The POST returned a task id."""
    COMPLETED = "completed"
    """The task completed; its video is not saved yet."""
    DOWNLOADED = "downloaded"
    """The video is saved."""
    FAILED = "failed"
    """The task failed on the server."""
    CANCELLED = "cancelled"
    """The task was cancelled on the server."""


NEXT: Mapping[JournalState, frozenset[JournalState]] = {
    # An intent is sent again (same key) or replaced by a new one; a POST the server
    # surely did not take deletes its row (``not_submitted``).
    JournalState.INTENT: frozenset({JournalState.INTENT, JournalState.SUBMITTED}),
    JournalState.SUBMITTED: frozenset(
        {JournalState.COMPLETED, JournalState.FAILED, JournalState.CANCELLED}
    ),
    JournalState.COMPLETED: frozenset({JournalState.DOWNLOADED}),
    JournalState.DOWNLOADED: frozenset({JournalState.DOWNLOADED}),  # the file went missing
    JournalState.FAILED: frozenset({JournalState.INTENT}),  # --retry-failed
    JournalState.CANCELLED: frozenset({JournalState.INTENT}),
}
"""The one table of the journal's moves: the states each state may be followed by."""
FINISHED = NEXT[JournalState.SUBMITTED]
"""The states a task's end moves a row to (:meth:`Journal.finished`)."""

_SCHEMA = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE jobs (
    key      TEXT PRIMARY KEY,   -- the line's identity: request hash + occurrence
    line     INTEGER NOT NULL,   -- line number when last touched (for messages)
    request  TEXT NOT NULL,      -- the JSON body the POST sends (uploaded image URLs included)
    state    TEXT NOT NULL,      -- a JournalState: intent, submitted, completed, ...
    task_id  TEXT,               -- NULL only while state = 'intent'
    filename TEXT NOT NULL,      -- the video's name inside the output directory
    error    TEXT,               -- why the job failed, or the last problem met
    attempts INTEGER NOT NULL DEFAULT 0,  -- POSTs started for this job
    updated  REAL NOT NULL,      -- unix time of the last write
    idempotency_key TEXT         -- the key the POST carries (NULL in rows of schema 1)
);
"""
_COLUMNS = "key, line, request, state, task_id, filename, error, attempts, idempotency_key"


class JournalError(Exception):
    """The journal cannot be opened or used (unwritable, corrupt, locked, newer schema)."""


@attrs.frozen
class JournalRow:
    """One job as the journal last recorded it."""

    key: str
    line: int
    request: str
    """The JSON body its POST sends."""
    state: JournalState
    task_id: str | None
    filename: str
    error: str | None
    attempts: int
    idempotency_key: str | None
    """The key its POST carries; None only in rows written before keys existed."""

    @property
    def unsettled(self) -> bool:
        """True if a POST was (or was about to be) sent and its task id never recorded."""
        return self.state is JournalState.INTENT


def default_path(out_dir: Path) -> Path:
    """Where a batch writing to ``out_dir`` keeps its journal by default."""
    return out_dir / DEFAULT_NAME


class Journal:
    """One connection to a journal file; every write is its own durable commit."""

    def __init__(self, path: Path | None) -> None:
        """Open the journal at ``path``, creating it if there is no file; None keeps it in
        memory only. A file that exists must be a journal (JournalError otherwise)."""
        self.path = path
        self._lock: FileLock | None = None
        self._db: sqlite3.Connection | None = None
        try:
            if path is None:
                self._db = sqlite3.connect(":memory:", isolation_level=None)
                self._db.executescript(_SCHEMA)
                self._db.execute(
                    "INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
                )
                return
            path.parent.mkdir(parents=True, exist_ok=True)
            self._lock = FileLock(path.with_name(path.name + ".lock")).acquire()
            if not path.exists():
                _create(path)
            # isolation_level=None is autocommit: every write statement is its own commit.
            self._db = sqlite3.connect(path, isolation_level=None)
            self._setup()
        except LockedError:
            self.close()
            raise JournalError(
                f"the journal {path} is in use by another kling-async process"
            ) from None
        except OSError as exc:
            self.close()
            raise JournalError(f"cannot open the journal {path}: {exc.strerror or exc}") from exc
        except sqlite3.Error as exc:
            self.close()
            raise JournalError(f"cannot use the journal {path}: {exc}") from exc
        except JournalError:
            self.close()
            raise

    def _setup(self) -> None:
        db = self._conn
        db.execute("PRAGMA busy_timeout = 5000")
        try:
            row = db.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
        except sqlite3.DatabaseError as exc:  # "no such table", "file is not a database"
            raise JournalError(self._not_a_journal(str(exc))) from exc
        if row is None:
            raise JournalError(self._not_a_journal("it has no schema version"))
        version = int(row[0])
        if version > SCHEMA_VERSION:
            raise JournalError(
                f"the journal {self.path} was written by a newer kling-async (schema {version})"
            )
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise JournalError(f"the journal {self.path} cannot use WAL mode (got {mode})")
        db.execute("PRAGMA synchronous = FULL")
        if version < SCHEMA_VERSION:
            self._migrate(version)

    def _not_a_journal(self, why: str) -> str:
        size = self.path.stat().st_size if self.path is not None else 0
        return (
            f"{self.path} is not a kling-async journal ({size} bytes; {why}). It was not "
            "created by this run, so it is left alone: if it was damaged, restore it; to "
            "start a new journal (which submits, and pays for, every line again) move it "
            "away or pass another --journal"
        )

    def _migrate(self, version: int) -> None:
        """Bring a journal of an older schema up to date in one transaction."""
        db = self._conn
        db.execute("BEGIN IMMEDIATE")
        try:
            if version < 2:  # rows from before keys keep NULL: they stay "uncertain"
                db.execute("ALTER TABLE jobs ADD COLUMN idempotency_key TEXT")
            db.execute(
                "UPDATE meta SET value = ? WHERE name = 'schema_version'", (str(SCHEMA_VERSION),)
            )
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise JournalError(f"the journal {self.path} is closed")
        return self._db

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection and release the lock (safe to call twice)."""
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # -- reading -------------------------------------------------------------------------

    def rows(self) -> dict[str, JournalRow]:
        """Every job recorded, by key."""
        rows = self._conn.execute(f"SELECT {_COLUMNS} FROM jobs").fetchall()
        return {row[0]: self._row(row) for row in rows}

    def _row(self, values: tuple[Any, ...]) -> JournalRow:
        key, line, request, state, *rest = values
        try:
            known = JournalState(state)
        except ValueError:
            raise JournalError(
                f"the journal {self.path} holds a row in an unknown state {state!r} (line "
                f"{line}); it was not written by this kling-async"
            ) from None
        return JournalRow(key, line, request, known, *rest)

    # -- the steps of a job ----------------------------------------------------------------

    def intent(
        self, key: str, line: int, request: str, filename: str, idempotency_key: str
    ) -> None:
        """Record that a POST of ``request`` with ``idempotency_key`` is about to be sent
        (committed before it is sent). A new intent is a new logical request: it replaces
        the body, the key and any earlier outcome."""
        self._write(
            "INSERT INTO jobs (key, line, request, state, filename, attempts, updated,"
            " idempotency_key) VALUES (?, ?, ?, ?, ?, 1, ?, ?)"
            " ON CONFLICT (key) DO UPDATE SET line = excluded.line, request = excluded.request,"
            " state = excluded.state, task_id = NULL, error = NULL, attempts = attempts + 1,"
            " updated = excluded.updated, idempotency_key = excluded.idempotency_key",
            (key, line, request, JournalState.INTENT, filename, time.time(), idempotency_key),
        )

    def resending(self, key: str, line: int) -> None:
        """Record that an unsettled intent's POST is sent again, same key and body."""
        self._write(
            "UPDATE jobs SET line = ?, attempts = attempts + 1, updated = ?"
            " WHERE key = ? AND state = ?",
            (line, time.time(), key, JournalState.INTENT),
        )

    def submitted(self, key: str, task_id: str) -> None:
        """Record the task id the POST returned."""
        self._update(key, state=JournalState.SUBMITTED, task_id=task_id, error=None)

    def not_submitted(self, key: str) -> None:
        """Undo an intent: the server surely did not take the POST (refused, 400, 401, 429)."""
        self._write("DELETE FROM jobs WHERE key = ? AND state = ?", (key, JournalState.INTENT))

    def finished(self, key: str, state: JournalState, error: str | None = None) -> None:
        """Record the task's terminal state: one of :data:`FINISHED`."""
        if state not in FINISHED:
            raise ValueError(f"not a terminal state: {str(state)!r}")
        self._update(key, state=state, error=error)

    def downloaded(self, key: str, filename: str) -> None:
        """Record that the video is saved under ``filename``."""
        self._update(key, state=JournalState.DOWNLOADED, filename=filename, error=None)

    def problem(self, key: str, error: str) -> None:
        """Note a problem that leaves the state as it is (an uncertain POST, a download or a
        wait that failed)."""
        self._update(key, error=error)

    def _update(self, key: str, **values: Any) -> None:
        columns = ", ".join(f"{name} = ?" for name in values)
        self._write(
            f"UPDATE jobs SET {columns}, updated = ? WHERE key = ?",
            (*values.values(), time.time(), key),
        )

    def _write(self, sql: str, params: tuple[Any, ...]) -> None:
        try:
            self._conn.execute(sql, params)
        except sqlite3.Error as exc:
            raise JournalError(f"cannot write to the journal {self.path}: {exc}") from exc


def _create(path: Path) -> None:
    """Write a new, empty journal beside ``path`` and rename it into place, so the name
    only ever holds a complete journal (the caller holds the journal's lock)."""
    for stale in (Path(f"{path}-wal"), Path(f"{path}-shm")):  # left by a deleted journal
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    for leftover in path.parent.glob(f".{path.name}.*.new"):  # a creation cut short
        with contextlib.suppress(OSError):
            leftover.unlink()
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.new")
    try:
        db = sqlite3.connect(tmp, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode = WAL")  # kept in the file's header
            db.execute("PRAGMA synchronous = FULL")
            db.executescript(_SCHEMA)
            db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        finally:
            db.close()  # checkpoints: everything is in the main file
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _sync_dir(path.parent)


def _sync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (where the platform allows it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - Windows cannot open a directory
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
