"""Signed, expiring result-URL tokens, checked without storing anything per URL."""

from __future__ import annotations

import hashlib
import hmac
import secrets

__all__ = ["UrlSigner"]


class UrlSigner:
    """Mints `<expiry ms>-<hmac>` tokens for a task and checks them back."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key if key is not None else secrets.token_bytes(32)

    def _sign(self, task_id: str, expires_ms: int) -> str:
        message = f"{task_id}:{expires_ms}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()[:32]

    def mint(self, task_id: str, expires_at: float) -> str:
        """A token for `task_id` valid until the wall time `expires_at`."""
        expires_ms = round(expires_at * 1000)
        return f"{expires_ms}-{self._sign(task_id, expires_ms)}"

    def expiry(self, task_id: str, token: str) -> float | None:
        """The wall time a genuine token expires at, or None if it is not one of ours."""
        ms_text, _, signature = token.partition("-")
        if not ms_text.isdigit() or not signature:
            return None
        expires_ms = int(ms_text)
        if not hmac.compare_digest(signature, self._sign(task_id, expires_ms)):
            return None
        return expires_ms / 1000
