"""``Idempotency-Key`` on submits (API.md §4): one task per key, replays for retries.

A key is scoped to the Bearer token that sent it. The first successful submit with a
key records the request's fingerprint and its success response; a later submit with the
same key and the same JSON body gets that response again (``Idempotency-Replayed:
true``) and creates nothing; the same key with another body is refused with 409.

The server looks a key up and records it with no ``await`` in between, so two
concurrent retries in one event loop can never both create a task.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

__all__ = [
    "HEADER",
    "MAX_KEY_LENGTH",
    "REPLAYED_HEADER",
    "IdempotencyStore",
    "Remembered",
    "fingerprint",
    "key_error",
]

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotency-Replayed"
MAX_KEY_LENGTH = 191


def key_error(key: str) -> str | None:
    """Why `key` is not a valid idempotency key, or None when it is."""
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not all("!" <= ch <= "~" for ch in key):
        return f"{HEADER}: must be 1-{MAX_KEY_LENGTH} visible ASCII characters (0x21-0x7E)"
    return None


def fingerprint(body: Any, raw: bytes) -> str:
    """What "the same request" means: the canonical JSON of the body (raw bytes if not JSON)."""
    if body is None:
        return "raw:" + raw.hex()
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@attrs.frozen
class Remembered:
    """What a key stands for: the first request's fingerprint, task and response body."""

    fingerprint: str
    task_id: str
    payload: dict[str, Any]


class IdempotencyStore:
    """Keys seen per Bearer token; entries never expire (an emulator lives for one run)."""

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], Remembered] = {}

    def lookup(self, token: str, key: str) -> Remembered | None:
        """The entry for `key` sent with `token`, if any."""
        return self._entries.get((token, key))

    def remember(self, token: str, key: str, entry: Remembered) -> None:
        """Record the first successful request with `key`."""
        self._entries[(token, key)] = entry
