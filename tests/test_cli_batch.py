"""A batch run in-process (``BatchRun`` on an emulator): each line's trouble stays its own,
and a refused POST keeps its idempotency key unless the server judged the body."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

from support.batch import batch_lines, run_batch

from kling_async import KlingSession
from kling_async._cli._journal import Journal
from kling_async.emulator import Emulator
from kling_async.testing import fast_config, session_for


async def test_a_local_file_error_is_that_lines_outcome(
    session: KlingSession, tmp_path: Path
) -> None:
    """An OSError saving one video (full disk) is that line's "error"; the others are saved."""
    lines = batch_lines(tmp_path, "one", "two", "three")
    doomed = lines[1].filename()
    download = session.download

    async def full_disk(task: Any, path: Any, **options: Any) -> Path:
        if Path(path).name == doomed:
            raise OSError(errno.ENOSPC, "No space left on device")
        return await download(task, path, **options)

    session.download = full_disk  # type: ignore[method-assign]
    with Journal(None) as journal:
        run = await run_batch(session, journal, lines, tmp_path)
        rows = journal.rows()
    assert [job.state for job in run.jobs] == ["done", "error", "done"]
    assert run.jobs[1].error == "cannot save the video: No space left on device"
    assert rows[lines[1].key].state == "completed"  # the next run downloads it again
    saved = sorted(name for name in os.listdir(tmp_path) if name.endswith(".mp4"))
    assert saved == sorted([lines[0].filename(), lines[2].filename()])


async def test_a_directory_in_the_videos_place_is_that_lines_error(
    session: KlingSession, tmp_path: Path
) -> None:
    """A directory where a line's video goes is that line's DownloadError, not a crash."""
    lines = batch_lines(tmp_path, "one", "two")
    (tmp_path / lines[0].filename()).mkdir()
    with Journal(None) as journal:
        run = await run_batch(session, journal, lines, tmp_path)
    assert [job.state for job in run.jobs] == ["error", "done"]
    assert "is a directory" in (run.jobs[0].error or "")


async def test_a_refusal_before_the_key_is_looked_at_keeps_the_key(tmp_path: Path) -> None:
    """A 401 stops the batch but keeps the line's key; the next run re-sends it: one task."""
    lines = batch_lines(tmp_path, "one", "two", "three")
    async with Emulator(fast_config(api_keys=["good-key"])) as emulator:
        with Journal(tmp_path / "j.sqlite3") as journal:
            async with session_for(emulator, api_key="wrong-key") as session:
                run = await run_batch(session, journal, lines, tmp_path, concurrency=1)
            assert [job.state for job in run.jobs] == ["error", "stopped", "stopped"]
            assert "re-running sends it again with the same idempotency key" in (
                run.jobs[0].error or ""
            )
            assert "an earlier submission was refused" in (run.jobs[1].error or "")
            (row,) = journal.rows().values()
            assert (row.state, row.key) == ("intent", lines[0].key)
            assert row.idempotency_key is not None

            async with session_for(emulator, api_key="good-key") as session:
                again = await run_batch(session, journal, lines, tmp_path)
            assert [job.state for job in again.jobs] == ["done"] * 3
            assert emulator.stats.tasks_by_key[row.idempotency_key] == [
                journal.rows()[lines[0].key].task_id
            ]
            assert emulator.stats.submissions == 3
