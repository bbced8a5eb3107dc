"""When to check a task next: pure functions over what the poller knows, easy to test.

The finish time T of a task is uncertain; the schedule keeps a belief about it and spends
checks where T is likely:

* the *prior*: ``T = created + estimate * r`` with ``log r ~ N(mu, sigma^2)``, learned
  online from completed tasks (:class:`SpreadModel`);
* *progress* cuts that to a band: if progress grows linearly from a start no earlier than
  ``created`` (and at most ``MAX_START_LAG`` estimates later: the queue) until T, each
  reading, quantised to the step the readings show, bounds T on both sides, and two
  readings bound it tightly (:meth:`Progress.bounds`);
* every check that found the task running: ``T > now``.

The next check then:

* lands on the late edge of the band when the band is narrow (``SURE_SHOT`` estimates):
  one check that surely finds the task done, at most that late;
* otherwise lands at the first time ``t`` where the expected delay of noticing a finish in
  ``(now, t]`` reaches the cost of one check (``CHECK_COST`` estimates). This is Keller's
  rule in integral form: for a constant hazard h it spaces checks by sqrt(2c/h); the first
  check lands at the early edge of the likely finish, and a check inside a wide progress
  band lands early in it, where its reading narrows the band. Inside the likely window
  (past ``EARLY_Z``) no gap exceeds ``LATENCY_GOAL`` estimates, which bounds the p95
  detection delay of tasks whose progress says nothing (stuck at 0);
* past the late edge of the prior (``LATE_Z``: the estimate was wrong, or the task hangs)
  at a gap that grows with the overrun;
* with no estimate yet: soon (``min_interval``, doubling) to learn one.

Every gap is clamped to ``[min_interval, max_interval]`` and jittered by up to
``policy.jitter``: a sure shot only later, a capped gap only sooner, others either way.
Each plan also says how likely the task is done at that check, so a session over its rate
budget checks those first.
"""

from __future__ import annotations

import math
import random
from collections.abc import Hashable

import attrs

from ._config import PollPolicy

__all__ = ["Plan", "Progress", "SpreadModel", "plan_check"]

Kind = Hashable

CHECK_COST = 0.003
"""What one check is worth, in detection delay, as a fraction of the estimate."""
SURE_SHOT = 0.03
"""A progress band at most this wide (fraction of the estimate) gets one check at its end."""
MAX_START_LAG = 0.05
"""Most of the estimate a task may spend queued before its progress starts to move."""
LATENCY_GOAL = 0.035
"""Inside the likely window (past ``EARLY_Z``) no gap is wider than this fraction of the
estimate, so a finish there is noticed at most that late."""
EARLY_Z = -2.0
"""The early edge of the likely window, in standard deviations of the learned spread."""
LATE_Z = 2.5
"""Past this many standard deviations of the learned spread, a task counts as overdue."""
OVERDUE_BASE = 0.03
OVERDUE_GROWTH = 0.25
"""An overdue task's gap: ``OVERDUE_BASE`` estimates plus this fraction of the overrun."""
_SQRT2 = math.sqrt(2.0)
_TINY = 1e-12


def _upper(z: float) -> float:
    """P(Z > z) for a standard normal, accurate far into the upper tail."""
    return 0.5 * math.erfc(z / _SQRT2)


@attrs.define(slots=True)
class Progress:
    """Progress readings above 0 of one task: the first and the latest value, each with the
    first and the last wall time it was seen (the earliest sighting bounds the finish from
    above, the latest from below)."""

    first: int = 0
    first_since: float = 0.0
    first_until: float = 0.0
    last: int = 0
    last_since: float = 0.0
    last_until: float = 0.0

    def observe(self, when: float, progress: int) -> None:
        """Record a reading; 0 (not started), 100 and values going backwards say nothing."""
        if not 0 < progress < 100:
            return
        if self.first == 0:
            self.first = self.last = progress
            self.first_since = self.first_until = self.last_since = self.last_until = when
        elif progress == self.last:
            self.last_until = when
            if progress == self.first:
                self.first_until = when
        elif progress > self.last:
            self.last, self.last_since, self.last_until = progress, when, when

    @property
    def step(self) -> int:
        """The quantum the readings show: 25 for 50 and 75, 10 for 30 and 70, but 1 for 48
        and 88 (a common factor below 5 is taken for chance, not for coarse progress)."""
        step = math.gcd(math.gcd(self.first, self.last), 100)
        return step if step >= 5 else 1

    def bounds(self, created: float | None, lag: float) -> tuple[float, float]:
        """Earliest and latest finish consistent with progress linear in time (±inf if
        unknown), the start at most ``lag`` seconds after ``created``."""
        if self.first == 0:
            return -math.inf, math.inf
        step = self.step
        lo, hi = -math.inf, math.inf
        if created is not None:
            hi = created + (self.first_since - created) * 100 / self.first
            start = min(self.last_until, created + lag)
            lo = start + (self.last_until - start) * 100 / min(100, self.last + step)
        if self.last > self.first:
            rise = self.last - self.first
            span = self.last_until - self.first_since
            lo = max(lo, self.last_until + span * max(0, 100 - self.last - step) / (rise + step))
            gap = self.last_since - self.first_until
            if rise > step and gap > 0:
                hi = min(hi, self.last_since + gap * (100 - self.last) / (rise - step))
        return lo, hi


