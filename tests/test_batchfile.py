"""Reading batch files: the library's rules and words, local images, stable identities."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kling_async import (
    GenericRequest,
    ImageToVideo,
    RequestValidationError,
    TextToVideo,
    VideoRequest,
)
from kling_async._cli._batchfile import (
    BatchFileError,
    canonical_body,
    read_batch,
    unknown_fields_note,
)

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 64


def write(path: Path, *lines: Any) -> Path:
    """Write JSON values (or raw strings) one per line."""
    text = "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines)
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path) -> list[str]:
    """The problems read_batch reports for ``path``."""
    with pytest.raises(BatchFileError) as caught:
        read_batch(path)
    return caught.value.problems


def test_image_urls_make_an_image_to_video_request(tmp_path: Path) -> None:
    """A line with image_urls is image-to-video; without, text-to-video."""
    text, image = read_batch(
        write(
            tmp_path / "b.jsonl",
            {"prompt": "x"},
            {"prompt": "x", "image_urls": ["https://e.com/a.jpg"], "duration": 10},
        )
    )
    assert isinstance(text.request, TextToVideo)
    assert isinstance(image.request, ImageToVideo)
    assert image.request.image_urls == ("https://e.com/a.jpg",)
    assert image.local_images == ()


def test_null_fields_count_as_unset(tmp_path: Path) -> None:
    """A JSON null leaves an optional field at its default."""
    (line,) = read_batch(
        write(tmp_path / "b.jsonl", {"prompt": "x", "negative_prompt": None, "mode": None})
    )
    assert (line.request.mode, line.request.negative_prompt) == ("std", None)


@pytest.mark.parametrize(
    "data",
    [
        [1],
        {"mode": "std"},
        {"prompt": "x", "last_frame_image": "https://e.com/b.jpg"},
        {"prompt": "x", "duration": "5"},
        {"prompt": "x", "duration": 16},
        {"prompt": "x", "image_urls": ["https://e.com/a.jpg"], "duration": 15},
    ],
    ids=["not-object", "no-prompt", "lone-last-frame", "string", "16s", "i2v-15s"],
)
def test_bad_lines_are_reported_in_the_librarys_words(tmp_path: Path, data: Any) -> None:
    """Each bad line's message is exactly what VideoRequest.from_fields says about it."""
    with pytest.raises(RequestValidationError) as expected:
        VideoRequest.from_fields(data)  # type: ignore[arg-type]
    path = write(tmp_path / "b.jsonl", {"prompt": "fine"}, data)
    assert problems_of(path) == [f"line 2: {expected.value}"]


def test_unknown_keys_are_sent_as_extra_fields_with_one_warning(tmp_path: Path) -> None:
    """A kling-v3 line's keys the SDK does not model go into the body as extra fields (and
    so into its identity); one note names them with their lines and a likely typo."""
    path = write(
        tmp_path / "b.jsonl",
        {"prompt": "x", "Duration": 5, "cfg_scale": 0.5},
        {"prompt": "y", "Duration": 7},
        {"prompt": "z"},
    )
    first, second, third = read_batch(path)
    assert first.request.extra_fields == {"Duration": 5, "cfg_scale": 0.5}
    assert json.loads(canonical_body(first.request))["cfg_scale"] == 0.5
    assert (first.unknown_fields, third.unknown_fields) == (("Duration", "cfg_scale"), ())
    note = unknown_fields_note([first, second, third])
    assert note is not None
    assert "'Duration' (lines 1, 2; did you mean 'duration'?)" in note
    assert "'cfg_scale' (line 1)" in note
    assert unknown_fields_note([third]) is None
    (plain,) = read_batch(write(tmp_path / "c.jsonl", {"prompt": "x", "Duration": 5}))
    (bare,) = read_batch(write(tmp_path / "d.jsonl", {"prompt": "x"}))
    assert plain.key != bare.key  # an extra field is part of the line's identity


def test_a_bad_line_with_unknown_keys_names_them_with_their_hint(tmp_path: Path) -> None:
    """A refused line that also has unknown keys says which and what they may be typos of."""
    path = write(tmp_path / "b.jsonl", {"promt": "x"})
    (problem,) = problems_of(path)
    assert problem.startswith("line 1: prompt: required")
    assert "promt: unknown field (did you mean 'prompt'?)" in problem


def test_a_line_for_another_model_is_sent_as_written(tmp_path: Path) -> None:
    """model other than kling-v3: a GenericRequest of the line's fields, no kling-v3
    default added, nothing warned about; local images are uploaded as for kling-v3."""
    (tmp_path / "a.png").write_bytes(PNG)
    path = write(
        tmp_path / "b.jsonl",
        {"model": "kling-3.0-turbo", "prompt": "a corgi", "resolution": "1080p"},
        {"model": "kling-v3-omni", "prompt": "<<<image_1>>> waves", "image_urls": ["a.png"]},
    )
    turbo, omni = read_batch(path)
    assert isinstance(turbo.request, GenericRequest) and not turbo.unknown_fields
    assert json.loads(canonical_body(turbo.request)) == {
        "model": "kling-3.0-turbo",
        "prompt": "a corgi",
        "resolution": "1080p",
    }
    assert omni.local_images == (tmp_path / "a.png",)


