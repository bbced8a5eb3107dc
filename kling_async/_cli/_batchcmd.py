"""The batch command: check everything, open the journal, run, summarise, pick the exit code."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._batch import BatchRun
from ._batchfile import BatchFileError, BatchLine, read_batch
from ._connection import Connection, connection_from_args, open_session
from ._errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, PROG, CLIError
from ._jobs import BatchOptions, Display, JobState
from ._journal import Journal, JournalError, default_path
from ._jsonlines import JsonBatchDisplay, emit, summary_record
from ._lock import FileLock, LockedError
from ._output import json_mode, load_rich, make_console, writable_dir

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["OUT_LOCK_NAME", "batch"]

#: The lock file a batch holds in its output directory while it runs.
OUT_LOCK_NAME = ".kling-batch.lock"


def batch(args: argparse.Namespace) -> int:
    """``batch FILE --out DIR``: check everything, then run resumably; exit 0 only if all saved."""
    connection = connection_from_args(args)
    if args.concurrency < 1:
        raise CLIError("--concurrency: must be at least 1")
    try:
        lines = read_batch(args.file)
    except BatchFileError as exc:
        problems = [f"{args.file}: {problem}" for problem in exc.problems]
        if len(problems) == 1:
            raise CLIError(f"{problems[0]}; nothing was submitted") from exc
        raise CLIError(
            f"{args.file}: {len(problems)} bad lines; nothing was submitted", problems=problems
        ) from exc
    out_dir = writable_dir(args.out, "output directory")
    # The in-process emulator's tasks end with this process, so by default its runs keep
    # no journal on disk: one could only point at tasks that no longer exist.
    journal_path: Path | None = args.journal or (None if args.emulator else default_path(out_dir))
    options = BatchOptions(
        out_dir=out_dir,
        concurrency=args.concurrency,
        timeout=args.timeout,
        resubmit_uncertain=args.resubmit_uncertain,
        retry_failed=args.retry_failed,
    )
    console = None if json_mode(args) else make_console(stderr=False)
    display: Display
    if console is None:
        display = JsonBatchDisplay(out_dir, journal_path)
    else:
        display = load_rich().RichBatchDisplay(
            make_console(stderr=True), f"{args.file.name} → {out_dir}"
        )
    with _lock_output(out_dir):
        try:
            journal = Journal(journal_path)
        except JournalError as exc:
            raise CLIError(str(exc)) from exc
        resume = _resume_hint(args, journal_path)
        try:
            with journal:
                run = asyncio.run(_batch(connection, journal, lines, options, display))
        except KeyboardInterrupt:
            print(f"interrupted. {resume}", file=sys.stderr)
            return EXIT_INTERRUPTED
    return _batch_outcome(run, out_dir, journal_path, console, resume)


@contextlib.contextmanager
def _lock_output(out_dir: Path) -> Iterator[None]:
    """Hold the output directory's lock: one batch at a time may write into a folder."""
    lock = FileLock(out_dir / OUT_LOCK_NAME)
    try:
        lock.acquire()
    except LockedError:
        raise CLIError(
            f"the output directory {out_dir} is in use by another kling-async batch "
            f"({lock.path} is locked); two batches writing into one folder would overwrite "
            "each other's videos and could pay twice: wait for it to end, or choose another "
            "--out"
        ) from None
    except OSError as exc:
        raise CLIError(
            f"cannot lock the output directory {out_dir}: {exc.strerror or exc}"
        ) from exc
    try:
        yield
    finally:
        lock.release()


async def _batch(
    connection: Connection,
    journal: Journal,
    lines: list[BatchLine],
    options: BatchOptions,
    display: Display,
) -> BatchRun:
    async with open_session(connection) as session:
        try:
            run = BatchRun(session, journal, lines, options, display)
        except JournalError as exc:  # a row no kling-async wrote
            raise CLIError(f"{exc}; nothing was submitted") from exc
        try:
            await run.run()
        except ExceptionGroup as group:
            failed = group.subgroup(JournalError)
            if failed is None:
                raise
            raise CLIError(
                f"{_first(failed)}; stopped, the journal holds what was done", EXIT_FAILED
            ) from group
    return run


def _first(group: BaseExceptionGroup[Any]) -> BaseException:
    first = group.exceptions[0]
    return _first(first) if isinstance(first, BaseExceptionGroup) else first


def _resume_hint(args: argparse.Namespace, journal: Path | None) -> str:
    """How to resume this batch (the command never shows the API key)."""
    if journal is None:
        return (
            "The in-process emulator stopped with this run, so there is nothing to resume; "
            f"to try resuming, run `{PROG} emulator` separately and pass --base-url"
        )
    words = [PROG, "batch", str(args.file), "--out", str(args.out)]
    if args.journal:
        words += ["--journal", str(args.journal)]
    return f"The journal is consistent; resume with: {shlex.join(words)} (and your other options)"


def _batch_outcome(
    run: BatchRun,
    out_dir: Path,
    journal_path: Path | None,
    console: Console | None,
    resume: str,
) -> int:
    if console is None:
        emit(summary_record(run, out_dir, journal_path))
    else:
        load_rich().print_summary(console, run, out_dir, journal_path)
    if run.interrupted:
        print(f"interrupted. {resume}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if run.ok:
        return EXIT_OK
    counts = run.counts()
    legacy = sum(job.legacy_uncertain for job in run.jobs)
    if counts[JobState.UNCERTAIN] - legacy:
        print(
            f"{counts[JobState.UNCERTAIN] - legacy} line(s) are uncertain: retries ran out before "
            "the server said whether it took their POST. Re-running sends each again with "
            f"its own idempotency key, which cannot pay twice. {resume}",
            file=sys.stderr,
        )
    if legacy:
        print(
            f"{legacy} line(s) from an older journal are uncertain: their POST may or may "
            "not have reached the server, and they have no idempotency key. Check your "
            "account; --resubmit-uncertain submits them again (may pay twice).",
            file=sys.stderr,
        )
    if run.halted:
        print(f"submissions stopped: {run.halted.removeprefix('not submitted: ')}", file=sys.stderr)
    resumable = counts[JobState.ERROR] + counts[JobState.STOPPED]
    if resumable:
        print(f"{resumable} line(s) did not finish. {resume}", file=sys.stderr)
    if counts[JobState.FAILED]:
        print(
            f"{counts[JobState.FAILED]} line(s) failed on the server; --retry-failed submits "
            "them again.",
            file=sys.stderr,
        )
    return EXIT_FAILED
