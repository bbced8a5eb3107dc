"""When to check a task next: pure functions of a belief about its finish, easy to test.

A :class:`Belief` says the finish time is ``anchor + unit * X`` with ``X`` lognormal, and
that it is known to come after ``after`` (the task was seen running then). ``unit`` is the
server's estimate of the task, so every goal below is a fraction of the estimate, at any
time scale. The forecaster (``_forecast``) builds beliefs from what it learned; this module
only decides, given one, when the next check goes:

* a belief narrow enough (its likely span under ``SURE_SHOT`` estimates) gets one check
  at its late edge (``SURE_Z``): the check that surely finds the task done, at most that late;
* otherwise the check lands at the first time ``t`` where the expected delay of noticing
  a finish in ``(now, t]`` reaches the cost of one check (``CHECK_COST`` estimates). This
  is Keller's rule in integral form: for a constant hazard h it spaces checks by
  sqrt(2c/h); the first check lands near the early edge of the likely finish, and a check
  inside a wide belief lands early in it, where the reading it brings narrows the belief.
  Inside the likely window (past ``EARLY_Z``) no gap exceeds ``LATENCY_GOAL`` estimates,
  which bounds the detection delay of tasks whose progress says nothing;
* past the late edge (``LATE_Z``: the belief was wrong, or the task hangs) at a gap that
  grows with the overrun, never silent;
* with no estimate at all: soon (``min_interval``), doubling, up to ``max_interval``.

Every gap is clamped to ``[min_interval, max_interval]`` and jittered by up to
``policy.jitter``: a sure shot only later, a capped gap only sooner, others either way.
Each plan also says how likely the task is done at that check, so a session over its
rate budget checks those first.
"""

from __future__ import annotations

import math
import random
import statistics

import attrs

from ._config import PollPolicy

__all__ = ["Belief", "Plan", "plan_check"]

CHECK_COST = 0.003
"""What one check is worth, in detection delay, as a fraction of the estimate."""
SURE_SHOT = 0.03
"""A belief whose likely span is at most this (fraction of the estimate) gets one check."""
LATENCY_GOAL = 0.04
"""Inside the likely window no gap is wider than this fraction of the estimate."""
EARLY_Z = -2.0
"""The early edge of the likely window, in standard deviations of the belief."""
SURE_Z = 2.0
"""Where a sure shot lands, in standard deviations (about the 98th percentile)."""
LATE_Z = 2.5
"""Past this many standard deviations, a task counts as overdue."""
OVERDUE_BASE = 0.03
OVERDUE_GROWTH = 0.25
"""An overdue task's gap: ``OVERDUE_BASE`` estimates plus this fraction of the overrun."""
_SQRT2 = math.sqrt(2.0)
_TINY = 1e-12
_NORMAL = statistics.NormalDist()


def _upper(z: float) -> float:
    """P(Z > z) for a standard normal, accurate far into the upper tail."""
    return 0.5 * math.erfc(z / _SQRT2)


@attrs.frozen
class Belief:
    """The finish is at ``anchor + unit * X``, ``log X ~ N(mu, sigma^2)``, and after ``after``.

    Times are seconds on one clock (the poller's); ``unit`` is the task's estimate in
    seconds, the yardstick of every goal.
    """

    anchor: float
    unit: float
    mu: float
    sigma: float
    after: float = -math.inf
    early_z: float = EARLY_Z
    """Where the likely window starts, in standard deviations (lower where what was
    learned has a longer early tail than a lognormal)."""
    late_z: float = LATE_Z
    """Where the belief ends and a task counts as overdue, in standard deviations."""

    def edge(self, z: float) -> float:
        """The finish at ``z`` standard deviations, in seconds."""
        return self.anchor + self.unit * math.exp(self.mu + z * self.sigma)

    def median_between(self, low: float, high: float) -> float:
        """The median finish given that it fell in ``(low, high]`` (seconds): what a
        finish seen only between two checks most likely was, by this belief."""
        sigma = max(self.sigma, 1e-3)

        def cdf(t: float) -> float:
            x = (t - self.anchor) / self.unit
            return 0.0 if x <= 0 else _NORMAL.cdf((math.log(x) - self.mu) / sigma)

        low_p, high_p = cdf(low), cdf(high)
        if not high_p - low_p > 1e-9:  # the belief put no weight there: it was wrong
            return (low + high) / 2 if math.isfinite(low) else high
        z = _NORMAL.inv_cdf(min(1 - 1e-12, max(1e-12, (low_p + high_p) / 2)))
        return min(high, max(low, self.anchor + self.unit * math.exp(self.mu + z * sigma)))


@attrs.frozen
class Plan:
    """When to check next (seconds from now) and how likely the task is done by then."""

    delay: float
    likelihood: float


