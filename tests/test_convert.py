"""Parsing API answers: tolerant of the shapes API.md warns about, strict about garbage."""

from __future__ import annotations

import json
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kling_async import ErrorInfo, InvalidResponseError, TaskStatus, Video
from kling_async._convert import converter, parse_snapshot, parse_submission

VIDEO = {"url": ["https://s/x.mp4"], "expires_at": 1763174708}

REFERENCE = {
    "code": 200,
    "data": {
        "id": "task_01KA040M0HP1GJWBJYZMKX1XS1",
        "status": "completed",
        "progress": 100,
        "result": {
            "videos": [
                {"url": ["https://upload.apimart.ai/f/video/x.mp4"], "expires_at": 1763174708}
            ]
        },
        "created": 1763088289,
        "completed": 1763088308,
        "estimated_time": 60,
        "actual_time": 19,
    },
}


def test_reference_body_parses():
    """The API reference's completed task parses field by field."""
    snap = parse_snapshot(REFERENCE)
    assert snap.id == "task_01KA040M0HP1GJWBJYZMKX1XS1"
    assert snap.status is TaskStatus.COMPLETED
    assert snap.progress == 100
    assert snap.videos[0].url == "https://upload.apimart.ai/f/video/x.mp4"
    assert snap.videos[0].expires_at == 1763174708
    assert (snap.created, snap.completed) == (1763088289, 1763088308)
    assert (snap.estimated_time, snap.actual_time) == (60, 19)


def test_tolerates_the_shapes_seen_in_the_wild():
    """A string url, numbers as strings, ms timestamps, extra fields and unknown statuses."""
    snap = parse_snapshot(
        {
            "code": "200",
            "data": {
                "id": "task_1",
                "status": "rendering",
                "progress": "42",
                "created": "1763088289000",
                "estimated_time": "60.5",
                "result": {"videos": [{"url": "https://s/x.mp4", "future": True}]},
                "brand_new_field": {"nested": [1, 2]},
            },
        }
    )
    assert snap.status is TaskStatus.UNKNOWN
    assert snap.progress == 42
    assert snap.created == 1763088289.0
    assert snap.estimated_time == 60.5
    assert snap.videos[0].url == "https://s/x.mp4"
    assert snap.videos[0].expires_at is None


def test_missing_optional_fields_default():
    """A minimal body (id only) gives an UNKNOWN snapshot at 0 % with no videos."""
    snap = parse_snapshot({"code": 200, "data": {"id": "task_1"}})
    assert (snap.status, snap.progress, snap.videos, snap.error) == (
        TaskStatus.UNKNOWN,
        0,
        (),
        None,
    )


def test_failed_task_error_is_read_from_message_or_msg():
    """The error's message may be under message or msg."""
    snap = parse_snapshot(
        {
            "code": 200,
            "data": {"id": "t1", "status": "failed", "error": {"code": 1301, "msg": "nsfw"}},
        }
    )
    assert snap.error is not None
    assert (snap.error.code, snap.error.message) == ("1301", "nsfw")


def test_progress_is_clamped():
    """Progress outside 0-100 is clamped rather than trusted."""
    assert parse_snapshot({"data": {"id": "t1", "progress": 250}}).progress == 100
    assert parse_snapshot({"data": {"id": "t1", "progress": -3}}).progress == 0


@pytest.mark.parametrize(
    "payload",
    [
        None,
        [],
        {"code": 200},
        {"data": "nope"},
        {"data": {"id": "../../etc/passwd"}},
        {"data": {"id": "t1", "status": "completed"}},
        {"data": {"id": "t1", "status": "completed", "result": {"videos": []}}},
        {"data": {"id": "t1", "status": "completed", "result": {"videos": [{"url": 5}]}}},
        {"data": {"id": "t1", "status": "completed", "result": {"videos": ["x"]}}},
        {"data": {"id": "t1", "status": "completed", "result": "https://s/x.mp4"}},
    ],
)
def test_garbage_is_an_invalid_response(payload):
    """Bodies that are not a task status (or a completed one without readable videos)
    raise InvalidResponseError, never something else."""
    with pytest.raises(InvalidResponseError):
        parse_snapshot(payload)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("progress", "lots"),
        ("progress", float("nan")),
        ("progress", True),
        ("estimated_time", "NaN"),
        ("estimated_time", {"s": 60}),
        ("created", [1]),
        ("completed", "yesterday"),
        ("actual_time", float("inf")),
        ("cost", "a lot"),
        ("credits_cost", [3]),
        ("error", [1, 2]),
        ("result", {"videos": "soon"}),
    ],
)
def test_an_unreadable_optional_field_is_treated_as_absent(field, value):
    """A processing task whose optional field cannot be read is still a readable status:
    the field counts as unknown (progress 0, the rest None)."""
    snap = parse_snapshot({"data": {"id": "t1", "status": "processing", field: value}})
    assert snap.status is TaskStatus.PROCESSING
    assert snap.progress == 0
    assert (snap.created, snap.completed, snap.estimated_time, snap.actual_time) == (None,) * 4
    assert (snap.cost, snap.credits_cost, snap.videos) == (None, None, ())
    assert snap.error in (None, ErrorInfo())


def test_a_garbled_video_expiry_keeps_the_video():
    """``expires_at`` is a hint: an unreadable one is None, the video is delivered."""
    snap = parse_snapshot(
        {
            "data": {
                "id": "t1",
                "status": "completed",
                "result": {"videos": [VIDEO | {"expires_at": "x"}]},
            }
        }
    )
    assert snap.videos == (Video("https://s/x.mp4", None),)


