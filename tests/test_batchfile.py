"""Reading batch files: every bad line reported, stable identities, safe file names."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from kling_async import ImageToVideo, TextToVideo
from kling_async._cli._batchfile import BatchFileError, parse_request, read_batch


def write(path: Path, *lines: Any) -> Path:
    """Write JSON values (or raw strings) one per line."""
    text = "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines)
    path.write_text(text, encoding="utf-8")
    return path


def test_image_urls_make_an_image_to_video_request() -> None:
    """A line with image_urls is image-to-video; without, text-to-video."""
    assert isinstance(parse_request({"prompt": "x"}), TextToVideo)
    i2v = parse_request({"prompt": "x", "image_urls": ["https://e.com/a.jpg"], "duration": 10})
    assert isinstance(i2v, ImageToVideo)
    assert i2v.image_urls == ("https://e.com/a.jpg",)


def test_null_fields_count_as_unset() -> None:
    """A JSON null leaves an optional field at its default."""
    request = parse_request({"prompt": "x", "negative_prompt": None, "mode": None})
    assert (request.mode, request.negative_prompt) == ("std", None)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1], "expected a JSON object"),
        ({"prompt": "x", "Duration": 5}, "unknown field 'Duration' (did you mean 'duration'?)"),
        ({"mode": "std"}, "prompt: required"),
        ({"prompt": "x", "last_frame_image": "https://e.com/b.jpg"}, "only valid together"),
        ({"prompt": "x", "duration": "5"}, "duration: must be an integer"),
        ({"prompt": "x", "image_urls": ["https://e.com/a.jpg"], "duration": 15}, "up to 10"),
    ],
)
def test_bad_requests_name_the_problem(data: Any, message: str) -> None:
    """Each kind of bad line gets a message naming the field and the rule."""
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_request(data)


def test_every_bad_line_is_reported_with_its_number(tmp_path: Path) -> None:
    """All problems come back at once, in file order, blank lines skipped but counted."""
    path = write(tmp_path / "b.jsonl", {"prompt": "ok"}, "{oops", "", {"prompt": ""}, {"x": 1})
    with pytest.raises(BatchFileError) as caught:
        read_batch(path)
    problems = caught.value.problems
    assert [p.split(":")[0] for p in problems] == ["line 2", "line 4", "line 5"]


def test_non_utf8_line_is_a_bad_line(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 are reported for their line only."""
    path = tmp_path / "b.jsonl"
    path.write_bytes(b'{"prompt": "ok"}\n{"prompt": "\xff"}\n')
    with pytest.raises(BatchFileError, match="line 2: not UTF-8"):
        read_batch(path)


def test_bom_and_crlf_are_accepted(tmp_path: Path) -> None:
    """A UTF-8 BOM and Windows line ends do not break parsing."""
    path = tmp_path / "b.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"prompt": "a"}\r\n{"prompt": "b"}\r\n')
    assert [line.request.prompt for line in read_batch(path)] == ["a", "b"]


def test_identity_ignores_spelling_of_defaults_and_key_order(tmp_path: Path) -> None:
    """Lines asking for the same request share a body hash whatever optional keys they spell."""
    path = write(
        tmp_path / "b.jsonl",
        {"prompt": "a cat"},
        {"mode": "std", "prompt": "a cat", "duration": 5, "model": "kling-v3"},
    )
    first, second = read_batch(path)
    assert first.body == second.body
    assert first.key.split(".")[0] == second.key.split(".")[0]
    assert first.key != second.key  # two identical lines are still two jobs


def test_identity_survives_inserted_lines(tmp_path: Path) -> None:
    """Inserting a line above does not change the identity of the lines below."""
    before = read_batch(write(tmp_path / "a.jsonl", {"prompt": "one"}, {"prompt": "two"}))
    after = read_batch(
        write(tmp_path / "b.jsonl", {"prompt": "zero"}, {"prompt": "one"}, {"prompt": "two"})
    )
    assert [line.key for line in before] == [line.key for line in after[1:]]
    assert [line.number for line in after] == [1, 2, 3]


def test_file_names_are_safe_and_unique(tmp_path: Path) -> None:
    """File names carry the line number and prompt words, never path characters, never twice."""
    path = write(
        tmp_path / "b.jsonl",
        {"prompt": "../../etc/passwd: A Cat!"},
        {"prompt": "../../etc/passwd: A Cat!"},
        {"prompt": "日本語だけ"},
    )
    names = [line.filename() for line in read_batch(path)]
    assert names[0].startswith("0001-etc-passwd-a-cat-")
    assert names[2].startswith("0003-video-")
    assert len(set(names)) == 3
    assert all("/" not in n and n.endswith(".mp4") for n in names)


def test_empty_file_is_an_error(tmp_path: Path) -> None:
    """A file with only blank lines has nothing to run."""
    with pytest.raises(BatchFileError, match="no requests"):
        read_batch(write(tmp_path / "b.jsonl", "", "  "))


def test_the_shipped_example_is_valid() -> None:
    """examples/prompts.jsonl parses, and uses both request kinds."""
    lines = read_batch(Path(__file__).resolve().parent.parent / "examples" / "prompts.jsonl")
    kinds = {type(line.request) for line in lines}
    assert kinds == {TextToVideo, ImageToVideo}
    assert len(lines) >= 5
