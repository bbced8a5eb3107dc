"""The fault kinds, and what each one is, in one table (:data:`KINDS`).

================  ===========  =======  =====  ==========  =============================
kind              routes       default  after  served as   what the client sees
================  ===========  =======  =====  ==========  =============================
"429"             all          yes      no     error       429 with ``Retry-After``
"500"             all          yes      yes    error       that status, an error body
"502"             all          yes      yes    error       that status, an error body
"503"             all          yes      yes    error       that status, an error body
"reset"           all          yes      yes    drop        the connection reset, no answer
"slow"            all          yes      yes    slow        the answer, late
"truncated"       all          yes      yes    truncated   the body cut in half
"html"            all          yes      yes    error       502 with an nginx HTML page
"hang"            all          no       yes    hang        nothing, until the client leaves
"body_error"      API          no       yes    error       200 with an error ``code``
"echo_key"        API          no       yes    echo        the Bearer token echoed back
"unknown_status"  status       no       yes    body        a status the SDK does not know
"garbled"         status       no       yes    body        a body that cannot be read
"garbage_fields"  status       no       yes    body        junk in the optional fields
"wrong_id"        status       no       yes    body        another task's status
================  ===========  =======  =====  ==========  =============================

The members are in the table's order, and so is ``DEFAULT_FAULT_KINDS``: a seeded run
draws the same faults as it always did.
*routes*: the concrete routes a kind applies to (all: the API's and storage; API: submit,
status, upload). *default*: random faults are drawn from it unless ``fault_kinds`` says
otherwise. *after*: on a creating route (submit, upload) it may come after the task or
image was made (a 429 refuses the request, so it never does). *served as*: how
``_faults`` answers it (the wire, in detail, is in that module's docstring).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

import attrs

__all__ = ["API_ROUTES", "KINDS", "FaultKind", "KindRule", "Served", "kind_applies"]

API_ROUTES: tuple[str, ...] = ("submit", "status", "upload")
"""The API's routes (the emulator's other host, "storage", serves the files)."""


class FaultKind(enum.StrEnum):
    """A kind of fault the emulator injects; the value is how ``Fault``, ``fault_kinds``
    and ``--fault-kinds`` name it."""

    TOO_MANY_REQUESTS = "429"
    INTERNAL_ERROR = "500"
    BAD_GATEWAY = "502"
    UNAVAILABLE = "503"
    RESET = "reset"
    SLOW = "slow"
    TRUNCATED = "truncated"
    HTML = "html"
    HANG = "hang"
    BODY_ERROR = "body_error"
    ECHO_KEY = "echo_key"
    UNKNOWN_STATUS = "unknown_status"
    GARBLED = "garbled"
    GARBAGE_FIELDS = "garbage_fields"
    WRONG_ID = "wrong_id"


class Served(enum.Enum):
    """How a fault kind is answered."""

    ERROR = enum.auto()
    """A canned error response in place of the real one."""
    DROP = enum.auto()
    """The connection reset, no answer at all."""
    HANG = enum.auto()
    """No answer until the client gives up."""
    SLOW = enum.auto()
    """The real answer, late."""
    TRUNCATED = enum.auto()
    """The real answer (or a made-up one), cut in half."""
    ECHO = enum.auto()
    """An answer that repeats the caller's API key."""
    BODY = enum.auto()
    """A status answer with its body altered."""


@attrs.frozen
class KindRule:
    """What a :class:`FaultKind` is (its row of :data:`KINDS`)."""

    routes: frozenset[str]
    default: bool
    after: bool
    served: Served


_API = frozenset(API_ROUTES)
_ANY = _API | {"storage"}
_STATUS = frozenset({"status"})

# fmt: off
KINDS: Mapping[FaultKind, KindRule] = {
    #                                    KindRule(routes, default, after, served)
    FaultKind.TOO_MANY_REQUESTS: KindRule(_ANY,    True,  False, Served.ERROR),
    FaultKind.INTERNAL_ERROR:    KindRule(_ANY,    True,  True,  Served.ERROR),
    FaultKind.BAD_GATEWAY:       KindRule(_ANY,    True,  True,  Served.ERROR),
    FaultKind.UNAVAILABLE:       KindRule(_ANY,    True,  True,  Served.ERROR),
    FaultKind.RESET:             KindRule(_ANY,    True,  True,  Served.DROP),
    FaultKind.SLOW:              KindRule(_ANY,    True,  True,  Served.SLOW),
    FaultKind.TRUNCATED:         KindRule(_ANY,    True,  True,  Served.TRUNCATED),
    FaultKind.HTML:              KindRule(_ANY,    True,  True,  Served.ERROR),
    FaultKind.HANG:              KindRule(_ANY,    False, True,  Served.HANG),
    FaultKind.BODY_ERROR:        KindRule(_API,    False, True,  Served.ERROR),
    FaultKind.ECHO_KEY:          KindRule(_API,    False, True,  Served.ECHO),
    FaultKind.UNKNOWN_STATUS:    KindRule(_STATUS, False, True,  Served.BODY),
    FaultKind.GARBLED:           KindRule(_STATUS, False, True,  Served.BODY),
    FaultKind.GARBAGE_FIELDS:    KindRule(_STATUS, False, True,  Served.BODY),
    FaultKind.WRONG_ID:          KindRule(_STATUS, False, True,  Served.BODY),
}
# fmt: on
"""The one table of fault kinds (see the module docstring)."""


def kind_applies(kind: str, route: str) -> bool:
    """Whether a fault kind makes sense on a concrete route ("submit", "status", ...)."""
    return route in KINDS[FaultKind(kind)].routes
