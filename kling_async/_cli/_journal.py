"""The batch journal: a SQLite record that lets a batch resume without paying twice.

One row per job (keyed by the line's identity, see ``_batchfile``), moved forward by
single-statement writes, each committed before the next step is taken::

    intent ──POST returned an id──▶ submitted ──task ended──▶ completed ──file saved──▶ downloaded
                                              └────────────▶ failed / cancelled

``intent`` is written *before* the POST. A row still at ``intent`` (no task id) after a
crash, a SIGKILL or a :class:`SubmissionUncertainError` is a POST that may or may not have
reached the server: it is never resubmitted on its own. WAL mode with ``synchronous=FULL``
makes every commit survive a crash of the process or of the machine; one process at a time
may use a journal (an advisory lock on ``<journal>.lock``).
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import IO, Any

import attrs

__all__ = ["DONE", "Entry", "Journal", "JournalError", "default_path"]

SCHEMA_VERSION = 1
DEFAULT_NAME = ".kling-journal.sqlite3"

#: States in which nothing is left to do for a job.
DONE = frozenset({"downloaded", "failed", "cancelled"})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    key      TEXT PRIMARY KEY,   -- the line's identity: request hash + occurrence
    line     INTEGER NOT NULL,   -- line number when last touched (for messages)
    request  TEXT NOT NULL,      -- the canonical JSON body
    state    TEXT NOT NULL,      -- intent | submitted | completed | downloaded | failed | cancelled
    task_id  TEXT,               -- NULL only while state = 'intent'
    filename TEXT NOT NULL,      -- the video's name inside the output directory
    error    TEXT,               -- why the job failed, or the last problem met
    attempts INTEGER NOT NULL DEFAULT 0,  -- POSTs started for this job
    updated  REAL NOT NULL       -- unix time of the last write
);
"""


class JournalError(Exception):
    """The journal cannot be opened or used (unwritable, corrupt, locked, newer schema)."""


@attrs.frozen
class Entry:
    """One job as the journal last recorded it."""

    key: str
    line: int
    request: str
    state: str
    task_id: str | None
    filename: str
    error: str | None
    attempts: int

    @property
    def uncertain(self) -> bool:
        """True if a POST was started but its task id never recorded."""
        return self.state == "intent"


def default_path(out_dir: Path) -> Path:
    """Where a batch writing to ``out_dir`` keeps its journal by default."""
    return out_dir / DEFAULT_NAME


class Journal:
    """One connection to a journal file; every write is its own durable commit."""

    def __init__(self, path: Path | None) -> None:
        """Open (creating if needed) the journal at ``path``; None keeps it in memory only."""
        self.path = path
        self._lock: IO[bytes] | None = None
        try:
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._lock = _acquire_lock(path.with_name(path.name + ".lock"))
            # isolation_level=None is autocommit: every write statement is its own commit.
            self._db = sqlite3.connect(path or ":memory:", isolation_level=None)
        except OSError as exc:
            self._release_lock()
            raise JournalError(f"cannot open the journal {path}: {exc.strerror or exc}") from exc
        except sqlite3.Error as exc:
            self._release_lock()
            raise JournalError(f"cannot open the journal {path}: {exc}") from exc
        try:
            self._setup()
        except sqlite3.Error as exc:
            self.close()
            raise JournalError(f"cannot use the journal {path}: {exc}") from exc
        except JournalError:
            self.close()
            raise

    def _setup(self) -> None:
        db = self._db
        db.execute("PRAGMA busy_timeout = 5000")
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if self.path is not None and str(mode).lower() != "wal":
            raise JournalError(f"the journal {self.path} cannot use WAL mode (got {mode})")
        db.execute("PRAGMA synchronous = FULL")
        db.executescript(_SCHEMA)
        db.execute(
            "INSERT OR IGNORE INTO meta (name, value) VALUES ('schema_version', ?)",
            (str(SCHEMA_VERSION),),
        )
        row = db.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
        version = int(row[0])
        if version > SCHEMA_VERSION:
            raise JournalError(
                f"the journal {self.path} was written by a newer kling-async (schema {version})"
            )

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection and release the lock (safe to call twice)."""
        db = getattr(self, "_db", None)
        if db is not None:
            db.close()
            self._db = None  # type: ignore[assignment]
        self._release_lock()

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file releases the flock
            self._lock = None

    # -- reading -------------------------------------------------------------------------

    def entries(self) -> dict[str, Entry]:
        """Every job recorded, by key."""
        rows = self._db.execute(
            "SELECT key, line, request, state, task_id, filename, error, attempts FROM jobs"
        ).fetchall()
        return {row[0]: Entry(*row) for row in rows}

    # -- the steps of a job ----------------------------------------------------------------

    def intent(self, key: str, line: int, request: str, filename: str) -> None:
        """Record that a POST is about to be sent (committed before it is sent)."""
        self._write(
            "INSERT INTO jobs (key, line, request, state, filename, attempts, updated)"
            " VALUES (?, ?, ?, 'intent', ?, 1, ?)"
            " ON CONFLICT (key) DO UPDATE SET line = excluded.line, state = 'intent',"
            " task_id = NULL, error = NULL, attempts = attempts + 1, updated = excluded.updated",
            (key, line, request, filename, time.time()),
        )

    def submitted(self, key: str, task_id: str) -> None:
        """Record the task id the POST returned."""
        self._update(key, state="submitted", task_id=task_id, error=None)

    def not_submitted(self, key: str) -> None:
        """Undo an intent: the server surely did not take the POST (refused, 400, 401, 429)."""
        self._write("DELETE FROM jobs WHERE key = ? AND state = 'intent'", (key,))

    def uncertain(self, key: str, reason: str) -> None:
        """Keep the intent, noting why it is uncertain whether the server took the POST."""
        self._update(key, error=reason)

    def finished(self, key: str, state: str, error: str | None = None) -> None:
        """Record the task's terminal state: completed, failed or cancelled."""
        if state not in ("completed", "failed", "cancelled"):
            raise ValueError(f"not a terminal state: {state!r}")
        self._update(key, state=state, error=error)

    def downloaded(self, key: str, filename: str) -> None:
        """Record that the video is saved under ``filename``."""
        self._update(key, state="downloaded", filename=filename, error=None)

    def problem(self, key: str, error: str) -> None:
        """Note a problem that leaves the state as it is (a download or a wait that failed)."""
        self._update(key, error=error)

    def _update(self, key: str, **values: Any) -> None:
        columns = ", ".join(f"{name} = ?" for name in values)
        self._write(
            f"UPDATE jobs SET {columns}, updated = ? WHERE key = ?",
            (*values.values(), time.time(), key),
        )

    def _write(self, sql: str, params: tuple[Any, ...]) -> None:
        try:
            self._db.execute(sql, params)
        except sqlite3.Error as exc:
            raise JournalError(f"cannot write to the journal {self.path}: {exc}") from exc


def _acquire_lock(path: Path) -> IO[bytes] | None:
    """Hold an exclusive advisory lock on ``path`` (None where flock does not exist)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock, documented
        return None
    handle = open(path, "ab")  # noqa: SIM115 - held open for the journal's lifetime
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise JournalError(
            f"the journal {path.with_suffix('')} is in use by another kling-async process"
        ) from None
    except OSError:
        handle.close()
        raise
    return handle
