"""Choosing faults (scripted first, then random) and serving them.

What each kind is (where it applies, how it is served) is ``_faultkinds.KINDS``; how each
reaches the wire:

=================  ==========================================================
"429"              429, JSON error body, ``Retry-After: <retry_after>`` (the
                   fault's own verbatim string if it has one); the body's ``code``
                   is the fault's upstream ``code`` (else ``rate_limit_code``), see
                   `UPSTREAM_CODES`
"500"/"502"/"503"  that status, JSON error body
"html"             502 with an nginx-style HTML page (``text/html``)
"reset"            the TCP connection is aborted with an RST, no response at all
"hang"             no answer until the client gives up and closes the connection
"slow"             the normal answer, after ``slow_delay`` real seconds
"truncated"        200 JSON (or the file) with the body cut in half
"body_error"       HTTP 200 with ``{"code": 500, "message": "internal"}``
"echo_key"         500 whose message and ``code`` echo the request's Bearer token;
                   on status, half the time instead a valid body echoing it in
                   ``progress``, the failed task's ``error.message`` and the result URL
"unknown_status"   a valid status body whose status is ``"mystery"``
"garbled"          a status body that cannot be read: "completed" with ``url: null``
                   or with ``videos`` that are not a list (one at random)
"garbage_fields"   a valid status body with junk in its optional fields
                   (``progress: "abc"``, ``estimated_time: "NaN"``, ...) and unknown
                   nested extras: a client must still deliver it
"wrong_id"         a valid status body carrying another task's id
=================  ==========================================================

Error bodies follow ``error_style`` (see `_errors`), except "body_error", whose point
is the ``code`` of a 200 body.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
from typing import Any, cast

from aiohttp import web

from ._config import API_ROUTES, CREATING_ROUTES, Fault, Route, When, format_seconds, kind_applies
from ._errors import ErrorWriter, json_response
from ._faultkinds import KINDS, FaultKind, Served

__all__ = [
    "UPSTREAM_CODES",
    "FaultBox",
    "cut_short",
    "drop_connection",
    "echo_error",
    "error_response",
    "hang",
    "rate_limited",
    "still_connected",
    "truncated_response",
]

#: Upstream Kling codes a 429 may carry (API.md section 5), and the message sent with each.
UPSTREAM_CODES: dict[int, str] = {
    1100: "account abnormal: generation is disabled for this account",
    1101: "account in arrears: the balance is exhausted",
    1102: "resource pack exhausted or expired: the quota is used up",
    1302: "rate limit exceeded, retry later",
    1303: "too many tasks at once for the account's package, retry later with fewer",
    1304: "the caller's IP address is not on the account's allow-list",
}
_MESSAGES = {
    429: "rate limit exceeded, retry later",
    500: "internal server error",
    502: "bad gateway",
    503: "service temporarily unavailable",
}
_HTML = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)
_LINGER_RST = struct.pack("ii", 1, 0)
_HANG_POLL = 0.05  # real seconds between checks that a hung client is still there


class FaultBox:
    """Scripted faults in order, then random ones at `rate` drawn from `kinds`."""

    __slots__ = ("_kinds", "_queue", "_rate", "_rng")

    def __init__(self, rng: random.Random, rate: float, kinds: tuple[str, ...]) -> None:
        self._rng = rng
        self._rate = rate
        self._kinds = kinds
        self._queue: list[list[Any]] = []  # [fault, times left]

    def inject(self, fault: Fault) -> None:
        """Queue `fault` behind the ones already scripted."""
        self._queue.append([fault, fault.times])

    def clear(self) -> None:
        """Drop every scripted fault not yet served."""
        self._queue.clear()

    def pending(self) -> list[tuple[Fault, int]]:
        """Scripted faults not yet (fully) served, with the times left."""
        return [(entry[0], entry[1]) for entry in self._queue]

    def draw(self, route: str) -> Fault | None:
        """The fault the next request on `route` gets, if any (consumes a scripted one).

        Random faults hit the API routes only; on submit and upload half of them come
        "after" the task or image was created.
        """
        for index, entry in enumerate(self._queue):
            fault: Fault = entry[0]
            if fault.applies_to(route):
                entry[1] -= 1
                if entry[1] <= 0:
                    del self._queue[index]
                return fault
        if self._rate <= 0 or route not in API_ROUTES or self._rng.random() >= self._rate:
            return None
        kinds = [kind for kind in self._kinds if kind_applies(kind, route)]
        if not kinds:
            return None
        kind = FaultKind(self._rng.choice(kinds))
        when: When = "before"
        # A 429 refuses the request, so it never comes after a task was created.
        if route in CREATING_ROUTES and KINDS[kind].after and self._rng.random() < 0.5:
            when = "after"
        return Fault(kind, route=cast(Route, route), when=when)


async def cut_short(
    fault: Fault,
    request: web.BaseRequest,
    errors: ErrorWriter,
    retry_after: float,
    code: int | None = None,
) -> web.StreamResponse | None:
    """The whole answer of a fault served in place of the real one (a canned error, a
    dropped connection, a hang); None for a kind that changes the real answer instead.
    ``retry_after`` and ``code`` are the config's, for a 429 (see :func:`error_response`)."""
    match KINDS[fault.kind].served:
        case Served.ERROR:
            return error_response(fault, errors, retry_after, code)
        case Served.DROP:
            return drop_connection(request)
        case Served.HANG:
            return await hang(request)
    return None