@attrs.define(slots=True)
class SpreadModel:
    """Learns online how actual run times spread around the server's estimate.

    Keeps the mean and variance of ``log(actual / estimate)`` (Welford), starting from a
    prior of "on time, ±30 %" worth ``prior_weight`` tasks, and the latest estimate seen
    per request kind, so the first check of a new task can already aim near its finish.
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

    @property
    def mu(self) -> float:
        """Mean of log(actual/estimate), shrunk towards 0 while few tasks are known."""
        return self._mean * self._n / (self._n + self.prior_weight)

    @property
    def sigma(self) -> float:
        """Spread of log(actual/estimate), the prior's until enough tasks are known."""
        w = self.prior_weight
        return math.sqrt((self._m2 + w * self.prior_sigma**2) / (self._n + w))

    def quantile(self, z: float) -> float:
        """The ratio actual/estimate at ``z`` standard deviations (z=-1.28 ≈ 10th percentile)."""
        return math.exp(self.mu + z * self.sigma)


@attrs.frozen
class Plan:
    """When to check next (seconds from now) and how likely the task is done by then."""

    delay: float
    likelihood: float


class _Belief:
    """The learned lognormal spread of a finish, in units of the estimate after ``created``."""

    __slots__ = ("mean", "mu", "sigma")

    def __init__(self, mu: float, sigma: float) -> None:
        self.mu = mu
        self.sigma = max(sigma, 1e-3)
        self.mean = math.exp(mu + self.sigma**2 / 2)

    def edge(self, z: float) -> float:
        """The finish at ``z`` standard deviations."""
        return math.exp(self.mu + z * self.sigma)

    def tails(self, x: float) -> tuple[float, float]:
        """P(finish > x) and E[finish; finish > x] (the partial expectation above x)."""
        if x == math.inf:
            return 0.0, 0.0
        z = (math.log(max(x, _TINY)) - self.mu) / self.sigma
        return _upper(z), self.mean * _upper(z - self.sigma)


class _Window:
    """The belief conditioned on a finish in ``(a, b]``: what a check at ``t`` costs in
    expected detection delay, and how likely it finds the task done."""

    __slots__ = ("a", "b", "belief", "mass", "survival_a", "tail_a")

    def __init__(self, belief: _Belief, a: float, b: float) -> None:
        self.belief, self.a, self.b = belief, a, b
        self.survival_a, self.tail_a = belief.tails(a)
        self.mass = self.survival_a - belief.tails(b)[0]

    def delay(self, t: float) -> float:
        """Expected delay (unconditioned) if a check at ``t`` catches a finish in (a, t]."""
        survival, tail = self.belief.tails(t)
        return t * (self.survival_a - survival) - (self.tail_a - tail)

    def done_by(self, t: float) -> float:
        """P(finish <= t | finish in (a, b])."""
        return (self.survival_a - self.belief.tails(t)[0]) / max(self.mass, _TINY)


def _keller(window: _Window, cost: float) -> tuple[float, float]:
    """First ``t`` in ``(a, b]`` whose expected delay in ``(a, t]`` reaches ``cost``
    (conditioned on a finish in the window), and P(finish <= t)."""
    a, b, mass = window.a, window.b, window.mass
    if mass <= _TINY:
        if b == math.inf:
            return math.inf, 0.0
        t = min(b, a + math.sqrt(2 * cost * (b - a)))  # the prior knows nothing here: uniform
        return t, (t - a) / (b - a)
    goal = cost * mass
    if b < math.inf and window.delay(b) <= goal:
        return b, 1.0
    low, high = a, b
    if high == math.inf:
        high = max(2 * a, window.belief.edge(3.0))
        while window.delay(high) < goal:
            low, high = high, 2 * high
    while high - low > 1e-3:
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
    model: SpreadModel,
    polls: int,
    created: float | None,
    estimate: float | None,
    progress: Progress,
    rng: random.Random | None = None,
) -> Plan:
    """When to check a task next (wall-clock ``now``), and how likely it is done by then."""
    if estimate is None or estimate <= 0:
        return Plan(_jittered(policy, policy.min_interval * 2.0 ** min(polls, 16), rng, 0), 0.0)
    start = created if created is not None else now
    lo, hi = progress.bounds(created, MAX_START_LAG * estimate)
    lo = max(lo, now)
    if hi <= lo:  # still running past the band: progress does not explain this task
        lo, hi = now, math.inf
    if hi - lo <= SURE_SHOT * estimate:
        return Plan(_jittered(policy, hi - now, rng, 1), 1.0)
    belief = _Belief(model.mu, model.sigma)
    a, b = (lo - start) / estimate, (hi - start) / estimate
    t, likelihood, sign = _target(belief, a, b)
    return Plan(_jittered(policy, start + t * estimate - now, rng, sign), likelihood)


def _target(belief: _Belief, a: float, b: float) -> tuple[float, float, int]:
    """The next check in estimate units after ``created`` for a finish in ``(a, b]``, the
    chance it finds the task done, and which way it may be jittered."""
    late = belief.edge(LATE_Z)
    if b == math.inf and a > late:  # overdue: back off as the overrun grows
        return a + OVERDUE_BASE + OVERDUE_GROWTH * (a - late), 0.0, 0
    window = _Window(belief, a, b)
    early = belief.edge(EARLY_Z)
    capped = a + LATENCY_GOAL
    if a >= early and capped < b and window.delay(capped) < CHECK_COST * window.mass:
        return capped, window.done_by(capped), -1  # in the likely window: no gap over the goal
    t, likelihood = _keller(window, CHECK_COST)
    if t == math.inf:
        return a + OVERDUE_BASE, 0.0, 0
    if t < early <= b:  # before the window: wait for its early edge
        t, likelihood = early, window.done_by(early)
    return t, likelihood, 1 if likelihood >= 1.0 else 0
