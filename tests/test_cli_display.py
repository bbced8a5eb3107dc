"""What the command shows: help for every option, ETAs, stopped lines counted as stopped,
plain rows when stdout is not a terminal, a missing --out folder created."""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import pytest
from rich.console import Console
from support.cli import (
    CLI_POLL_ARGS,
    SyncEmulator,
    batch_args,
    events_of,
    prompts,
    run_cli,
    write_batch,
)

from kling_async import TextToVideo
from kling_async._cli._batch import BatchRun
from kling_async._cli._batchfile import BatchLine
from kling_async._cli._jobs import Job
from kling_async._cli._main import main
from kling_async._cli._parser import build_parser
from kling_async._cli._progress import (
    RichBatchDisplay,
    _EtaColumn,
    batch_eta,
    print_summary,
    task_eta,
)


def subcommands() -> dict[str, argparse.ArgumentParser]:
    """Every subcommand's parser, by name."""
    (action,) = (a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("command", ["generate", "batch", "status", "wait", "download"])
def test_every_option_has_help_and_no_default_shows_none(command: str) -> None:
    """Each option and argument of each command says what it is; no help shows "None"."""
    parser = subcommands()[command]
    formatter = parser._get_formatter()
    for action in parser._actions:
        name = action.option_strings or action.dest
        assert action.help, f"{command} {name} has no help"
        shown = formatter._expand_help(action)
        assert shown.count("(default") <= 1, f"{command} {name}: {shown}"
    assert "None" not in parser.format_help()


@pytest.mark.slow
def test_emulator_help_names_the_command_as_typed(tmp_path: Path) -> None:
    """``kling-async emulator --help`` calls itself ``kling-async emulator``."""
    result = run_cli("emulator", "--help", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith("usage: kling-async emulator ")


@pytest.mark.parametrize(
    ("elapsed", "progress", "first_move", "estimate", "expected"),
    [
        (10.0, 0, None, 60.0, 50.0),  # queued: what is left of the server's estimate
        (70.0, 0, None, 60.0, 0.0),  # past the estimate: any moment now
        (10.0, 0, None, None, None),  # nothing to go on
        (30.0, 40, (10.0, 20), 60.0, 60.0),  # 20 points in 20 s: 60 left take 60 s
        (30.0, 20, (10.0, 20), 60.0, 30.0),  # not moved since first seen: the estimate
    ],
    ids=["estimate", "overdue", "unknown", "rate", "no-rate-yet"],
)
def test_task_eta(
    elapsed: float,
    progress: int,
    first_move: tuple[float, int] | None,
    estimate: float | None,
    expected: float | None,
) -> None:
    """A task's ETA follows its progress rate once it moves, the estimate before."""
    assert task_eta(elapsed, progress, first_move, estimate) == expected


def test_batch_eta() -> None:
    """A batch's ETA is what is left at the average rate so far; unknown before any."""
    assert batch_eta(elapsed=20.0, done=2.0, left=6.0) == 60.0
    assert batch_eta(elapsed=20.0, done=0.0, left=6.0) is None
    assert batch_eta(elapsed=20.0, done=8.0, left=0.0) == 0.0


def test_eta_column_counts_down_to_the_finish(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ETA column shows m:ss to the finish instant, "soon" after it, "-:--" unknown."""
    from rich.progress import Progress

    progress = Progress()
    bar = progress.add_task("x", total=10, finish_at=None)
    monkeypatch.setattr(time, "monotonic", lambda: 1000.0)
    column = _EtaColumn()
    task = progress.tasks[bar]
    assert column.render(task).plain == "ETA -:--"
    progress.update(bar, finish_at=1125.0)
    assert column.render(task).plain == "ETA 2:05"
    progress.update(bar, finish_at=1000.0 + 3 * 3600 + 61)
    assert column.render(task).plain == "ETA 3:01:01"
    progress.update(bar, finish_at=999.0)
    assert column.render(task).plain == "ETA soon"


def jobs_in(*states: str) -> list[Job]:
    """Jobs of one-line requests, in the given states."""
    jobs = []
    for number, state in enumerate(states, 1):
        line = BatchLine(number, TextToVideo(f"scene {number}"), f"k{number}.1")
        jobs.append(Job(line, line.filename(), state=state, error=f"why {number}"))
    return jobs


def test_stopped_lines_do_not_count_as_ended() -> None:
    """After Ctrl-C the bar counts stopped lines as stopped, not as ended."""
    out = io.StringIO()
    display = RichBatchDisplay(Console(file=out, width=120), "b.jsonl")
    jobs = jobs_in(*["queued"] * 6)
    display.start(jobs)
    for job in jobs:
        job.state = "stopped"
        display.changed(job)
    display.stop()
    text = out.getvalue()
    assert "0/6 ended" in text
    assert "stopped 6" in text
    assert "6/6" not in text


class _Run:
    """Just what print_summary reads of a BatchRun."""

    def __init__(self, jobs: list[Job]) -> None:
        self.jobs = jobs

    counts = BatchRun.counts
    cost = BatchRun.cost


def test_summary_is_plain_rows_when_stdout_is_not_a_terminal(tmp_path: Path) -> None:
    """Off a terminal the summary is one tab-separated line per job, no table drawing."""
    jobs = jobs_in("done", "failed", "stopped")
    jobs[0].task_id = "task_1"
    out = io.StringIO()
    print_summary(Console(file=out, width=40), _Run(jobs), tmp_path, None)  # type: ignore[arg-type]
    rows = out.getvalue().splitlines()
    assert rows[:3] == [
        f"1\tdone\ttask_1\t{jobs[0].filename}",
        "2\tfailed\t-\twhy 2",
        "3\tstopped\t-\twhy 3",
    ]
    assert rows[3].startswith("3 lines: 1 done, 1 failed, 1 stopped.")
    assert len(rows) == 4


def test_summary_is_a_table_on_a_terminal(tmp_path: Path) -> None:
    """On a terminal the summary is a table titled kling-async batch."""
    out = io.StringIO()
    console = Console(file=out, width=100, force_terminal=True)
    print_summary(console, _Run(jobs_in("done", "error")), tmp_path, None)  # type: ignore[arg-type]
    text = out.getvalue()
    assert "kling-async batch" in text
    assert "┃" in text or "│" in text


@pytest.mark.slow
def test_batch_summary_to_a_pipe_is_plain_rows(emu: SyncEmulator, tmp_path: Path) -> None:
    """A batch whose stdout is a pipe prints one plain row per line, then the counts."""
    file = write_batch(tmp_path / "b.jsonl", prompts(3))
    args = [a for a in batch_args(file, tmp_path / "out", emu) if a != "--json"]
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = result.stdout.splitlines()
    assert [row.split("\t")[:2] for row in rows[:3]] == [
        ["1", "done"],
        ["2", "done"],
        ["3", "done"],
    ]
    assert rows[3].startswith("3 lines: 3 done.")
    assert not set("┃│━─") & set(result.stdout)


@pytest.mark.slow
def test_generate_creates_a_missing_out_folder(emu: SyncEmulator, tmp_path: Path) -> None:
    """``generate --out new/deeper/x.mp4`` creates the missing folders, as --help says."""
    result = run_cli(
        "generate",
        "a lighthouse",
        "--out",
        "new/deeper/x.mp4",
        "--base-url",
        emu.url,
        "--api-key",
        "k",
        *CLI_POLL_ARGS,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "new" / "deeper" / "x.mp4").read_bytes()[4:8] == b"ftyp"
    assert "missing parent directories are created" in run_cli(
        "generate", "--help", cwd=tmp_path
    ).stdout.replace("\n", " ").replace("  ", " ")


@pytest.mark.slow
def test_generate_with_a_known_idempotency_key_returns_its_task(
    emu: SyncEmulator, tmp_path: Path
) -> None:
    """generate with a known --idempotency-key gets its task again; a bad key sends nothing."""
    common = ["--base-url", emu.url, "--api-key", "k", "--json", *CLI_POLL_ARGS]
    ids = []
    for name in ("a.mp4", "b.mp4"):
        result = run_cli(
            "generate",
            "a fox",
            "--idempotency-key",
            "order-42",
            "--out",
            name,
            *common,
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr
        ids.append(events_of(result.stdout)[0]["task_id"])
    assert ids[0] == ids[1]
    assert (emu.stats()["submissions"], emu.stats()["idempotent_replays"]) == (1, 1)
    bad = run_cli("generate", "a fox", "--idempotency-key", "has space", *common, cwd=tmp_path)
    assert bad.returncode == 2
    assert "--idempotency-key: idempotency_key: must be 1-191 visible ASCII" in bad.stderr
    assert emu.stats()["submit_requests"] == 2


def test_duration_takes_any_whole_second_from_3_to_15(capsys: pytest.CaptureFixture[str]) -> None:
    """``--duration`` accepts every whole number 3-15 and refuses 2 and 16 for kling-v3
    (exit 2, naming the option, nothing sent); the range is kling-v3's rule, checked by
    the library, so another model's longer clips reach the server."""
    parser = build_parser()
    for seconds in range(3, 16):
        args = parser.parse_args(["generate", "x", "--duration", str(seconds)])
        assert args.duration == seconds
    for seconds in ("2", "16"):
        assert main(["generate", "x", "--duration", seconds, "--api-key", "k"]) == 2
        assert "--duration: duration: must be a whole number of seconds from 3 to 15" in (
            capsys.readouterr().err
        )
    args = parser.parse_args(["generate", "x", "--model", "kling-4.0", "--duration", "30"])
    assert args.duration == 30


@pytest.mark.parametrize(
    ("scale", "rule"),
    [("inf", "must be a finite number"), ("0", "must be > 0"), ("-1", "must be > 0")],
)
def test_an_emulator_time_scale_the_emulator_refuses_is_one_clear_error(
    scale: str, rule: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--emulator-time-scale`` is judged by the emulator's own rule before anything runs:
    exit 2 and one line naming the option (an infinite scale once ended in a traceback)."""
    assert main(["generate", "x", "--emulator", "--emulator-time-scale", scale]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kling-async: error: --emulator-time-scale: ") and rule in err
    assert "Traceback" not in err
