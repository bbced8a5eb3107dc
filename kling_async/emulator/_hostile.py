"""Status bodies of a hostile server: unreadable, about another task, or leaking the key.

Each function rewrites the ``data`` of a valid status body in place; the API host
applies them for the "garbled", "wrong_id" and "echo_key" faults.
"""

from __future__ import annotations

import random
from typing import Any
from urllib.parse import quote

__all__ = ["echo_key_in", "garble", "point_at"]

_TERMINAL_FIELDS = ("completed", "actual_time", "result", "error")


def garble(data: dict[str, Any], rng: random.Random) -> str:
    """Make one field unreadable, chosen at random; returns which ("url", "progress", ...)."""
    choice = rng.choice(("url", "progress", "estimated_time"))
    if choice == "url":
        for field in _TERMINAL_FIELDS:
            data.pop(field, None)
        data["status"] = "completed"
        data["progress"] = 100
        data["completed"] = data["created"]
        data["result"] = {"videos": [{"url": None, "expires_at": data["created"]}]}
    elif choice == "progress":
        data["progress"] = "abc"
    else:
        data["estimated_time"] = "NaN"
    return choice


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
