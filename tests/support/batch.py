"""A batch run in-process: ``BatchRun`` on a session, with a display that records it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kling_async import KlingSession
from kling_async._cli._batch import BatchRun
from kling_async._cli._batchfile import BatchLine, read_batch
from kling_async._cli._jobs import BatchOptions, Job
from kling_async._cli._journal import Journal

__all__ = ["Recorder", "batch_lines", "run_batch"]


class Recorder:
    """A batch display that keeps every state each line went through, and the notes."""

    def __init__(self) -> None:
        self.states: dict[int, list[str]] = {}
        self.notes: list[str] = []

    def start(self, jobs: list[Job]) -> None:
        """Remember the starting states."""
        for job in jobs:
            self.states[job.number] = [job.state]

    def changed(self, job: Job) -> None:
        """Remember a new state."""
        if self.states[job.number][-1] != job.state:
            self.states[job.number].append(job.state)

    def note(self, message: str) -> None:
        """Remember a note."""
        self.notes.append(message)

    def stop(self) -> None:
        """Nothing to stop."""


def batch_lines(tmp_path: Path, *prompts: str) -> list[BatchLine]:
    """The lines of a batch file of text-to-video ``prompts``."""
    path = tmp_path / "b.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts), encoding="utf-8")
    return read_batch(path)


async def run_batch(
    session: KlingSession, journal: Journal, lines: list[BatchLine], out: Path, **options: Any
) -> BatchRun:
    """Run a batch to its end and return it."""
    run = BatchRun(session, journal, lines, BatchOptions(out_dir=out, **options), Recorder())
    await run.run()
    return run
