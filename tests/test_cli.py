"""The ``kling-async`` command, run as a real subprocess against an emulator in another process."""

from __future__ import annotations

import collections
import contextlib
import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support.cli import (
    CLI_POLL_ARGS,
    EXAMPLES,
    SHARED_EMULATOR,
    SyncEmulator,
    batch_args,
    count_lines_in,
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

pytestmark = pytest.mark.slow  # each test runs the command in a child process


def test_batch_of_200_lines_downloads_200_videos(emu: SyncEmulator, tmp_path: Path) -> None:
    """200 varied lines are each submitted once and saved as 200 MP4 files; exit code 0."""
    requests: list[dict[str, Any]] = []
    for i in range(200):
        request: dict[str, Any] = {"prompt": f"shot {i}: a lighthouse in a storm"}
        if i % 4 == 1:
            request |= {"image_urls": [f"https://example.com/{i}.jpg"], "duration": 10}
        elif i % 4 == 2:
            request |= {"mode": "pro", "aspect_ratio": "9:16", "negative_prompt": "blurry"}
        elif i % 4 == 3:
            request |= {"duration": 15, "audio": True, "watermark": False}
        requests.append(request)
    file = write_batch(tmp_path / "big.jsonl", requests)
    out = tmp_path / "out"
    result = run_cli(*batch_args(file, out, emu, "--concurrency", "16"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = summary_of(result.stdout)
    assert summary["ok"] is True
    assert summary["counts"] == {"done": 200}
    assert len(videos_in(out)) == 200
    stats = emu.stats()
    assert stats["submit_requests"] == stats["submissions"] == 200
    assert journal_states(out) == {"downloaded": 200}


def test_rerun_of_a_finished_batch_submits_nothing(emu: SyncEmulator, tmp_path: Path) -> None:
    """Re-running a finished batch skips every line: no POST, no status request."""
    file = write_batch(tmp_path / "b.jsonl", prompts(3))
    out = tmp_path / "out"
    assert run_cli(*batch_args(file, out, emu), cwd=tmp_path).returncode == 0
    emu.reset()
    again = run_cli(*batch_args(file, out, emu), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert summary_of(again.stdout)["counts"] == {"done": 3}
    assert emu.stats()["requests_total"] == 0


def test_sigkill_while_waiting_then_rerun_reattaches(emu: SyncEmulator, tmp_path: Path) -> None:
    """A batch SIGKILLed after submitting resumes by re-attaching: one submission per line."""
    emu.script(prompt_contains="[slow-wait]", time_factor=4)
    requests = prompts(40)
    for request in requests[::2]:
        request["prompt"] += " [slow-wait]"
    file = write_batch(tmp_path / "b.jsonl", requests)
    out = tmp_path / "out"
    with running_cli(batch_args(file, out, emu, "--concurrency", "8"), tmp_path) as cli:
        cli.wait_for(
            lambda ev: count_lines_in("pending")(ev) == 40 and count_lines_in("done")(ev) > 0
        )
        cli.proc.send_signal(signal.SIGKILL)
        assert cli.proc.wait(timeout=10) == -signal.SIGKILL
    assert 0 < len(videos_in(out)) < 40
    assert emu.stats()["submissions"] == 40
    with contextlib.closing(sqlite3.connect(out / ".kling-journal.sqlite3")) as db:
        unsaved = db.execute("SELECT filename FROM jobs WHERE state != 'downloaded'").fetchall()
    for (name,) in unsaved:  # what a download cut off by the kill leaves behind
        (out / f".{name}.x1y2z3.part").write_bytes(b"partial")
    rerun = run_cli(*batch_args(file, out, emu), cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert not count_lines_in("submitting")(events_of(rerun.stdout))
    assert len(videos_in(out)) == 40
    assert not list(out.glob("*.part"))
    assert emu.stats()["submit_requests"] == 40
    assert set(emu.created_prompts().values()) == {1}
    assert journal_states(out) == {"downloaded": 40}


@pytest.mark.parametrize("when", ["before", "after"])
def test_sigkill_mid_post_is_resent_with_its_own_key(
    emu: SyncEmulator, tmp_path: Path, when: str
) -> None:
    """SIGKILL mid-POST, then a re-run: the intent is re-sent with its key, one task per line."""
    emu.fault(kind="slow", route="submit", when=when, times=1)
    file = write_batch(tmp_path / "b.jsonl", prompts(8))
    out = tmp_path / "out"
    with running_cli(batch_args(file, out, emu, "--concurrency", "2"), tmp_path) as cli:
        cli.wait_for(lambda ev: count_lines_in("pending")(ev) == 7)
        cli.proc.send_signal(signal.SIGKILL)
        cli.proc.wait(timeout=10)
    assert journal_states(out)["intent"] == 1
    (intent,) = journal_rows(out, "state = 'intent'")

    rerun = run_cli(*batch_args(file, out, emu), cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert summary_of(rerun.stdout)["counts"] == {"done": 8}
    assert len(videos_in(out)) == 8
    stats = emu.stats()
    assert emu.created_prompts() == collections.Counter(r["prompt"] for r in prompts(8))
    assert stats["idempotent_replays"] == (1 if when == "after" else 0)
    rows = {row["key"]: row for row in journal_rows(out)}
    assert rows[intent["key"]]["idempotency_key"] == intent["idempotency_key"]
    for row in rows.values():  # each line's key made exactly its one task
        assert stats["tasks_by_key"][row["idempotency_key"]] == [row["task_id"]]


def test_ctrl_c_lets_posts_in_flight_record_their_ids(emu: SyncEmulator, tmp_path: Path) -> None:
    """SIGINT waits for a POST in flight, exits 130 saying how to resume; the resume completes."""
    emu.fault(kind="slow", route="submit", when="after", times=1)
    file = write_batch(tmp_path / "b.jsonl", prompts(6))
    out = tmp_path / "out"
    with running_cli(batch_args(file, out, emu, "--concurrency", "2"), tmp_path) as cli:
        cli.wait_for(lambda ev: count_lines_in("pending")(ev) == 5)
        cli.proc.send_signal(signal.SIGINT)
        code, err = cli.finish()
    assert code == 130
    assert "resume with: kling-async batch" in err
    assert journal_states(out)["intent"] == 0
    assert cli.events[-1]["event"] == "summary"
    assert cli.events[-1]["interrupted"] is True
    assert cli.events[-1]["counts"] == {"stopped": 6}
    rerun = run_cli(*batch_args(file, out, emu), cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert len(videos_in(out)) == 6
    assert emu.created_prompts() == collections.Counter(r["prompt"] for r in prompts(6))


def test_a_lost_submit_answer_is_retried_with_the_same_key(
    emu: SyncEmulator, tmp_path: Path
) -> None:
    """A 500 after the task was made is retried with the same key: replayed, done, one task."""
    emu.fault(kind="500", route="submit", when="after", times=1)
    file = write_batch(tmp_path / "b.jsonl", prompts(3))
    out = tmp_path / "out"
    first = run_cli(*batch_args(file, out, emu, "--concurrency", "1"), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert summary_of(first.stdout)["counts"] == {"done": 3}
    stats = emu.stats()
    assert (stats["submit_requests"], stats["submissions"], stats["idempotent_replays"]) == (
        4,
        3,
        1,
    )
    assert set(emu.created_prompts().values()) == {1}


def test_uncertain_only_when_retries_run_out_and_the_rerun_settles_it(
    emu: SyncEmulator, tmp_path: Path
) -> None:
    """Uncertain only when retries run out; the re-run's same-key replay settles it, one task."""
    emu.fault(kind="500", route="submit", when="after", times=5)  # the SDK's 5 attempts
    file = write_batch(tmp_path / "b.jsonl", prompts(3))
    out = tmp_path / "out"
    first = run_cli(*batch_args(file, out, emu, "--concurrency", "1"), cwd=tmp_path, timeout=120)
    assert first.returncode == 1
    assert summary_of(first.stdout)["counts"] == {"done": 2, "uncertain": 1}
    assert "with the same idempotency key" in summary_of(first.stdout)["jobs"][0]["error"]
    assert "Re-running sends each again with its own idempotency key" in first.stderr
    assert "--resubmit-uncertain" not in first.stderr
    (intent,) = journal_rows(out, "state = 'intent'")
    again = run_cli(*batch_args(file, out, emu), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert summary_of(again.stdout)["counts"] == {"done": 3}
    stats = emu.stats()
    assert stats["submissions"] == 3
    assert stats["tasks_by_key"][intent["idempotency_key"]] == [
        journal_rows(out, f"key = '{intent['key']}'")[0]["task_id"]
    ]
    assert set(emu.created_prompts().values()) == {1}


def test_failed_tasks_are_not_resubmitted_unless_asked(emu: SyncEmulator, tmp_path: Path) -> None:
    """A failed line makes the exit code 1; re-runs skip it; --retry-failed submits it again."""
    file = write_batch(tmp_path / "b.jsonl", [{"prompt": "fine"}, {"prompt": "broken [fail]"}])
    out = tmp_path / "out"
    first = run_cli(*batch_args(file, out, emu), cwd=tmp_path)
    assert first.returncode == 1
    jobs = summary_of(first.stdout)["jobs"]
    assert [j["state"] for j in jobs] == ["done", "failed"]
    assert "generation_failed" in jobs[1]["error"]
    assert run_cli(*batch_args(file, out, emu), cwd=tmp_path).returncode == 1
    assert emu.stats()["submissions"] == 2
    retry = run_cli(*batch_args(file, out, emu, "--retry-failed"), cwd=tmp_path)
    assert retry.returncode == 1
    assert emu.stats()["submissions"] == 3


def test_edited_file_submits_only_new_and_changed_lines(emu: SyncEmulator, tmp_path: Path) -> None:
    """Inserting and editing lines submits just those; the stale journal entry is reported."""
    file = write_batch(tmp_path / "b.jsonl", prompts(3))
    out = tmp_path / "out"
    assert run_cli(*batch_args(file, out, emu), cwd=tmp_path).returncode == 0
    edited = prompts(3)
    edited[1]["duration"] = 10
    write_batch(file, [{"prompt": "a brand new first line"}, *edited])
    rerun = run_cli(*batch_args(file, out, emu), cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert emu.stats()["submissions"] == 5
    notes = [e["message"] for e in events_of(rerun.stdout) if e["event"] == "note"]
    assert any("line 2" in n and "matches no line" in n for n in notes)
    assert len(videos_in(out)) == 5


def test_example_batch_runs_on_the_in_process_emulator(tmp_path: Path) -> None:
    """The shipped examples/prompts.jsonl runs with --emulator, no API key, no journal file."""
    out = tmp_path / "videos"
    args = ["batch", str(EXAMPLES), "--out", str(out), "--emulator"]
    result = run_cli(*args, "--emulator-time-scale", "300", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(videos_in(out)) == len(EXAMPLES.read_text().splitlines())
    assert "no journal (in-process emulator)" in result.stdout
    assert not list(out.glob(".kling-journal*"))  # its tasks die with the process


# -- bad input: rejected before anything is sent --------------------------------------------

GOOD = json.dumps({"prompt": "a fine line"})


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (f'{GOOD}\n{{"prompt": "x",\n', ["line 2: not valid JSON"]),
        (
            f'{GOOD}\n{{"prompt": "x", "duration": 16}}\n',
            ["line 2: duration: must be a whole number of seconds from 3 to 15"],
        ),
        (
            f'{GOOD}\n{{"promt": "x"}}\n',
            ["line 2: prompt: required", "promt: unknown field (did you mean 'prompt'?)"],
        ),
        (
            f'{GOOD}\nnot json\n{{"prompt": "x", "mode": "ultra"}}\n\n{{"mode": "std", "a": 1}}\n',
            ["line 2: not valid JSON", "line 3: mode: must be one of", "line 5: prompt: required"],
        ),
        (
            '{"prompt": "x", "image_urls": ["missing.jpg"]}\n',
            ["line 1: image_urls: local image: no such file"],
        ),
        ("\n\n", ["no requests"]),
    ],
    ids=["bad-json", "invalid-param", "unknown-key", "all-bad-lines", "missing-image", "empty"],
)
def test_bad_batch_files_are_rejected_before_submitting(
    emu: SyncEmulator, tmp_path: Path, content: str, expected: list[str]
) -> None:
    """Every bad line is reported with its number, exit code 2, and nothing is sent."""
    file = tmp_path / "bad.jsonl"
    file.write_text(content, encoding="utf-8")
    result = run_cli(*batch_args(file, tmp_path / "out", emu), cwd=tmp_path)
    assert result.returncode == 2
    for text in expected:
        assert text in result.stderr
    error = events_of(result.stdout)[-1]
    assert error["event"] == "error"
    assert emu.stats()["requests_total"] == 0


def test_unreadable_file_is_one_clear_error(emu: SyncEmulator, tmp_path: Path) -> None:
    """A missing batch file is one message, exit code 2, nothing sent."""
    result = run_cli(*batch_args(tmp_path / "missing.jsonl", tmp_path / "o", emu), cwd=tmp_path)
    assert result.returncode == 2
    assert "missing.jsonl: cannot read the file" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert emu.stats()["requests_total"] == 0


def test_unwritable_output_directory_is_rejected(emu: SyncEmulator, tmp_path: Path) -> None:
    """An output directory that cannot be created stops the batch before any submission."""
    file = write_batch(tmp_path / "b.jsonl", prompts(2))
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = run_cli(*batch_args(file, blocker / "out", emu), cwd=tmp_path)
    assert result.returncode == 2
    assert "output directory" in result.stderr
    assert "not writable" in result.stderr
    assert emu.stats()["requests_total"] == 0


def test_missing_api_key_is_rejected(emu: SyncEmulator, tmp_path: Path) -> None:
    """Without --api-key or APIMART_API_KEY both batch and generate stop before sending."""
    file = write_batch(tmp_path / "b.jsonl", prompts(2))
    batch = run_cli("batch", str(file), "--out", "o", "--base-url", emu.url, cwd=tmp_path)
    generate = run_cli("generate", "a cat", "--base-url", emu.url, cwd=tmp_path)
    for result in (batch, generate):
        assert result.returncode == 2
        assert "no API key" in result.stderr
        assert "APIMART_API_KEY" in result.stderr
    assert emu.stats()["requests_total"] == 0


def test_invalid_generate_options_are_rejected(emu: SyncEmulator, tmp_path: Path) -> None:
    """generate refuses pro 15 s and a last frame without a first one, sending nothing."""
    common = ["--base-url", emu.url, "--api-key", "k"]
    pro15 = run_cli("generate", "x", "--mode", "pro", "--duration", "15", *common, cwd=tmp_path)
    assert pro15.returncode == 2
    assert "duration: pro mode goes up to 10 seconds" in pro15.stderr
    lone = run_cli("generate", "x", "--last-frame", "https://e.com/a.jpg", *common, cwd=tmp_path)
    assert lone.returncode == 2
    assert "--last-frame: last_frame_image: only valid together with image_urls" in lone.stderr
    assert emu.stats()["requests_total"] == 0


# -- single tasks ----------------------------------------------------------------------------


def test_generate_on_the_in_process_emulator_saves_an_mp4(tmp_path: Path) -> None:
    """``generate --emulator --out x.mp4`` (the README demo) saves a real MP4, no key needed."""
    result = run_cli(
        "generate", "a golden cat on a meadow", "--emulator", "--out", "x.mp4", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "x.mp4").read_bytes()[4:8] == b"ftyp"
    assert "x.mp4" in result.stdout


def test_generate_then_status_wait_and_download(emu: SyncEmulator, tmp_path: Path) -> None:
    """generate --json reports the task; status, wait and download work on its id."""
    common = ["--base-url", emu.url, "--api-key", "k", "--json"]
    gen = run_cli(
        "generate",
        "a red kite",
        "--image",
        "https://e.com/k.jpg",
        "--mode",
        "pro",
        "--out",
        "kite.mp4",
        *CLI_POLL_ARGS,
        *common,
        cwd=tmp_path,
    )
    assert gen.returncode == 0, gen.stderr
    submitted, saved = events_of(gen.stdout)
    task_id = submitted["task_id"]
    assert saved == {
        "event": "saved",
        "task_id": task_id,
        "status": "completed",
        "file": "kite.mp4",
        "url": saved["url"],
        "cost": None,
        "credits_cost": None,
    }
    assert (tmp_path / "kite.mp4").read_bytes()[4:8] == b"ftyp"

    status = run_cli("status", task_id, *common, cwd=tmp_path)
    (snapshot,) = events_of(status.stdout)
    assert (snapshot["status"], snapshot["progress"]) == ("completed", 100)
    assert snapshot["videos"][0]["url"].startswith("http://127.0.0.1")

    wait = run_cli("wait", task_id, "--base-url", emu.url, "--api-key", "k", cwd=tmp_path)
    assert wait.returncode == 0
    assert f"{task_id}: completed" in wait.stdout

    download = run_cli("download", task_id, "--out", "again.mp4", *common, cwd=tmp_path)
    assert download.returncode == 0, download.stderr
    assert (tmp_path / "again.mp4").read_bytes() == (tmp_path / "kite.mp4").read_bytes()
    assert emu.stats()["submissions"] == 1


def test_reported_costs_reach_the_json_output_and_the_batch_summary(tmp_path: Path) -> None:
    """A server that reports cost: generate --json and status --json show it, a batch's
    jobs carry it and its summary totals it (and says so in text mode too)."""
    with emulator_running(*SHARED_EMULATOR, "--cost-per-second", "0.07") as billed:
        common = ["--base-url", billed.url, "--api-key", "k"]
        gen = run_cli(
            "generate",
            "a red kite",
            "--out",
            "kite.mp4",
            *common,
            *CLI_POLL_ARGS,
            "--json",
            cwd=tmp_path,
        )
        assert gen.returncode == 0, gen.stderr
        submitted, saved = events_of(gen.stdout)
        assert (saved["cost"], saved["credits_cost"]) == (0.35, 35)
        status = run_cli("status", submitted["task_id"], *common, "--json", cwd=tmp_path)
        (snapshot,) = events_of(status.stdout)
        assert (snapshot["cost"], snapshot["credits_cost"]) == (0.35, 35)

        file = write_batch(tmp_path / "b.jsonl", [*prompts(2), {"prompt": "pro", "mode": "pro"}])
        result = run_cli(*batch_args(file, tmp_path / "out", billed), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        summary = summary_of(result.stdout)
        assert [job["cost"] for job in summary["jobs"]] == [0.35, 0.35, 0.525]
        assert summary["cost"] == {"cost": pytest.approx(1.225), "credits_cost": 122.5, "lines": 3}

        text = run_cli(*batch_args(file, tmp_path / "out2", billed)[:-1], cwd=tmp_path)
        assert text.returncode == 0, text.stderr
        assert "Cost reported for 3 lines: 1.225 (122.5 credits)." in text.stdout


def test_failed_generation_exits_1_with_the_reason(emu: SyncEmulator, tmp_path: Path) -> None:
    """generate on a failing prompt exits 1 naming the task and the server's error."""
    result = run_cli(
        "generate",
        "doomed [fail]",
        "--base-url",
        emu.url,
        "--api-key",
        "k",
        *CLI_POLL_ARGS,
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "failed (code generation_failed)" in result.stderr
    assert not list(tmp_path.glob("*.mp4"))


def test_status_of_unknown_or_malformed_task(emu: SyncEmulator, tmp_path: Path) -> None:
    """An unknown id is an API error (exit 1); a malformed one is refused unsent (exit 2)."""
    common = ["--base-url", emu.url, "--api-key", "k"]
    unknown = run_cli("status", "task_NOSUCHTASK", *common, cwd=tmp_path)
    assert unknown.returncode == 1
    assert "404" in unknown.stderr
    malformed = run_cli("status", "../etc", *common, cwd=tmp_path)
    assert malformed.returncode == 2
    assert "task_id" in malformed.stderr


def test_emulator_command_is_delegated(tmp_path: Path) -> None:
    """``kling-async emulator --port 0`` runs the emulator and prints its URL line."""
    command = [sys.executable, "-m", "kling_async", "emulator", "--port", "0", "--time-scale", "9"]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=tmp_path
    ) as proc:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        proc.terminate()
        assert proc.wait(timeout=10) == 0
    assert line.startswith("KLING_EMULATOR_URL=http://127.0.0.1:")