def error_response(
    fault: Fault, errors: ErrorWriter, retry_after: float, code: int | None = None
) -> web.Response:
    """The canned response for a fault served as an error (``Served.ERROR``); a 429
    carries the fault's upstream code, else `code` (the config's ``rate_limit_code``)."""
    kind = fault.kind
    if kind is FaultKind.HTML:
        return web.Response(text=_HTML, status=502, content_type="text/html")
    if kind is FaultKind.BODY_ERROR:
        return json_response({"code": 500, "message": "internal"})
    status = int(kind)
    if kind is FaultKind.TOO_MANY_REQUESTS:
        value = fault.retry_after if fault.retry_after is not None else format_seconds(retry_after)
        return rate_limited(errors, value, fault.code if fault.code is not None else code)
    return errors.response(status, _MESSAGES[status])


def rate_limited(errors: ErrorWriter, retry_after: str, code: int | None = None) -> web.Response:
    """A 429 with ``Retry-After: <retry_after>``; with an upstream `code`, the body carries
    it and its message (`UPSTREAM_CODES`), as gateways pass on Kling's own."""
    message = UPSTREAM_CODES.get(code, _MESSAGES[429]) if code is not None else _MESSAGES[429]
    return errors.response(429, message, code=code, headers={"Retry-After": retry_after})


def echo_error(errors: ErrorWriter, token: str) -> web.Response:
    """The "echo_key" error: a 500 whose message and code repeat the caller's API key."""
    return errors.response(500, f"upstream rejected the API key {token}", code=token)


def truncated_response(body: bytes) -> web.Response:
    """HTTP 200, content-type JSON, with only the first half of `body`."""
    return web.Response(body=body[: len(body) // 2], status=200, content_type="application/json")


def still_connected(request: web.BaseRequest) -> bool:
    """Whether the client of `request` has not gone away."""
    transport = request.transport
    return transport is not None and not transport.is_closing()


async def hang(request: web.BaseRequest) -> web.StreamResponse:
    """Answer nothing until the client closes the connection (or the server stops).

    aiohttp signals a disconnect to a handler only by cancelling it, which this server
    leaves off (a "slow" answer must notice the client left, not vanish), so it polls.
    """
    while still_connected(request):  # noqa: ASYNC110 - no disconnect event to wait on
        await asyncio.sleep(_HANG_POLL)
    return drop_connection(request, rst=False)


def drop_connection(request: web.BaseRequest, *, rst: bool = True) -> web.StreamResponse:
    """Close the connection without (the rest of) a response; returns a dummy never sent.

    With `rst` the socket is aborted with a TCP RST (a "connection reset"); without,
    it is closed cleanly, which a client reading a body sees as a cut-off payload.
    aiohttp then fails to write the dummy, which it treats as a client gone away.
    """
    transport = request.transport
    if transport is not None:
        if rst:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):  # platforms without SO_LINGER
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
            transport.abort()
        else:
            transport.close()
    return web.Response(status=499)
