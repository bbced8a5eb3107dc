"""Resuming batches: kill -9 anywhere costs one generation per line, keys settle unsettled
POSTs, old journals keep working, a conflicting key is never replaced."""

from __future__ import annotations

import collections
import contextlib
import json
import random
import signal
import sqlite3
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from support.cli import (
    Events,
    SyncEmulator,
    batch_args,
    emulator_running,
    events_of,
    journal_rows,
    journal_states,
    prompts,
    run_cli,
    running_cli,
    summary_of,
    videos_in,
    write_batch,
)

from kling_async._cli._batchfile import read_batch
from kling_async._cli._journal import Journal, default_path

pytestmark = pytest.mark.slow  # each test runs (and kills) the command in a child process

#: The journal schema before idempotency keys (schema 1), verbatim.
SCHEMA_1 = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE jobs (key TEXT PRIMARY KEY, line INTEGER NOT NULL, request TEXT NOT NULL,
    state TEXT NOT NULL, task_id TEXT, filename TEXT NOT NULL, error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0, updated REAL NOT NULL);
INSERT INTO meta VALUES ('schema_version', '1');
"""


def lenient_events(stdout: bytes) -> Events:
    """The whole JSON lines of a killed run's output."""
    events = []
    for line in stdout.split(b"\n"):
        with contextlib.suppress(ValueError):
            events.append(json.loads(line))
    return events


def wait_for_an_unsettled_intent(out: Path, proc: subprocess.Popen[bytes]) -> None:
    """Return once the journal holds a POST that has no task id yet (or the run ended)."""
    deadline = time.monotonic() + 60
    journal = out / ".kling-journal.sqlite3"
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(sqlite3.Error):
            if journal.exists() and journal_states(out)["intent"]:
                return
        time.sleep(0.02)


