"""Keeping the API key out of everything the server says back.

A server may echo the key in any string of its answer (an error message or code, a task
id, a failed task's message, a progress value, a result URL). Every decoded answer goes
through :meth:`Redactor.scrub` before anything reads it, so no exception, repr or log
built from it can carry the key, whole or cut short.
"""

from __future__ import annotations

from typing import Any

from multidict import CIMultiDict, CIMultiDictProxy

__all__ = ["MASK", "Redactor"]

MASK = "***"
MIN_SECRET = 8
"""Shorter keys are not masked: masking a few common characters would garble every answer,
and a key that short is not a real one."""


class Redactor:
    """Replaces one secret wherever it appears in decoded JSON or text."""

    __slots__ = ("_secret",)

    def __init__(self, secret: str) -> None:
        self._secret = secret if len(secret) >= MIN_SECRET else ""

    def __repr__(self) -> str:
        return "Redactor(***)"

    def text(self, value: str) -> str:
        """``value`` with the secret masked (cut it short only after this)."""
        secret = self._secret
        return value.replace(secret, MASK) if secret and secret in value else value

    def headers(self, headers: CIMultiDictProxy[str]) -> CIMultiDictProxy[str]:
        """``headers`` with the secret masked in every value (the same object if clean)."""
        secret = self._secret
        if not secret or not any(secret in value for value in headers.values()):
            return headers
        return CIMultiDictProxy(CIMultiDict((k, self.text(v)) for k, v in headers.items()))

    def scrub(self, payload: Any) -> Any:
        """A copy of decoded JSON with the secret masked in every key and string."""
        if not self._secret:
            return payload
        if isinstance(payload, str):
            return self.text(payload)
        if isinstance(payload, dict):
            return {self.text(k): self.scrub(v) for k, v in payload.items()}
        if isinstance(payload, list):
            return [self.scrub(item) for item in payload]
        return payload