class _Lognormal:
    """``X`` of a belief: tail probabilities and partial expectations."""

    __slots__ = ("mean", "mu", "sigma")

    def __init__(self, mu: float, sigma: float) -> None:
        self.mu = mu
        self.sigma = max(sigma, 1e-3)
        self.mean = math.exp(mu + self.sigma**2 / 2)

    def edge(self, z: float) -> float:
        return math.exp(self.mu + z * self.sigma)

    def tails(self, x: float) -> tuple[float, float]:
        """P(X > x) and E[X; X > x] (the partial expectation above x)."""
        if x == math.inf:
            return 0.0, 0.0
        if x <= 0:
            return 1.0, self.mean
        z = (math.log(max(x, _TINY)) - self.mu) / self.sigma
        return _upper(z), self.mean * _upper(z - self.sigma)


class _Window:
    """``X`` conditioned on a finish in ``(a, b]``: what a check at ``t`` costs in expected
    detection delay, and how likely it finds the task done."""

    __slots__ = ("a", "b", "dist", "mass", "survival_a", "tail_a")

    def __init__(self, dist: _Lognormal, a: float, b: float) -> None:
        self.dist, self.a, self.b = dist, a, b
        self.survival_a, self.tail_a = dist.tails(a)
        self.mass = self.survival_a - dist.tails(b)[0]

    def delay(self, t: float) -> float:
        """Expected delay (unconditioned) if a check at ``t`` catches a finish in (a, t]."""
        survival, tail = self.dist.tails(t)
        return t * (self.survival_a - survival) - (self.tail_a - tail)

    def done_by(self, t: float) -> float:
        """P(finish <= t | finish in (a, b])."""
        return (self.survival_a - self.dist.tails(t)[0]) / max(self.mass, _TINY)


def _keller(window: _Window, cost: float) -> tuple[float, float]:
    """First ``t`` in ``(a, b]`` whose expected delay in ``(a, t]`` reaches ``cost``
    (conditioned on a finish in the window), and P(finish <= t)."""
    a, b, mass = window.a, window.b, window.mass
    if mass <= _TINY:
        if b == math.inf:
            return math.inf, 0.0
        t = min(b, a + math.sqrt(2 * cost * (b - a)))  # the belief knows nothing here: uniform
        return t, (t - a) / (b - a)
    goal = cost * mass
    if b < math.inf and window.delay(b) <= goal:
        return b, 1.0
    low, high = a, b
    if high == math.inf:
        high = max(2 * a, a + cost, window.dist.edge(3.0))
        while window.delay(high) < goal:
            low, high = high, 2 * high
    while high - low > 1e-4:
        mid = (low + high) / 2
        if window.delay(mid) < goal:
            low = mid
        else:
            high = mid
    return high, window.done_by(high)


def _jittered(policy: PollPolicy, delay: float, rng: random.Random | None, sign: int) -> float:
    """Clamp a gap to the policy and jitter it: ``sign`` > 0 only delays (a sure shot must
    not come early), < 0 only advances (a capped gap must not grow), 0 goes either way."""
    raw = min(policy.max_interval, max(policy.min_interval, delay))
    if not policy.jitter:
        return raw
    draw = (rng or random).random()
    if sign > 0:
        return raw * (1.0 + draw * policy.jitter / 2)
    raw *= 1.0 - draw * policy.jitter if sign < 0 else 1.0 + (2 * draw - 1) * policy.jitter
    return max(policy.min_interval * (1.0 - policy.jitter), raw)


def plan_check(
    *,
    now: float,
    policy: PollPolicy,
    belief: Belief | None,
    polls: int,
    rng: random.Random | None = None,
) -> Plan:
    """When to check a task next, and how likely it is done by then (``now`` on the
    belief's clock). Without a belief (no estimate known): soon, then doubling."""
    if belief is None or not belief.unit > 0:
        return Plan(_jittered(policy, policy.min_interval * 2.0 ** min(polls, 16), rng, 0), 0.0)
    unit, anchor = belief.unit, belief.anchor
    dist = _Lognormal(belief.mu, belief.sigma)
    a = max(0.0, (max(now, belief.after) - anchor) / unit)
    early = dist.edge(min(EARLY_Z, belief.early_z))
    late = dist.edge(max(LATE_Z, belief.late_z))
    sure = dist.edge(SURE_Z)
    if sure - max(a, early) <= SURE_SHOT and sure > a:
        return Plan(_jittered(policy, anchor + sure * unit - now, rng, 1), 1.0)
    t, likelihood, sign = _target(dist, a, early, late)
    return Plan(_jittered(policy, anchor + t * unit - now, rng, sign), likelihood)


def _target(dist: _Lognormal, a: float, early: float, late: float) -> tuple[float, float, int]:
    """The next check in units after the anchor for a finish after ``a`` (the likely
    window from ``early`` to ``late``), the chance it finds the task done, and which way
    it may be jittered."""
    if a > late:  # overdue: back off as the overrun grows
        return a + OVERDUE_BASE + OVERDUE_GROWTH * (a - late), 0.0, 0
    window = _Window(dist, a, math.inf)
    t, likelihood = _keller(window, CHECK_COST)
    capped = max(a, early) + LATENCY_GOAL
    if t >= capped:  # in the likely window: no gap over the goal
        return capped, window.done_by(capped), -1
    if t < early:  # before the window: wait for its early edge
        t, likelihood = early, window.done_by(early)
    return t, likelihood, 1 if likelihood >= 1.0 else 0
