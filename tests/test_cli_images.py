"""Local images on the command line: ``generate --image FILE`` and batch lines naming files."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
from support.cli import (
    CLI_POLL_ARGS,
    SLOW_DELAY,
    SyncEmulator,
    batch_args,
    count_lines_in,
    emulator_running,
    events_of,
    journal_rows,
    run_cli,
    running_cli,
    summary_of,
    videos_in,
    write_batch,
)

pytestmark = pytest.mark.slow  # each test runs the command in a child process

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 200
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 200


def connection(emu: SyncEmulator) -> list[str]:
    """Options that point a command at ``emu`` with fast polling."""
    return ["--base-url", emu.url, "--api-key", "k", *CLI_POLL_ARGS]


def test_generate_uploads_local_images_first(emu: SyncEmulator, tmp_path: Path) -> None:
    """``--image cat.png --last-frame end.jpg`` uploads both, then generates and saves."""
    (tmp_path / "cat.png").write_bytes(PNG)
    (tmp_path / "end.jpg").write_bytes(JPEG)
    result = run_cli(
        "generate",
        "the cat walks off",
        "--image",
        "cat.png",
        "--last-frame",
        "end.jpg",
        "--out",
        "cat.mp4",
        "--json",
        *connection(emu),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert events_of(result.stdout)[-1]["event"] == "saved"
    assert (tmp_path / "cat.mp4").read_bytes()[4:8] == b"ftyp"
    stats = emu.stats()
    assert (stats["uploads"], stats["submissions"]) == (2, 1)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "--image: image_urls: local image: no such file"),
        (b"just text", "--image: image_urls: not a JPEG, PNG, GIF or WebP image"),
    ],
    ids=["missing", "not-an-image"],
)
def test_generate_refuses_a_bad_local_image_sending_nothing(
    emu: SyncEmulator, tmp_path: Path, content: bytes | None, message: str
) -> None:
    """A missing or non-image ``--image`` file is one clear error, exit 2, nothing sent."""
    if content is not None:
        (tmp_path / "cat.png").write_bytes(content)
    result = run_cli("generate", "x", "--image", "cat.png", *connection(emu), cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert "cat.png" in result.stderr
    assert emu.stats()["requests_total"] == 0


def write_image_batch(folder: Path, prompts: list[str]) -> Path:
    """A batch file in ``folder`` whose lines name local images beside it."""
    (folder / "frames").mkdir(parents=True)
    (folder / "frames" / "first.png").write_bytes(PNG)
    (folder / "last.jpg").write_bytes(JPEG)
    requests = [
        {"prompt": prompt, "image_urls": ["frames/first.png"], "last_frame_image": "last.jpg"}
        for prompt in prompts
    ]
    return write_batch(folder / "b.jsonl", requests)


def test_batch_lines_name_images_relative_to_the_file(emu: SyncEmulator, tmp_path: Path) -> None:
    """Batch images are files beside the batch file, uploaded first; the journal keeps URLs."""
    file = write_image_batch(tmp_path / "shots", ["a door opens", "a door closes"])
    out = tmp_path / "out"
    result = run_cli(*batch_args(file, out, emu), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(videos_in(out)) == 2
    stats = emu.stats()
    assert (stats["uploads"], stats["submissions"]) == (4, 2)
    for row in journal_rows(out):
        body = json.loads(row["request"])
        assert body["image_urls"][0].startswith("http://127.0.0.1")
        assert body["last_frame_image"].startswith("http://127.0.0.1")


def test_a_resumed_image_line_resends_the_same_body_without_uploading(
    emu: SyncEmulator, tmp_path: Path
) -> None:
    """A killed image line resumes with its journaled body and key: no re-upload, one task."""
    emu.fault(kind="slow", route="submit", when="after", times=1)
    file = write_image_batch(tmp_path, ["a kite rises"])
    out = tmp_path / "out"
    with running_cli(batch_args(file, out, emu), tmp_path) as cli:
        cli.wait_for(count_lines_in("submitting"))
        time.sleep(SLOW_DELAY / 3)  # the POST is held by the server
        cli.proc.send_signal(signal.SIGKILL)
        cli.proc.wait(timeout=10)
    (intent,) = journal_rows(out, "state = 'intent'")
    assert emu.stats()["uploads"] == 2
    rerun = run_cli(*batch_args(file, out, emu), cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    stats = emu.stats()
    assert (stats["uploads"], stats["submissions"], stats["idempotent_replays"]) == (2, 1, 1)
    assert stats["key_conflicts"] == 0
    (row,) = journal_rows(out)
    assert (row["request"], row["idempotency_key"]) == (
        intent["request"],
        intent["idempotency_key"],
    )


def test_a_resume_after_the_uploads_expired_uploads_again(tmp_path: Path) -> None:
    """A resume after the uploads expired is refused (400), says why; the next run re-uploads."""
    file = write_image_batch(tmp_path, ["a boat leaves"])
    out = tmp_path / "out"
    # url-ttl 200 emulated seconds at time scale 200: uploads live one real second.
    options = ("--time-scale", "200", "--url-ttl", "200", "--slow-delay", str(SLOW_DELAY))
    with emulator_running(*options) as emu:
        emu.fault(kind="slow", route="submit", when="before", times=1)
        with running_cli(batch_args(file, out, emu), tmp_path) as cli:
            cli.wait_for(count_lines_in("submitting"))
            time.sleep(SLOW_DELAY / 3)  # held "before": the server makes nothing
            cli.proc.send_signal(signal.SIGKILL)
            cli.proc.wait(timeout=10)
        assert len(journal_rows(out, "state = 'intent'")) == 1
        time.sleep(1.0 + SLOW_DELAY)  # the uploads expire; the held POST ends unanswered

        expired = run_cli(*batch_args(file, out, emu), cwd=tmp_path)
        assert expired.returncode == 1
        (job,) = summary_of(expired.stdout)["jobs"]
        assert job["state"] == "error"
        assert "expired" in job["error"]
        assert "re-running uploads them again" in job["error"]
        assert journal_rows(out) == []

        again = run_cli(*batch_args(file, out, emu), cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        stats = emu.stats()
    assert (stats["uploads"], stats["submissions"]) == (4, 1)
    assert len(videos_in(out)) == 1