def test_cost_and_unknown_fields_are_kept():
    """``cost`` and ``credits_cost`` are read as numbers; fields the SDK does not model are
    kept, read-only, as received."""
    snap = parse_snapshot(
        {
            "data": {
                "id": "t1",
                "status": "completed",
                "result": {"videos": [VIDEO]},
                "cost": "0.35",
                "credits_cost": 35,
                "model": "kling-v3",
                "usage": {"seconds": 5, "tiers": ["std"]},
            }
        }
    )
    assert (snap.cost, snap.credits_cost) == (0.35, 35.0)
    assert snap.extras == {"model": "kling-v3", "usage": {"seconds": 5, "tiers": ("std",)}}
    assert json.loads(json.dumps(snap.extras))["usage"]["tiers"] == ["std"]
    with pytest.raises(TypeError, match="read-only"):
        snap.extras["model"] = "other"  # type: ignore[index]
    with pytest.raises(TypeError, match="read-only"):
        snap.extras["usage"].update(seconds=6)


def test_a_snapshot_round_trips_through_its_json_shape():
    """Unstructuring a snapshot gives the status route's own shape, which parses back to an
    equal snapshot: cost, credits and unknown fields included (Redis shares snapshots so)."""
    snap = parse_snapshot(
        {
            "data": {
                "id": "t1",
                "status": "completed",
                "progress": 100,
                "result": {"videos": [VIDEO]},
                "cost": 0.5,
                "credits_cost": 50,
                "x_region": {"name": "eu", "zones": [1, 2]},
            }
        }
    )
    data = converter.unstructure(snap)
    assert data["x_region"] == {"name": "eu", "zones": [1, 2]}
    assert parse_snapshot(json.loads(json.dumps({"data": data}))) == snap


def test_unreadable_fields_are_logged_once_per_task(caplog):
    """Each task's unreadable optional fields are logged once, at DEBUG, naming them."""
    body = {"data": {"id": "t-logged-once", "status": "processing", "progress": "abc"}}
    with caplog.at_level(logging.DEBUG, logger="kling_async"):
        for _ in range(3):
            parse_snapshot(body)
    records = [r for r in caplog.records if "t-logged-once" in r.getMessage()]
    assert len(records) == 1
    assert records[0].levelno == logging.DEBUG
    assert "progress" in records[0].getMessage()


def test_submission_id_is_read_from_the_data_list():
    """The submit answer's data is a list; its first task_id is returned."""
    assert parse_submission(
        {"code": 200, "data": [{"status": "submitted", "task_id": "task_9"}]}
    ) == ("task_9")


@pytest.mark.parametrize(
    "payload",
    [{"code": 200, "data": []}, {"data": [{"task_id": "a/b"}]}, {"data": [{"status": "x"}]}, {}],
)
def test_submission_without_usable_id_is_invalid(payload):
    """A submit answer without a safe task id raises InvalidResponseError."""
    with pytest.raises(InvalidResponseError):
        parse_submission(payload)


# Cheap to draw, so no machine trips the too_slow health check: small bounded JSON, and
# text from a short alphabet (Hypothesis's default alphabet scans all of Unicode on first
# use, seconds on a fresh clone) that still reaches the parser's edge cases: digits and
# signs for numbers sent as strings, path characters, non-ASCII, NUL, a lone surrogate.
ALPHABET = "0129.-+eE xZ/\\%?#_\x00\u00e9\u732b\u2028\ud800\U0001f3ac"
# Words the parser looks for, so generated bodies also reach its deeper paths.
WORDS = ["completed", "failed", "processing", "100", "-5", "1e309", "NaN", "1763088289000"]
WORDS += ["https://s/x.mp4", "../x", "videos", "url", "expires_at", "code", "message", "msg"]
json_keys = st.sampled_from(WORDS) | st.text(ALPHABET, max_size=6)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.sampled_from(WORDS)
    | st.text(ALPHABET, max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(json_keys, children, max_size=3)
    ),
    max_leaves=8,
)


@given(
    st.fixed_dictionaries(
        {"id": st.sampled_from(["task_1", "a/b", 7, None])},
        optional={
            "status": json_values,
            "progress": json_values,
            "created": json_values,
            "estimated_time": json_values,
            "result": json_values,
            "error": json_values,
        },
    )
)
def test_parser_never_crashes_on_any_json(data):
    """Whatever JSON arrives, the parser returns a snapshot or raises InvalidResponseError."""
    try:
        snap = parse_snapshot(json.loads(json.dumps({"code": 200, "data": data})))
    except InvalidResponseError:
        return
    assert 0 <= snap.progress <= 100
    assert all(isinstance(v.url, str) for v in snap.videos)


OPTIONAL_FIELDS = (
    "progress",
    "created",
    "completed",
    "estimated_time",
    "actual_time",
    "cost",
    "credits_cost",
    "error",
    "x_unknown",
)
any_json = json_values | st.just(float("nan")) | st.just(float("-inf"))


@given(st.dictionaries(st.sampled_from(OPTIONAL_FIELDS), any_json))
def test_any_json_in_any_optional_field_of_a_completed_task_still_yields_its_video(fields):
    """Whatever JSON value arrives in the optional fields of a completed task, the status
    is read and its video delivered."""
    data = {"id": "t1", "status": "completed", "result": {"videos": [VIDEO]}, **fields}
    snap = parse_snapshot(json.loads(json.dumps({"code": 200, "data": data})))
    assert snap.status is TaskStatus.COMPLETED
    assert snap.videos == (Video("https://s/x.mp4", 1763174708),)
    assert 0 <= snap.progress <= 100