def mixed(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Text-to-video lines, a third made stories in one shot (4k) and a third another
    model's lines (generic), each prompt kept: every kind a batch sends."""
    out = []
    for i, request in enumerate(requests):
        if i % 3 == 1:
            shot = {"index": 1, "prompt": request["prompt"], "duration": 5}
            request = {"multi_prompt": [shot], "mode": "4k", "cfg_scale": 0.5}
        elif i % 3 == 2:
            request = {"model": "kling-3.0-turbo", "resolution": "720p", **request}
        out.append(request)
    return out


def test_random_sigkills_then_rerun_cost_one_generation_per_line(tmp_path: Path) -> None:
    """kill -9 at random points (mid-POST too), then a re-run: one task per line, none
    uncertain, for typed, multi-shot and generic lines alike."""
    rng = random.Random(20260727)
    lines = 24
    file = write_batch(tmp_path / "b.jsonl", mixed(prompts(lines)))
    out = tmp_path / "out"
    seen: Events = []
    kills = unsettled_at_kill = 0
    # Every API answer is held 0.5 s, and half the held submits have already made their
    # task: a kill lands mid-POST often, on both sides of the task's creation.
    slow = ["--fault-rate", "1", "--fault-kinds", "slow", "--slow-delay", "0.5"]
    with emulator_running("--time-scale", "200", "--seed", "5", *slow) as emu:
        args = batch_args(file, out, emu, "--concurrency", "3")
        for round_ in range(6):
            with running_cli(args, tmp_path) as cli:
                if round_ == 0:  # one kill surely mid-POST, however slow the machine
                    wait_for_an_unsettled_intent(out, cli.proc)
                else:
                    time.sleep(rng.uniform(0.3, 2.5))
                if cli.proc.poll() is None:
                    cli.proc.send_signal(signal.SIGKILL)
                    kills += 1
                rest, _ = cli.proc.communicate(timeout=30)
                seen += lenient_events(rest)
            if (out / ".kling-journal.sqlite3").exists():
                unsettled_at_kill += journal_states(out)["intent"]
        final = run_cli(*args, cwd=tmp_path, timeout=120)
        stats = emu.stats()
    assert final.returncode == 0, final.stderr
    assert summary_of(final.stdout)["counts"] == {"done": lines}
    seen += events_of(final.stdout)
    assert not [event for event in seen if event.get("state") == "uncertain"]
    assert kills >= 4
    assert unsettled_at_kill >= 1  # some kills left a POST unsettled
    assert stats["submissions"] == lines
    assert set(collections.Counter(stats["created_tasks"].values()).values()) == {1}
    rows = journal_rows(out)
    assert len(rows) == lines
    assert len(stats["tasks_by_key"]) == lines
    for row in rows:
        assert stats["tasks_by_key"][row["idempotency_key"]] == [row["task_id"]]
        assert row["state"] == "downloaded"
    assert len(videos_in(out)) == lines
    print(  # what was measured (pytest -s shows it)
        f"\nkills={kills} unsettled_intents_at_kill={unsettled_at_kill} lines={lines} "
        f"tasks={stats['submissions']} submit_requests={stats['submit_requests']} "
        f"replays={stats['idempotent_replays']}"
    )


def write_schema_1(out: Path, rows: list[tuple[str, int, str, str, str | None]]) -> None:
    """A journal as the first kling-async wrote it: (key, line, body, state, task_id) rows."""
    out.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(sqlite3.connect(default_path(out))) as db, db:
        db.executescript(SCHEMA_1)
        for key, line, body, state, task_id in rows:
            db.execute(
                "INSERT INTO jobs VALUES (?, ?, ?, ?, ?, ?, 'timed out after sending', 1, 0)",
                (key, line, body, state, task_id, f"{line:04d}.mp4"),
            )


def test_an_old_journals_unsettled_line_stays_uncertain_unless_asked(
    emu: SyncEmulator, tmp_path: Path
) -> None:
    """A schema-1 keyless intent stays uncertain until --resubmit-uncertain (new key)."""
    file = write_batch(tmp_path / "b.jsonl", prompts(3))
    first = read_batch(file)[0]
    out = tmp_path / "out"
    body = '{"prompt":"' + first.request.prompt + '"}'
    write_schema_1(out, [(first.key, 1, body, "intent", None)])

    run = run_cli(*batch_args(file, out, emu), cwd=tmp_path)
    assert run.returncode == 1
    summary = summary_of(run.stdout)
    assert summary["counts"] == {"done": 2, "uncertain": 1}
    assert "predates idempotency keys" in summary["jobs"][0]["error"]
    assert "from an older journal are uncertain" in run.stderr
    assert "--resubmit-uncertain submits them again" in run.stderr
    assert emu.stats()["submissions"] == 2

    again = run_cli(*batch_args(file, out, emu, "--resubmit-uncertain"), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert emu.stats()["submissions"] == 3
    (row,) = journal_rows(out, f"key = '{first.key}'")
    assert row["state"] == "downloaded"
    assert row["idempotency_key"] is not None
    assert len(videos_in(out)) == 3


def test_an_old_journals_submitted_lines_are_resumed(emu: SyncEmulator, tmp_path: Path) -> None:
    """Rows of a schema-1 journal that have a task id resume as before: re-attach, save."""
    file = write_batch(tmp_path / "b.jsonl", prompts(2))
    made = run_cli(*batch_args(file, tmp_path / "elsewhere", emu), cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    jobs = summary_of(made.stdout)["jobs"]
    out = tmp_path / "out"
    write_schema_1(
        out,
        [
            (line.key, line.number, "{}", "submitted", job["task_id"])
            for line, job in zip(read_batch(file), jobs, strict=True)
        ],
    )
    resumed = run_cli(*batch_args(file, out, emu), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert emu.stats()["submissions"] == 2  # only the first run's
    assert {row["task_id"] for row in journal_rows(out)} == {job["task_id"] for job in jobs}
    assert len(videos_in(out)) == 2


def test_a_conflicting_key_is_reported_and_never_replaced(
    emu: SyncEmulator, tmp_path: Path
) -> None:
    """A 409 on re-sending is that line's error; its key is kept, never replaced by a new one."""
    file = write_batch(tmp_path / "b.jsonl", prompts(2))
    first = read_batch(file)[0]
    key = "kling-async-test-conflict"
    request = urllib.request.Request(  # the key, used by the server for another body
        emu.url + "/v1/videos/generations",
        data=json.dumps({"model": "kling-v3", "prompt": "something else"}).encode(),
        headers={"Authorization": "Bearer k", "Idempotency-Key": key},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    out = tmp_path / "out"
    with Journal(default_path(out)) as journal:
        body = json.dumps({"model": "kling-v3", "prompt": first.request.prompt})
        journal.intent(first.key, 1, body, first.filename(), key)

    for _ in range(2):
        run = run_cli(*batch_args(file, out, emu), cwd=tmp_path)
        assert run.returncode == 1
        job = summary_of(run.stdout)["jobs"][0]
        assert job["state"] == "error"
        assert "key and body for this line disagree" in job["error"]
        assert "409" in job["error"]
        (row,) = journal_rows(out, f"key = '{first.key}'")
        assert (row["state"], row["idempotency_key"]) == ("intent", key)
    stats = emu.stats()
    assert stats["key_conflicts"] == 2
    assert stats["submissions"] == 2  # the other body's task and line 2: nothing for line 1
    assert len(stats["tasks_by_key"][key]) == 1
