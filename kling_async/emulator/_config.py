"""Emulator settings and scripted faults: frozen attrs classes, validated when built.

Times in `EmulatorConfig` are *emulated* seconds unless a field says "real": the emulator
runs emulated time `time_scale` times faster than the wall clock, so a 60 s job takes
0.3 s of real time at `time_scale=200`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import attrs

__all__ = [
    "API_ROUTES",
    "DEFAULT_FAULT_KINDS",
    "FAULT_KINDS",
    "OUTCOMES",
    "PROGRESS_SHAPES",
    "EmulatorConfig",
    "Fault",
    "Outcome",
    "ProgressShape",
    "Route",
    "When",
    "format_seconds",
    "kind_applies",
]

ProgressShape = Literal["linear", "steps", "stuck"]
Route = Literal["submit", "status", "storage", "any"]
When = Literal["before", "after"]
Outcome = Literal["completed", "failed", "cancelled"]

PROGRESS_SHAPES: tuple[str, ...] = ("linear", "steps", "stuck")
OUTCOMES: tuple[str, ...] = ("completed", "failed", "cancelled")
ROUTES: tuple[str, ...] = ("submit", "status", "storage", "any")
API_ROUTES: tuple[str, ...] = ("submit", "status")
WHENS: tuple[str, ...] = ("before", "after")
DEFAULT_FAULT_KINDS: tuple[str, ...] = (
    "429",
    "500",
    "502",
    "503",
    "reset",
    "slow",
    "truncated",
    "html",
)
FAULT_KINDS: frozenset[str] = frozenset({*DEFAULT_FAULT_KINDS, "body_error", "unknown_status"})


def kind_applies(kind: str, route: str) -> bool:
    """Whether a fault kind makes sense on a concrete route ("submit", "status", "storage")."""
    if kind == "unknown_status":
        return route == "status"
    if kind == "body_error":
        return route in API_ROUTES
    return True


def format_seconds(value: float) -> str:
    """Render seconds for a header: integers as "1", fractions as "0.05" (never exponent form)."""
    if value == int(value):
        return str(int(value))
    return f"{value:.6f}".rstrip("0").rstrip(".")


def _to_kinds(value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    return tuple(value)


def _to_keys(value: Iterable[str] | None) -> frozenset[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return frozenset({value})
    return frozenset(value)


def _check_kinds(
    _inst: object, _attr: attrs.Attribute[tuple[str, ...]], value: tuple[str, ...]
) -> None:
    unknown = sorted(set(value) - FAULT_KINDS)
    if unknown:
        raise ValueError(f"fault_kinds: unknown kinds {unknown}; known: {sorted(FAULT_KINDS)}")


def _check_keys(
    _inst: object, _attr: attrs.Attribute[frozenset[str] | None], value: frozenset[str] | None
) -> None:
    if value is not None and not all(isinstance(key, str) and key for key in value):
        raise ValueError("api_keys: every key must be a non-empty string")


_positive = attrs.validators.gt(0.0)
_non_negative = attrs.validators.ge(0.0)


@attrs.frozen(kw_only=True)
class EmulatorConfig:
    """Every knob of the emulator; the defaults behave like the real API at real speed."""

    time_scale: float = attrs.field(default=1.0, validator=_positive)
    """Emulated seconds per real second (200 makes a 60 s job take 0.3 s)."""
    estimated_time: float = attrs.field(default=60.0, validator=_positive)
    """Emulated estimate for a std 5 s job; pro x1.5, 10 s x1.6, 15 s x2.2."""
    spread: float = attrs.field(default=0.25, validator=_non_negative)
    """Sigma of the lognormal actual/estimate ratio; 0 makes every job take its estimate."""
    bias: float = 0.0
    """Mean of log(actual/estimate): positive makes jobs run late."""
    queue_time: float = attrs.field(default=2.0, validator=_non_negative)
    """Emulated seconds in "pending" (capped at half the job) before "processing"."""
    progress_shape: ProgressShape = attrs.field(
        default="linear", validator=attrs.validators.in_(PROGRESS_SHAPES)
    )
    """"linear", "steps" (0/25/50/75 jumps) or "stuck" (0 until done)."""
    fail_marker: str | None = "[fail]"
    """Prompts containing this end "failed"; None disables."""
    url_ttl: float = attrs.field(default=86400.0, validator=_positive)
    """Emulated seconds until a minted result URL expires."""
    rate_limit: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(_positive)
    )
    """Most API requests accepted in any 1 s sliding window; more get 429."""
    retry_after: float = attrs.field(default=1.0, validator=_non_negative)
    """Real seconds sent in Retry-After with every 429."""
    fault_rate: float = attrs.field(
        default=0.0, validator=[_non_negative, attrs.validators.le(1.0)]
    )
    """Probability that an API request gets a random fault from `fault_kinds`."""
    fault_kinds: tuple[str, ...] = attrs.field(
        default=DEFAULT_FAULT_KINDS, converter=_to_kinds, validator=_check_kinds
    )
    """Kinds random faults are drawn from."""
    slow_delay: float = attrs.field(default=5.0, validator=_non_negative)
    """Real seconds a "slow" fault holds the response."""
    api_keys: frozenset[str] | None = attrs.field(
        default=None, converter=_to_keys, validator=_check_keys
    )
    """Accepted keys; None accepts any non-empty Bearer token."""
    quirks: bool = False
    """Randomly vary response shapes the way real gateways do (see the package docstring)."""
    seed: int | None = None
    """Seed for every random choice, for reproducible runs."""


def _check_fault(fault: Fault) -> None:
    if fault.kind == "429" and fault.when == "after":
        raise ValueError("a 429 refuses the request: it cannot come after the task was created")
    if fault.route == "any":
        if not any(kind_applies(fault.kind, route) for route in API_ROUTES):
            raise ValueError(f"fault kind {fault.kind!r} applies to no API route")
    elif not kind_applies(fault.kind, fault.route):
        raise ValueError(f"fault kind {fault.kind!r} does not apply to route {fault.route!r}")


@attrs.frozen
class Fault:
    """A scripted fault: the next `times` matching requests get `kind`.

    `route="any"` matches the API routes (submit and status), not storage downloads.
    On submit, `when="before"` fails the request without creating a task and
    `when="after"` creates the task, then fails the response (the ambiguous case).
    """

    kind: str = attrs.field(validator=attrs.validators.in_(FAULT_KINDS))
    route: Route = attrs.field(default="any", validator=attrs.validators.in_(ROUTES))
    times: int = attrs.field(
        default=1, validator=[attrs.validators.instance_of(int), attrs.validators.ge(1)]
    )
    when: When = attrs.field(default="before", validator=attrs.validators.in_(WHENS))

    def __attrs_post_init__(self) -> None:
        _check_fault(self)

    def applies_to(self, route: str) -> bool:
        """Whether this fault should hit a request on the concrete `route`."""
        if self.route == "any":
            return route in API_ROUTES and kind_applies(self.kind, route)
        return self.route == route
