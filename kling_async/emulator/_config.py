"""Emulator settings and scripted faults: frozen attrs classes, validated when built.

Times in `EmulatorConfig` are *emulated* seconds unless a field says "real": the emulator
runs emulated time `time_scale` times faster than the wall clock, so a 60 s job takes
0.3 s of real time at `time_scale=200`. Every invalid value raises a ValueError that
names the field.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Literal

import attrs

from ._faultkinds import API_ROUTES, KINDS, FaultKind, kind_applies

__all__ = [
    "API_ROUTES",
    "DEFAULT_FAULT_KINDS",
    "ERROR_STYLES",
    "FAULT_KINDS",
    "UNKNOWN_FIELDS",
    "OUTCOMES",
    "PROGRESS_SHAPES",
    "REALISTIC",
    "RUN_DISTRIBUTIONS",
    "EmulatorConfig",
    "ErrorStyle",
    "Fault",
    "FaultKind",
    "Outcome",
    "ProgressShape",
    "Route",
    "RunDistribution",
    "UnknownFields",
    "When",
    "format_seconds",
    "kind_applies",
]

ProgressShape = Literal["linear", "steps", "stuck", "eased"]
"""How progress moves while a job is processing (`EmulatorConfig.progress_shape`)."""
RunDistribution = Literal["lognormal", "uniform"]
"""How a job's run time is drawn around its estimate (`EmulatorConfig.run_distribution`)."""
ErrorStyle = Literal["code", "error_object", "success_false", "mixed"]
"""The shape of error bodies (`EmulatorConfig.error_style`)."""
UnknownFields = Literal["accept", "refuse"]
"""What the emulator does with request fields it does not model (`unknown_fields`)."""
Route = Literal["submit", "status", "upload", "storage", "any"]
"""Which requests a `Fault` hits; "any" is the API's routes, not storage downloads."""
When = Literal["before", "after"]
"""Whether a `Fault` on submit or upload comes before or after the task or image is made."""
Outcome = Literal["completed", "failed", "cancelled"]
"""How a scripted job ends (`Script.outcome`)."""

PROGRESS_SHAPES: tuple[str, ...] = ("linear", "steps", "stuck", "eased")
RUN_DISTRIBUTIONS: tuple[str, ...] = ("lognormal", "uniform")
ERROR_STYLES: tuple[str, ...] = ("code", "error_object", "success_false", "mixed")
UNKNOWN_FIELDS: tuple[str, ...] = ("accept", "refuse")
OUTCOMES: tuple[str, ...] = ("completed", "failed", "cancelled")
ROUTES: tuple[str, ...] = ("submit", "status", "upload", "storage", "any")
CREATING_ROUTES: tuple[str, ...] = ("submit", "upload")
"""Routes whose request creates something, so a fault can come "after" it was created."""
WHENS: tuple[str, ...] = ("before", "after")
DEFAULT_FAULT_KINDS: tuple[str, ...] = tuple(
    kind.value for kind in FaultKind if KINDS[kind].default
)
"""The fault kinds random faults are drawn from unless `fault_kinds` says otherwise."""
FAULT_KINDS: frozenset[str] = frozenset(kind.value for kind in FaultKind)
"""Every fault kind a `Fault` or `fault_kinds` may name (the values of `FaultKind`)."""

REALISTIC: dict[str, Any] = {
    "queue_spread": 0.3,
    "long_queue_rate": 0.05,
    "run_distribution": "uniform",
    "spread": 0.5,
    "clock_offset": 3.0,
    "progress_shape": "linear",
}
"""The fields `EmulatorConfig.realistic()` sets (the rest keep their defaults)."""


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


