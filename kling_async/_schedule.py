"""When to check a task next: pure functions over what the poller knows, easy to test.

The plan follows the prior art in DESIGN.md:

* no estimate yet → check soon (``min_interval``), to learn ``estimated_time``;
* progress moving → extrapolate the finish from the progress rate;
* otherwise → aim at the early edge of the expected finish, ``created + estimate * r``,
  where ``r`` is a low quantile of the actual/estimate ratios learned from completed tasks;
* past the expected finish (or stuck) → check again after a gap that grows with how
  overdue the task is, so a stuck task costs little while a late one is still caught fast;

every gap clamped to ``[min_interval, max_interval]`` with ±``jitter``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Hashable

import attrs

from ._config import PollPolicy

__all__ = ["Progress", "SpreadModel", "next_delay"]

Kind = Hashable


@attrs.define(slots=True)
class Progress:
    """What one task has shown so far: first and latest (wall time, progress) with progress > 0."""

    first: tuple[float, int] | None = None
    last: tuple[float, int] | None = None

    def observe(self, when: float, progress: int) -> None:
        """Record a progress reading; only readings above 0 say anything about the rate."""
        if progress <= 0:
            return
        if self.first is None:
            self.first = (when, progress)
        if self.last is None or progress != self.last[1]:
            self.last = (when, progress)

    def eta(self, created: float | None) -> float | None:
        """Extrapolated wall time of 100 %, or None if the rate is unknown."""
        if self.last is None:
            return None
        t1, p1 = self.last
        assert self.first is not None
        t0, p0 = self.first
        if p1 > p0 and t1 > t0:
            rate = (p1 - p0) / (t1 - t0)
        elif created is not None and t1 > created:
            rate = p1 / (t1 - created)
        else:
            return None
        return t1 + (100 - p1) / rate


@attrs.define(slots=True)
class SpreadModel:
    """Learns online how actual run times spread around the server's estimate.

    Keeps the mean and variance of ``log(actual / estimate)`` (Welford), starting from a
    prior of "on time, ±30 %", and the latest estimate seen per request kind, so the first
    check of a new task can already aim near its finish.
    """

    prior_sigma: float = 0.3
    prior_weight: float = 4.0
    _n: float = 0.0
    _mean: float = 0.0
    _m2: float = 0.0
    _estimates: dict[Kind, float] = attrs.field(factory=dict)

    def observe(self, estimate: float, actual: float) -> None:
        """Learn from one completed task."""
        if not (estimate > 0 and actual > 0):
            return
        x = math.log(actual / estimate)
        self._n += 1
        delta = x - self._mean
        self._mean += delta / self._n
        self._m2 += delta * (x - self._mean)

    def remember_estimate(self, kind: Kind | None, estimate: float) -> None:
        """Keep the server's latest estimate for this kind of request."""
        if kind is not None and estimate > 0:
            self._estimates[kind] = estimate

    def estimate_for(self, kind: Kind | None) -> float | None:
        """The last estimate seen for this kind, if any."""
        return None if kind is None else self._estimates.get(kind)

    @property
    def samples(self) -> int:
        """How many completed tasks were learned from."""
        return int(self._n)

    def quantile(self, z: float) -> float:
        """The ratio actual/estimate at ``z`` standard deviations (z=-1.28 ≈ 10th percentile)."""
        n, w = self._n, self.prior_weight
        mean = self._mean * n / (n + w)
        variance = (self._m2 + w * self.prior_sigma**2) / (n + w)
        return math.exp(mean + z * math.sqrt(variance))


EARLY_EDGE_Z = -1.28  # aim the first look at about the 10th percentile of the finish time


def next_delay(
    *,
    now: float,
    policy: PollPolicy,
    model: SpreadModel,
    polls: int,
    created: float | None,
    estimate: float | None,
    progress: Progress,
    rng: random.Random | None = None,
) -> float:
    """Seconds from ``now`` (wall time) until this task should be checked again."""
    if estimate is None or estimate <= 0:
        raw = policy.min_interval * 2.0 ** min(polls, 16)
    else:
        start = created if created is not None else now
        expected = start + estimate * model.quantile(EARLY_EDGE_Z)
        eta = progress.eta(created)
        target = eta if eta is not None else expected
        if target > now:
            raw = target - now
        else:
            overdue = now - target
            raw = 0.05 * estimate + 0.25 * overdue
    raw = min(policy.max_interval, max(policy.min_interval, raw))
    if policy.jitter:
        raw *= 1.0 + (rng or random).uniform(-policy.jitter, policy.jitter)
    return max(policy.min_interval * (1.0 - policy.jitter), raw)
