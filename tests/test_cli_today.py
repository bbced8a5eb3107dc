"""The command line speaks today's API: 4k, shots, extra fields and any model, in
``generate`` and in batch files, checked by the library before anything is sent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.cli import (
    CLI_POLL_ARGS,
    SyncEmulator,
    batch_args,
    events_of,
    run_cli,
    summary_of,
    write_batch,
)

pytestmark = pytest.mark.slow  # each test runs the command in a child process


def common(emu: SyncEmulator) -> list[str]:
    """Options pointing a command at the emulator process, with JSON output."""
    return ["--base-url", emu.url, "--api-key", "k", "--json", *CLI_POLL_ARGS]


def submitted_request(emu: SyncEmulator, stdout: str) -> dict[str, object]:
    """The body the emulator received for the task a ``generate --json`` submitted."""
    (task_id,) = [e["task_id"] for e in events_of(stdout) if e["event"] == "submitted"]
    request: dict[str, object] = emu.record(task_id)["request"]
    return request


def test_generate_sends_a_4k_story_in_shots_with_an_extra_field(
    emu: SyncEmulator, tmp_path: Path
) -> None:
    """--shot (in order, numbered from 1), --mode 4k and --field: the duration is the
    shots' total, customize is implied, and the extra field is sent as is."""
    result = run_cli(
        "generate",
        "--shot", "a seed in dark soil: macro:4",
        "--shot", "it blooms:6",
        "--mode", "4k",
        "--field", "cfg_scale=0.5",
        "--out", "story.mp4",
        *common(emu),
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "story.mp4").read_bytes()[4:8] == b"ftyp"
    assert submitted_request(emu, result.stdout) == {
        "model": "kling-v3",
        "mode": "4k",
        "duration": 10,
        "aspect_ratio": "16:9",
        "multi_shot": True,
        "shot_type": "customize",
        "multi_prompt": [
            {"index": 1, "prompt": "a seed in dark soil: macro", "duration": 4},
            {"index": 2, "prompt": "it blooms", "duration": 6},
        ],
        "cfg_scale": 0.5,
    }


def test_generate_sends_another_model_as_given(emu: SyncEmulator, tmp_path: Path) -> None:
    """--model kling-3.0-turbo: only what is given is sent (no kling-v3 default), the
    fields --field names included; --shot-type intelligence for kling-v3."""
    turbo = run_cli(
        "generate", "a corgi on the beach", "--model", "kling-3.0-turbo",
        "--field", 'resolution="720p"', "--duration", "15", *common(emu), cwd=tmp_path,
    )  # fmt: skip
    assert turbo.returncode == 0, turbo.stderr
    assert submitted_request(emu, turbo.stdout) == {
        "model": "kling-3.0-turbo",
        "prompt": "a corgi on the beach",
        "duration": 15,
        "resolution": "720p",
    }
    auto = run_cli(
        "generate", "a day in a harbour town", "--shot-type", "intelligence", *common(emu),
        cwd=tmp_path,
    )  # fmt: skip
    assert auto.returncode == 0, auto.stderr
    sent = submitted_request(emu, auto.stdout)
    assert (sent["multi_shot"], sent["shot_type"]) == (True, "intelligence")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--shot", "no seconds"], "a shot is PROMPT:SECONDS"),
        (["--shot", "a:4", "--duration", "5"], "--shot: multi_prompt: the shots' durations"),
        (["--shot", "a:4", "--shot", "b:0"], "--shot: multi_prompt[2].duration: must be"),
        (["x", "--shot-type", "customize"], "--shot: multi_prompt: required with shot_type"),
        (["x", "--shot-type", "auto"], "--shot-type: shot_type: must be one of"),
        (["x", "--mode", "8k"], "--mode: mode: must be one of std, pro, 4k"),
        (["x", "--field", "duration=7"], "--field duration: set by --duration"),
        (["x", "--field", "resolution=1080p"], "the value must be JSON"),
        (["x", "--field", "cfg=NaN"], "--field cfg: cfg: must be a finite number"),
        (["--duration", "5"], "PROMPT: prompt: required"),
    ],
    ids=[
        "shot-syntax",
        "shots-vs-duration",
        "shot-0s",
        "customize-no-shots",
        "shot-type",
        "mode",
        "field-clash",
        "field-not-json",
        "field-nan",
        "no-prompt",
    ],
)
def test_bad_generate_options_name_the_option_and_send_nothing(
    emu: SyncEmulator, tmp_path: Path, args: list[str], message: str
) -> None:
    """Each broken rule exits 2 naming the option (and the library's field and rule)."""
    result = run_cli("generate", *args, "--base-url", emu.url, "--api-key", "k", cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert emu.stats()["requests_total"] == 0


def test_a_batch_takes_the_apis_names_and_sends_unknown_keys_with_a_warning(
    emu: SyncEmulator, tmp_path: Path
) -> None:
    """multi_prompt / shot_type lines, a line of another model and a line with a field the
    SDK does not know all run; one note names the unknown field and its likely typo."""
    lines = [
        {"multi_prompt": [{"index": 2, "prompt": "it blooms", "duration": 3},
                          {"index": 1, "prompt": "a seed", "duration": 2}], "mode": "4k"},
        {"prompt": "a harbour town", "shot_type": "intelligence", "duration": 10},
        {"model": "kling-3.0-turbo", "prompt": "a corgi", "resolution": "720p"},
        {"prompt": "a paper boat", "cfg_scale": 0.5, "aspect_ration": "9:16"},
    ]  # fmt: skip
    file = write_batch(tmp_path / "b.jsonl", lines)
    result = run_cli(*batch_args(file, tmp_path / "out", emu), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = summary_of(result.stdout)
    assert summary["counts"] == {"done": 4}
    notes = [e["message"] for e in events_of(result.stdout) if e["event"] == "note"]
    (note,) = [n for n in notes if "sent as given" in n]
    assert "'aspect_ration' (line 4; did you mean 'aspect_ratio'?)" in note
    assert "'cfg_scale' (line 4)" in note
    sent = {job["line"]: emu.record(job["task_id"])["request"] for job in summary["jobs"]}
    assert sent[1]["multi_prompt"] == [
        {"index": 1, "prompt": "a seed", "duration": 2},
        {"index": 2, "prompt": "it blooms", "duration": 3},
    ]
    assert (sent[1]["duration"], sent[1]["mode"]) == (5, "4k")
    assert sent[2]["shot_type"] == "intelligence"
    assert sent[3] == {"model": "kling-3.0-turbo", "prompt": "a corgi", "resolution": "720p"}
    assert (sent[4]["cfg_scale"], sent[4]["aspect_ration"]) == (0.5, "9:16")
    assert json.loads(json.dumps(summary))  # the summary stays plain JSON
