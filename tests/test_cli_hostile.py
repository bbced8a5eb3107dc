"""Hostile input to the command: a damaged journal, two batches on one folder, a folder
where a video goes, an API key that could split a header."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support.cli import (
    SyncEmulator,
    _clean_env,
    batch_args,
    count_lines_in,
    events_of,
    journal_states,
    prompts,
    run_cli,
    running_cli,
    summary_of,
    videos_in,
    write_batch,
)

from kling_async._cli._batchfile import read_batch

pytestmark = pytest.mark.slow  # each test runs the command in a child process


def test_a_journal_truncated_to_nothing_is_an_error(emu: SyncEmulator, tmp_path: Path) -> None:
    """A 0-byte journal is refused (exit 2): nothing submitted, saved videos left alone."""
    file = write_batch(tmp_path / "b.jsonl", prompts(2))
    out = tmp_path / "out"
    assert run_cli(*batch_args(file, out, emu), cwd=tmp_path).returncode == 0
    before = {video: video.stat().st_mtime_ns for video in videos_in(out)}
    journal = out / ".kling-journal.sqlite3"
    journal.write_bytes(b"")
    emu.reset()
    result = run_cli(*batch_args(file, out, emu), cwd=tmp_path)
    assert result.returncode == 2
    assert "is not a kling-async journal (0 bytes" in result.stderr
    assert events_of(result.stdout)[-1]["event"] == "error"
    assert emu.stats()["requests_total"] == 0
    assert journal.read_bytes() == b""
    assert {video: video.stat().st_mtime_ns for video in videos_in(out)} == before


def test_two_batches_cannot_share_an_output_folder(emu: SyncEmulator, tmp_path: Path) -> None:
    """A second batch (another journal) on a busy --out folder is refused, exit 2, unsent."""
    emu.script(prompt_contains="[shared-out]", time_factor=20)
    first_file = write_batch(tmp_path / "a.jsonl", prompts(2, "[shared-out]"))
    second_file = write_batch(tmp_path / "b.jsonl", prompts(2, "second"))
    out = tmp_path / "out"
    first_args = batch_args(first_file, out, emu, "--journal", str(tmp_path / "a.sqlite3"))
    with running_cli(first_args, tmp_path) as first:
        first.wait_for(lambda ev: count_lines_in("pending")(ev) == 2)
        second = run_cli(
            *batch_args(second_file, out, emu, "--journal", str(tmp_path / "b.sqlite3")),
            cwd=tmp_path,
        )
        assert second.returncode == 2
        assert f"the output directory {out} is in use by another kling-async batch" in (
            second.stderr
        )
        assert emu.stats()["submissions"] == 2  # the first batch's only
        first.proc.send_signal(signal.SIGINT)
        code, _ = first.finish()
    assert code == 130
    assert not (tmp_path / "b.sqlite3").exists()


def test_a_folder_where_a_video_goes_fails_that_line_only(
    emu: SyncEmulator, tmp_path: Path
) -> None:
    """A directory in a video's place fails that line only; once moved, a re-run saves it."""
    file = write_batch(tmp_path / "b.jsonl", prompts(3))
    out = tmp_path / "out"
    blocker = out / read_batch(file)[1].filename()
    (blocker / "inside").mkdir(parents=True)
    result = run_cli(*batch_args(file, out, emu), cwd=tmp_path)
    assert result.returncode == 1
    summary = summary_of(result.stdout)
    assert summary["counts"] == {"done": 2, "error": 1}
    assert "is a directory" in summary["jobs"][1]["error"]
    assert "Traceback" not in result.stderr
    assert journal_states(out) == {"downloaded": 2, "completed": 1}
    (blocker / "inside").rmdir()
    blocker.rmdir()
    again = run_cli(*batch_args(file, out, emu), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert len(videos_in(out)) == 3
    assert emu.stats()["submissions"] == 3


@pytest.mark.parametrize(
    ("key", "named"), [("abc\ndef", "a newline"), ("abc\r\ndef", "a carriage return")]
)
@pytest.mark.parametrize("source", ["option", "environment"])
def test_an_api_key_that_could_split_a_header_is_refused(
    emu: SyncEmulator, tmp_path: Path, key: str, named: str, source: str
) -> None:
    """A key with a newline or CR is refused in the library's words, exit 2, nothing made."""
    file = write_batch(tmp_path / "b.jsonl", prompts(1))
    env = _clean_env()
    given = ["--api-key", key] if source == "option" else []
    if source == "environment":
        env["APIMART_API_KEY"] = key
    for command in (
        ["batch", str(file), "--out", "out", "--base-url", emu.url, *given],
        ["generate", "a cat", "--base-url", emu.url, *given],
    ):
        result = subprocess.run(
            [sys.executable, "-m", "kling_async", *command],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 2
        assert f"api_key: contains {named}" in result.stderr
        assert "abc" not in result.stderr
    assert not (tmp_path / "out").exists()
    assert emu.stats()["requests_total"] == 0
    assert os.listdir(tmp_path) == ["b.jsonl"]
