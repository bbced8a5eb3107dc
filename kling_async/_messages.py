"""What sessions sharing a Redis tell each other: the three kinds of message and their wire.

Every message is one JSON object published on the namespace's channel, and some are also
kept in Redis for the sessions that join later (:data:`KEPT`):

=========  ===============================  ====================  ======================
kind       says                             fields besides t/from  kept
=========  ===============================  ====================  ======================
``snap``   a check of a task found this     ``id s sent received``  the latest, per task
``pause``  a 429 paused the whole budget    ``seconds``            no
``lesson`` the schedule learned a value     ``kind name v``        a list (the last 2048)
=========  ===============================  ====================  ======================

``t`` is the kind, ``from`` the sending session; times (``sent``, ``received``) travel on
the wall clock, each process turning them into its own monotonic time. :func:`encode` and
:func:`decode` are the only code that knows the wire's field names.
"""

from __future__ import annotations

import enum
import json
import time
from collections.abc import Hashable, Mapping
from typing import Any

import attrs

from ._convert import converter, parse_snapshot
from ._coordination import Sighting

__all__ = [
    "KEPT",
    "Kept",
    "Lesson",
    "Message",
    "MessageKind",
    "Pause",
    "Snap",
    "decode",
    "encode",
]


class MessageKind(enum.StrEnum):
    """What a message says; the value is its ``t`` field."""

    SNAP = "snap"
    PAUSE = "pause"
    LESSON = "lesson"


class Kept(enum.Enum):
    """How Redis keeps a message of a kind besides publishing it."""

    LATEST = enum.auto()
    """The latest per task, under its own key (a session not checking reads it there)."""
    LOG = enum.auto()
    """Appended to a list a joining session reads first."""
    NOT = enum.auto()
    """Not kept: only those listening now hear it."""


KEPT: Mapping[MessageKind, Kept] = {
    MessageKind.SNAP: Kept.LATEST,
    MessageKind.PAUSE: Kept.NOT,
    MessageKind.LESSON: Kept.LOG,
}
"""The one table of message kinds (see the module docstring)."""


def _wall_offset() -> float:
    """Wall-clock minus monotonic seconds: turns a local monotonic time into a shared one."""
    return time.time() - time.monotonic()


@attrs.frozen
class Snap:
    """A check of ``task_id`` found ``snapshot`` (its JSON), sent and answered at those
    wall-clock times."""

    task_id: str
    snapshot: Any
    sent: float
    received: float
    kind = MessageKind.SNAP

    @classmethod
    def of(cls, task_id: str, sighting: Sighting) -> Snap:
        """The message sharing ``sighting`` of ``task_id``."""
        offset = _wall_offset()
        snapshot = converter.unstructure(sighting.snapshot)
        return cls(task_id, snapshot, sighting.sent + offset, sighting.received + offset)

    @classmethod
    def parse(cls, payload: Any) -> Snap:
        """The snap a payload holds (as stored per task); ValueError if it holds another."""
        _, message = decode(payload)
        if not isinstance(message, Snap):
            raise ValueError("not a snap")
        return message

    def sighting(self) -> Sighting:
        """What it says, on this process's clock (ValueError, KlingError... if unreadable)."""
        snapshot = parse_snapshot({"data": self.snapshot}, self.task_id)
        offset = _wall_offset()
        return Sighting(snapshot, self.sent - offset, self.received - offset)


@attrs.frozen
class Pause:
    """A 429 paused the whole budget for ``seconds``."""

    seconds: float
    kind = MessageKind.PAUSE


@attrs.frozen
class Lesson:
    """The schedule learned ``value`` for statistic ``name`` of tasks of ``task_kind``."""

    task_kind: Hashable | None
    name: str
    value: float
    kind = MessageKind.LESSON


Message = Snap | Pause | Lesson


def encode(message: Message, sender: str) -> str:
    """``message`` from ``sender`` as its JSON payload."""
    fields: dict[str, Any]
    match message:
        case Snap():
            fields = {
                "id": message.task_id,
                "s": message.snapshot,
                "sent": message.sent,
                "received": message.received,
            }
        case Pause():
            fields = {"seconds": message.seconds}
        case Lesson():
            kind = message.task_kind
            fields = {
                "kind": list(kind) if isinstance(kind, tuple) else kind,
                "name": message.name,
                "v": message.value,
            }
    return json.dumps({"t": message.kind, **fields, "from": sender}, separators=(",", ":"))


def decode(payload: Any) -> tuple[str | None, Message | None]:
    """The sender and the message of a payload (None: a kind this version does not know);
    ValueError, TypeError or KeyError if it is unreadable."""
    data = json.loads(payload)
    sender = data.get("from")
    match data.get("t"):
        case MessageKind.SNAP:
            message: Message = Snap(data["id"], data["s"], data["sent"], data["received"])
        case MessageKind.PAUSE:
            message = Pause(float(data["seconds"]))
        case MessageKind.LESSON:
            kind = data["kind"]
            task_kind = tuple(kind) if isinstance(kind, list) else kind
            message = Lesson(task_kind, str(data["name"]), float(data["v"]))
        case _:
            return sender, None
    return sender, message