def _finite(_inst: object, attr: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{attr.name}: must be a finite number (got {value!r})")


def _whole_number(_inst: object, attr: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{attr.name}: must be a whole number (got {value!r})")


def _optional_text(_inst: object, attr: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None and (not isinstance(value, str) or not value):
        raise ValueError(f"{attr.name}: must be a non-empty string or None (got {value!r})")


def _boolean(_inst: object, attr: attrs.Attribute[bool], value: bool) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{attr.name}: must be True or False (got {value!r})")


def _one_of(choices: tuple[str, ...]) -> Any:
    def check(_inst: object, attr: attrs.Attribute[str], value: str) -> None:
        if value not in choices:
            raise ValueError(f"{attr.name}: must be one of {', '.join(choices)} (got {value!r})")

    return check


_positive = [_finite, attrs.validators.gt(0.0)]
_non_negative = [_finite, attrs.validators.ge(0.0)]
_probability = [_finite, attrs.validators.ge(0.0), attrs.validators.le(1.0)]


@attrs.frozen(kw_only=True)
class EmulatorConfig:
    """Every knob of the emulator; the defaults behave like the real API at real speed.

    `EmulatorConfig.realistic()` is a preset closer to the wild (see `REALISTIC`).
    """

    time_scale: float = attrs.field(default=1.0, validator=_positive)
    """Emulated seconds per real second (200 makes a 60 s job take 0.3 s)."""
    estimated_time: float = attrs.field(default=60.0, validator=_positive)
    """Emulated estimate for a std 5 s job; pro x1.5, each second over 5 adds 12 %."""
    spread: float = attrs.field(default=0.25, validator=_non_negative)
    """Spread of the run/estimate ratio: the lognormal's sigma, or the uniform's half-width."""
    bias: float = attrs.field(default=0.0, validator=_finite)
    """Mean of log(run/estimate): positive makes jobs run late."""
    run_distribution: RunDistribution = attrs.field(
        default="lognormal", validator=_one_of(RUN_DISTRIBUTIONS)
    )
    """"lognormal" (ratio exp(N(bias, spread))) or "uniform" (ratio U[1 ± spread] x exp(bias))."""
    queue_time: float = attrs.field(default=2.0, validator=_non_negative)
    """Emulated seconds every job stays "pending" before "processing"."""
    queue_spread: float = attrs.field(default=0.0, validator=_non_negative)
    """Extra queue, uniform in [0, queue_spread x the job's estimate]."""
    long_queue_rate: float = attrs.field(default=0.0, validator=_probability)
    """Probability a job also waits a long queue (an account's concurrent slots are full)."""
    long_queue_factor: float = attrs.field(default=2.0, validator=_positive)
    """A long queue lasts uniform in [0.5, 1] x long_queue_factor x the job's estimate."""
    max_concurrent: int | None = attrs.field(
        default=None,
        validator=attrs.validators.optional([_whole_number, attrs.validators.ge(1)]),
    )
    """Most jobs "processing" at once; the rest stay "pending", first come first served."""
    clock_offset: float = attrs.field(default=0.0, validator=_finite)
    """Emulated seconds the server clock is ahead of the real one (negative: behind)."""
    progress_shape: ProgressShape = attrs.field(
        default="linear", validator=_one_of(PROGRESS_SHAPES)
    )
    """"linear", "steps" (jumps of progress_step), "stuck" (0 until done) or "eased"."""
    progress_step: int = attrs.field(
        default=25, validator=[_whole_number, attrs.validators.ge(1), attrs.validators.le(99)]
    )
    """Size of a "steps" jump: 25 reports 0/25/50/75."""
    cost_per_second: float | None = attrs.field(
        default=None, validator=attrs.validators.optional([_finite, attrs.validators.ge(0.0)])
    )
    """When set, a completed task reports ``cost`` (this x its seconds of video, x1.5 in
    pro) and ``credits_cost`` (100 credits per unit of cost); None reports neither."""
    fail_marker: str | None = attrs.field(default="[fail]", validator=_optional_text)
    """Prompts containing this end "failed"; None disables."""
    url_ttl: float = attrs.field(default=259200.0, validator=_positive)
    """Emulated seconds until a result or upload URL expires (72 h)."""
    rate_limit: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(_positive)
    )
    """Most API requests accepted in any 1 s sliding window; more get 429."""
    retry_after: float = attrs.field(default=1.0, validator=_non_negative)
    """Real seconds sent in Retry-After with every 429."""
    rate_limit_code: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(_whole_number)
    )
    """The upstream Kling code in the body of the emulator's 429s (its rate limit and
    random "429" faults): 1302 slow down, 1303 too many at once, 1101/1102 in arrears or
    out of quota, 1100/1304 account or IP refused; None sends the error style's own."""
    unknown_fields: UnknownFields = attrs.field(default="accept", validator=_one_of(UNKNOWN_FIELDS))
    """A submit field its model does not document: "accept" it (sent on, unchecked) or
    "refuse" it with a 400 naming it, as a strict gateway would."""
    fault_rate: float = attrs.field(default=0.0, validator=_probability)
    """Probability that an API request gets a random fault from `fault_kinds`."""
    fault_kinds: tuple[str, ...] = attrs.field(
        default=DEFAULT_FAULT_KINDS, converter=_to_kinds, validator=_check_kinds
    )
    """Kinds random faults are drawn from."""
    slow_delay: float = attrs.field(default=5.0, validator=_non_negative)
    """Real seconds a "slow" fault holds the response."""
    error_style: ErrorStyle = attrs.field(default="code", validator=_one_of(ERROR_STYLES))
    """Shape of API error bodies: "code", "error_object", "success_false" or "mixed"."""
    max_upload_bytes: int = attrs.field(
        default=10 * 1024 * 1024, validator=[_whole_number, attrs.validators.ge(1)]
    )
    """Largest image `POST /v1/uploads/images` accepts; bigger ones get 413."""
    api_keys: frozenset[str] | None = attrs.field(
        default=None, converter=_to_keys, validator=_check_keys, repr=False
    )
    """Accepted keys; None accepts any non-empty Bearer token. Kept out of `repr`."""
    quirks: bool = attrs.field(default=False, validator=_boolean)
    """Randomly vary response shapes the way real gateways do (see the package docstring)."""
    seed: int | None = attrs.field(default=None, validator=attrs.validators.optional(_whole_number))
    """Seed for every random choice, for reproducible runs."""

    def __attrs_post_init__(self) -> None:
        if self.run_distribution == "uniform" and self.spread >= 1:
            raise ValueError(
                f"spread: must be below 1 with run_distribution='uniform' (got {self.spread})"
            )

    @classmethod
    def realistic(cls, **overrides: Any) -> EmulatorConfig:
        """The "realistic" preset: variable queues, a wide uniform run time, a skewed clock.

        queue_spread 0.3, long_queue_rate 0.05, run_distribution "uniform" with spread
        0.5, clock_offset +3 emulated seconds, linear progress; `overrides` win.
        """
        return cls(**{**REALISTIC, **overrides})


def _to_kind(value: str) -> FaultKind:
    if value not in FAULT_KINDS:
        raise ValueError(f"kind: must be one of {', '.join(sorted(FAULT_KINDS))} (got {value!r})")
    return FaultKind(value)


def _check_fault(fault: Fault) -> None:
    kind = fault.kind.value
    if not KINDS[fault.kind].after and fault.when == "after":
        raise ValueError(f"a {kind} refuses the request: it cannot come after the task was created")
    if fault.code is not None and fault.kind is not FaultKind.TOO_MANY_REQUESTS:
        raise ValueError(f"code: only a 429 carries an upstream code (kind {kind!r})")
    if fault.retry_after is not None:
        if fault.kind is not FaultKind.TOO_MANY_REQUESTS:
            raise ValueError(f"retry_after: only a 429 sends Retry-After (kind {kind!r})")
        if not fault.retry_after or not all(" " <= ch <= "~" for ch in fault.retry_after):
            raise ValueError("retry_after: must be non-empty printable ASCII (a header value)")
    if fault.route == "any":
        if not any(kind_applies(kind, route) for route in API_ROUTES):
            raise ValueError(f"fault kind {kind!r} applies to no API route")
    elif not kind_applies(kind, fault.route):
        raise ValueError(f"fault kind {kind!r} does not apply to route {fault.route!r}")


@attrs.frozen
class Fault:
    """A scripted fault: the next `times` matching requests get `kind` (a `FaultKind`, or
    its value: "429", "reset", ...).

    `route="any"` matches the API routes (submit, status and upload), not storage
    downloads. On submit and upload, `when="before"` fails the request without creating
    anything and `when="after"` creates the task (or stores the image), then fails the
    response (the ambiguous case). `retry_after` (429 only) is sent verbatim as the
    ``Retry-After`` header instead of the config's, e.g. "inf", "-1" or an HTTP date;
    `code` (429 only) is the upstream Kling code its body carries instead of the config's
    ``rate_limit_code`` (1101 in arrears, 1303 too many at once...).
    """

    kind: FaultKind = attrs.field(converter=_to_kind)
    route: Route = attrs.field(default="any", validator=_one_of(ROUTES))
    times: int = attrs.field(default=1, validator=[_whole_number, attrs.validators.ge(1)])
    when: When = attrs.field(default="before", validator=_one_of(WHENS))
    retry_after: str | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.instance_of(str))
    )
    code: int | None = attrs.field(default=None, validator=attrs.validators.optional(_whole_number))

    def __attrs_post_init__(self) -> None:
        _check_fault(self)

    def applies_to(self, route: str) -> bool:
        """Whether this fault should hit a request on the concrete `route`."""
        if self.route == "any":
            return route in API_ROUTES and kind_applies(self.kind, route)
        return self.route == route