def test_every_bad_line_is_reported_with_its_number(tmp_path: Path) -> None:
    """All problems come back at once, in file order, blank lines skipped but counted."""
    path = write(tmp_path / "b.jsonl", {"prompt": "ok"}, "{oops", "", {"prompt": ""}, {"x": 1})
    assert [p.split(":")[0] for p in problems_of(path)] == ["line 2", "line 4", "line 5"]


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


def test_identity_of_url_lines_is_unchanged_from_schema_1(tmp_path: Path) -> None:
    """A URL-only line keeps the identity journals of schema 1 recorded for it."""
    (line,) = read_batch(write(tmp_path / "b.jsonl", {"prompt": "a cat"}))
    # sha256 of '{"aspect_ratio":"16:9","duration":5,"mode":"std","model":"kling-v3",
    # "prompt":"a cat"}', as the first journal version computed it (checked against it).
    assert line.key == "cdb610a5574b3a8fa033a662bda0eac5.1"


def test_local_images_are_paths_relative_to_the_batch_file(tmp_path: Path) -> None:
    """Entries that are not http(s) URLs are files beside the batch file, in either field."""
    folder = tmp_path / "shots"
    (folder / "frames").mkdir(parents=True)
    (folder / "frames" / "start.png").write_bytes(PNG)
    (folder / "end.jpg").write_bytes(JPEG)
    path = write(
        folder / "b.jsonl",
        {"prompt": "x", "image_urls": ["frames/start.png"], "last_frame_image": "end.jpg"},
        {"prompt": "y", "image_urls": ["HTTPS://e.com/a.jpg", "frames/start.png"]},
    )
    first, second = read_batch(path)
    assert first.local_images == (folder / "frames" / "start.png", folder / "end.jpg")
    assert second.local_images == (folder / "frames" / "start.png",)
    assert isinstance(second.request, ImageToVideo)
    assert second.request.image_urls[0] == "HTTPS://e.com/a.jpg"


def test_identity_of_a_local_image_is_the_path_as_written(tmp_path: Path) -> None:
    """A line naming a local file keeps its identity when the whole folder moves."""
    lines = {"prompt": "x", "image_urls": ["cat.png"]}
    keys = []
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "cat.png").write_bytes(PNG)
        (line,) = read_batch(write(tmp_path / name / "b.jsonl", lines))
        keys.append(line.key)
    assert keys[0] == keys[1]
    (tmp_path / "one" / "dog.png").write_bytes(PNG)
    (other,) = read_batch(write(tmp_path / "one" / "c.jsonl", {**lines, "image_urls": ["dog.png"]}))
    assert other.key != keys[0]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "image_urls: local image: no such file"),
        (b"GIF89a" + b"\x00" * 10, None),
        (b"plain text, not an image", "image_urls: not a JPEG, PNG, GIF or WebP image"),
    ],
    ids=["missing", "gif", "not-an-image"],
)
def test_local_images_are_checked_before_anything_runs(
    tmp_path: Path, content: bytes | None, message: str | None
) -> None:
    """A missing or non-image local file is a bad line naming the file; a GIF is fine."""
    if content is not None:
        (tmp_path / "pic.gif").write_bytes(content)
    path = write(tmp_path / "b.jsonl", {"prompt": "x", "image_urls": ["pic.gif"]})
    if message is None:
        assert read_batch(path)[0].local_images == (tmp_path / "pic.gif",)
        return
    (problem,) = problems_of(path)
    assert problem.startswith(f"line 1: {message}")
    assert str(tmp_path / "pic.gif") in problem


def test_a_non_http_scheme_is_taken_for_a_file_name(tmp_path: Path) -> None:
    """Anything that is not an http(s) URL is a path: an ftp URL is a missing file."""
    path = write(tmp_path / "b.jsonl", {"prompt": "x", "image_urls": ["ftp://a/b.jpg"]})
    (problem,) = problems_of(path)
    assert problem.startswith("line 1: image_urls: local image: no such file")


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
    """examples/prompts.jsonl parses, and uses every request kind, a story in shots too."""
    lines = read_batch(Path(__file__).resolve().parent.parent / "examples" / "prompts.jsonl")
    kinds = {type(line.request) for line in lines}
    assert kinds == {TextToVideo, ImageToVideo, GenericRequest}
    assert any(getattr(line.request, "multi_prompt", ()) for line in lines)
    assert not any(line.unknown_fields for line in lines)
    assert len(lines) >= 5
