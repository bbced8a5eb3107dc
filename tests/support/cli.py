"""The command line under test: the command as a real subprocess, the emulator it talks to
(``kling_async.testing.EmulatorProcess``, driven from these synchronous tests through a
:class:`~support.loop.LoopThread`), and readers for its JSON lines and journal."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import select
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kling_async import PollPolicy
from kling_async._cli._journal import default_path
from kling_async.testing import EmulatorProcess
from support.loop import LoopThread, loop_thread

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "prompts.jsonl"
SLOW_DELAY = 1.0  # real seconds the emulator holds a "slow" submit
CLI_POLL = PollPolicy(min_interval=0.02, max_interval=0.2, max_requests_per_second=500)
"""How the command polls in these tests (given to it as flags: :data:`CLI_POLL_ARGS`)."""

Events = list[dict[str, Any]]


def poll_args(policy: PollPolicy) -> list[str]:
    """The command's flags for polling as ``policy`` says."""
    return [
        "--min-poll-interval", f"{policy.min_interval:g}",
        "--max-poll-interval", f"{policy.max_interval:g}",
        "--max-polls-per-second", f"{policy.max_requests_per_second:g}",
    ]  # fmt: skip


CLI_POLL_ARGS = poll_args(CLI_POLL)


def _clean_env() -> dict[str, str]:
    """The environment without any APIMART_* setting, so only explicit options count."""
    return {k: v for k, v in os.environ.items() if not k.startswith("APIMART_")}


class SyncEmulator:
    """An :class:`EmulatorProcess` for synchronous tests: its control calls, blocking."""

    def __init__(self, process: EmulatorProcess, loop: LoopThread) -> None:
        self.process = process
        self.url = process.url
        self._loop = loop

    def stats(self) -> dict[str, Any]:
        """The emulator's counters (``/_stats``)."""
        return self._loop.run(self.process.stats())

    def reset(self) -> None:
        """Zero the counters."""
        self._loop.run(self.process.reset_stats())

    def fault(self, **fields: Any) -> None:
        """Queue a scripted fault."""
        self._loop.run(self.process.control("POST", "/_faults", fields))

    def script(self, **fields: Any) -> None:
        """Fix the fate of later jobs whose prompt contains a marker."""
        self._loop.run(self.process.control("POST", "/_scripts", fields))

    def record(self, task_id: str) -> dict[str, Any]:
        """The emulator's record of a task (``/_tasks/{id}``): its request as received."""
        return self._loop.run(self.process.record(task_id))

    def created_prompts(self) -> collections.Counter[str]:
        """How many tasks the emulator created per prompt."""
        return collections.Counter(self.stats()["created_tasks"].values())


@contextlib.contextmanager
def emulator_running(*flags: str) -> Iterator[SyncEmulator]:
    """``kling-async emulator FLAGS`` in a child process, until the block ends."""
    with loop_thread() as loop, loop.entered(EmulatorProcess(*flags)) as process:
        yield SyncEmulator(process, loop)


#: The flags of the emulator most CLI tests share.
SHARED_EMULATOR = ("--time-scale", "200", "--slow-delay", str(SLOW_DELAY), "--seed", "4")


def run_cli(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``python -m kling_async ARGS`` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "kling_async", *args],
        cwd=cwd,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def events_of(stdout: str) -> Events:
    """Parse ``--json`` output: every line must be one JSON object."""
    return [json.loads(line) for line in stdout.splitlines()]


def summary_of(stdout: str) -> dict[str, Any]:
    """The final ``summary`` event of a batch run with --json."""
    events = events_of(stdout)
    assert events[-1]["event"] == "summary"
    return events[-1]


class RunningCLI:
    """A CLI process whose ``--json`` stdout is read while it runs."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kling_async", *args],
            cwd=cwd,
            env=_clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.events: Events = []
        self._pending = b""

    def wait_for(self, ready: Callable[[Events], bool], timeout: float = 30) -> None:
        """Read events until ``ready(events)`` holds."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while not ready(self.events):
            left = deadline - time.monotonic()
            assert left > 0, f"timed out waiting; last events: {self.events[-3:]}"
            readable, _, _ = select.select([fd], [], [], left)
            if not readable:
                continue
            chunk = os.read(fd, 1 << 16)
            assert chunk, f"the command ended early (exit {self.proc.wait()})"
            *lines, self._pending = (self._pending + chunk).split(b"\n")
            self.events += [json.loads(line) for line in lines if line.strip()]

    def finish(self, timeout: float = 30) -> tuple[int, str]:
        """Wait for the exit, reading the last events; return the exit code and stderr."""
        out, err = self.proc.communicate(timeout=timeout)
        rest = self._pending + out
        self.events += [json.loads(line) for line in rest.split(b"\n") if line.strip()]
        return self.proc.returncode, err.decode()

    def close(self) -> None:
        """Kill the process if it still runs and close its pipes."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()


@contextlib.contextmanager
def running_cli(args: list[str], cwd: Path) -> Iterator[RunningCLI]:
    """A RunningCLI that is always reaped."""
    cli = RunningCLI(args, cwd)
    try:
        yield cli
    finally:
        cli.close()


def states(events: Events) -> dict[int, list[str]]:
    """Every state each line went through, from ``job`` events."""
    seen: dict[int, list[str]] = collections.defaultdict(list)
    for event in events:
        if event["event"] == "job":
            seen[event["line"]].append(event["state"])
    return seen


def count_lines_in(state: str) -> Callable[[Events], int]:
    """A counter of lines that reached ``state``."""
    return lambda events: sum(state in s for s in states(events).values())


def write_batch(path: Path, requests: list[dict[str, Any]]) -> Path:
    """Write ``requests`` as a JSON Lines batch file."""
    path.write_text("".join(json.dumps(r) + "\n" for r in requests), encoding="utf-8")
    return path


def batch_args(file: Path, out: Path, emu: SyncEmulator, *extra: str) -> list[str]:
    """``batch`` against the emulator process, fast polling, JSON output."""
    connection = ["--base-url", emu.url, "--api-key", "k", *CLI_POLL_ARGS]
    return ["batch", str(file), "--out", str(out), *connection, "--json", *extra]


def videos_in(out: Path) -> list[Path]:
    """The MP4 files in ``out``, each checked to start with an ISO ``ftyp`` box."""
    files = sorted(out.glob("*.mp4"))
    for file in files:
        assert file.read_bytes()[4:8] == b"ftyp", file
    return files


def journal_rows(out: Path, where: str = "1") -> list[dict[str, Any]]:
    """The journal's rows (as dicts) that match the SQL condition ``where``."""
    with contextlib.closing(sqlite3.connect(default_path(out))) as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute(f"SELECT * FROM jobs WHERE {where}")]


def journal_states(out: Path) -> collections.Counter[str]:
    """How many journal rows are in each state."""
    with contextlib.closing(sqlite3.connect(default_path(out))) as db:
        return collections.Counter(state for (state,) in db.execute("SELECT state FROM jobs"))


def prompts(n: int, marker: str = "") -> list[dict[str, Any]]:
    """``n`` distinct text-to-video requests."""
    return [{"prompt": f"scene {i} of a quiet harbour at dawn {marker}".strip()} for i in range(n)]
