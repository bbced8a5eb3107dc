"""Error bodies of the API host, in the shapes real gateways send (API.md §3 and §4).

``error_style`` picks one for every error the API host answers (400, 401, 404, 409,
413, 429, 5xx):

=================  ==========================================================
"code"             ``{"code": 404, "message": "task not found"}``
"error_object"     ``{"error": {"message", "type", "code", "param"}, "request_id"}``;
                   ``param`` names the offending field of a 400 (e.g. "duration")
"success_false"    ``{"success": false, "message": "task not found"}``
"mixed"            one of the three, drawn per response
=================  ==========================================================
"""

from __future__ import annotations

import json
import random
import secrets
from typing import Any

from aiohttp import web

__all__ = ["ErrorWriter", "json_response", "new_request_id"]

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "idempotency_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}
_CODES = {
    400: "invalid_parameter",
    401: "invalid_api_key",
    403: "forbidden",
    404: "not_found",
    409: "idempotency_key_reused",
    413: "payload_too_large",
    429: "rate_limit_exceeded",
}
_CONCRETE = ("code", "error_object", "success_false")


def new_request_id() -> str:
    """A fresh request id, as the envelope of newer responses carries."""
    return "req_" + secrets.token_hex(12)


def json_response(
    payload: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A compact JSON response."""
    return web.Response(
        body=json.dumps(payload, separators=(",", ":")).encode(),
        status=status,
        content_type="application/json",
        headers=headers,
    )


class ErrorWriter:
    """Builds error bodies in the configured style."""

    __slots__ = ("_rng", "_style")

    def __init__(self, style: str, rng: random.Random) -> None:
        self._style = style
        self._rng = rng

    def body(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | int | None = None,
    ) -> dict[str, Any]:
        """The error body for HTTP `status`; `code` replaces the style's default code."""
        style = self._style
        if style == "mixed":
            style = self._rng.choice(_CONCRETE)
        if style == "success_false":
            return {"success": False, "message": message}
        if style == "error_object":
            return {
                "error": {
                    "message": message,
                    "type": _TYPES.get(status, "api_error"),
                    "code": code if code is not None else _CODES.get(status, "internal_error"),
                    "param": param,
                },
                "request_id": new_request_id(),
            }
        return {"code": code if code is not None else status, "message": message}

    def response(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | int | None = None,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        """A JSON error response with the body of `body`."""
        return json_response(self.body(status, message, param=param, code=code), status, headers)

    def invalid(self, message: str) -> web.Response:
        """A 400 for a "<field>: <rule>" message, `param` set to the field."""
        field = message.partition(":")[0]
        return self.response(400, message, param=None if field == "body" else field)
