"""Status bodies of a hostile server: unreadable, junk in optional fields, about another
task, or leaking the key.

Each function rewrites the ``data`` of a valid status body in place; the API host
applies them for the "garbled", "garbage_fields", "wrong_id" and "echo_key" faults.
"""

from __future__ import annotations

import random
from typing import Any
from urllib.parse import quote

__all__ = ["echo_key_in", "garble", "point_at", "scramble"]

_TERMINAL_FIELDS = ("completed", "actual_time", "result", "error")


def garble(data: dict[str, Any], rng: random.Random) -> str:
    """Make the body unreadable: "completed" with a video ``url`` of null, or with
    ``videos`` that are not a list (one at random); returns which ("url" or "videos")."""
    choice = rng.choice(("url", "videos"))
    for field in _TERMINAL_FIELDS:
        data.pop(field, None)
    data["status"] = "completed"
    data["progress"] = 100
    data["completed"] = data["created"]
    if choice == "url":
        data["result"] = {"videos": [{"url": None, "expires_at": data["created"]}]}
    else:
        data["result"] = {"videos": "coming soon"}
    return choice


_JUNK: dict[str, tuple[Any, ...]] = {
    "progress": ("abc", [50], True, {"pct": 5}, "NaN"),
    "estimated_time": ("NaN", "soon", -1e400, {"s": 60}, [60]),
    "created": ("yesterday", [1], {"t": 0}, "Infinity"),
    "actual_time": ("fast", [3], False),
    "cost": ({"usd": "?"}, "a lot", [0.1]),
    "credits_cost": ("many", {"n": 1}),
}


def scramble(data: dict[str, Any], rng: random.Random) -> None:
    """Put junk in the optional fields of a valid body (``progress``, ``estimated_time``,
    ``created``, ...) and add unknown nested fields; ``id``, ``status`` and a completed
    task's videos stay intact, so the answer is still one a client must deliver."""
    for field, junk in _JUNK.items():
        if field in data or rng.random() < 0.5:
            data[field] = rng.choice(junk)
    data["x_debug"] = {"trace": [rng.random(), None, {"deep": ["x"]}]}
    if isinstance(data.get("error"), dict) and rng.random() < 0.5:
        data["error"] = ["not", "an", "object"]


def point_at(data: dict[str, Any], other_id: str) -> None:
    """Make a valid body claim to be about `other_id`."""
    data["id"] = other_id


def echo_key_in(data: dict[str, Any], token: str) -> None:
    """Echo the caller's API key in the progress, the error message and the result URL."""
    data["progress"] = token
    error = data.get("error")
    if isinstance(error, dict):
        error["message"] = f"{error.get('message', 'failed')} (API key {token})"
    result = data.get("result")
    if isinstance(result, dict):
        for video in result.get("videos", []):
            suffix = "?api_key=" + quote(token, safe="")
            urls = video["url"]
            if isinstance(urls, list):
                video["url"] = [url + suffix for url in urls]
            else:
                video["url"] = urls + suffix
