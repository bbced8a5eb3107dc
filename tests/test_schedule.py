"""The schedule's pure decisions: given a belief about the finish, when the next check goes."""

from __future__ import annotations

import math
import random

import pytest

from kling_async import PollPolicy
from kling_async._schedule import LATENCY_GOAL, SURE_SHOT, Belief, plan_check

E = 60.0  # the estimate, seconds
POLICY = PollPolicy(min_interval=2.0, max_interval=30.0, jitter=0.0)
WIDE = PollPolicy(min_interval=0.1, max_interval=600.0, jitter=0.0)


def plan(now: float, belief: Belief | None, policy: PollPolicy = POLICY, polls: int = 1):
    return plan_check(now=now, policy=policy, belief=belief, polls=polls)


def test_without_a_belief_the_first_check_is_soon_then_doubles():
    """With no estimate known, checks go at min_interval, doubling up to max_interval."""
    assert [plan(0, None, polls=n).delay for n in range(6)] == [2, 4, 8, 16, 30, 30]


def test_a_wide_belief_is_first_checked_near_its_early_edge():
    """Nothing is checked before the likely window opens, and the first check comes at
    most LATENCY_GOAL after its early edge."""
    belief = Belief(anchor=0.0, unit=E, mu=0.0, sigma=0.3)
    delay = plan(0.0, belief, WIDE).delay
    assert belief.edge(-2.0) - 1e-9 <= delay <= belief.edge(-2.0) + LATENCY_GOAL * E + 1e-9


def test_a_narrow_belief_gets_one_sure_check_at_its_late_edge():
    """A belief spanning under SURE_SHOT estimates is checked once, at its late edge."""
    sigma = SURE_SHOT * 0.9 / 4  # a span of 4 sigma, just under the threshold
    belief = Belief(anchor=30.0, unit=E, mu=math.log(0.5), sigma=sigma)
    result = plan(30.0, belief, WIDE)
    assert result.likelihood == 1.0
    assert 30.0 + result.delay == pytest.approx(belief.edge(2.0), rel=1e-6)


def test_inside_the_likely_window_no_gap_exceeds_the_goal():
    """Checks of a task whose progress says nothing are at most LATENCY_GOAL apart."""
    belief = Belief(anchor=0.0, unit=E, mu=0.0, sigma=0.3)
    now = belief.edge(-1.0)
    for _ in range(30):
        gap = plan(now, Belief(0.0, E, 0.0, 0.3, after=now), WIDE).delay
        assert gap <= LATENCY_GOAL * E + 1e-6
        now += gap


def test_overdue_gaps_grow_with_the_overrun():
    """Past the late edge, a task that will not end is checked ever less often."""
    belief = Belief(anchor=0.0, unit=E, mu=0.0, sigma=0.1)
    late = belief.edge(2.5)
    gaps = [
        plan(t, Belief(0.0, E, 0.0, 0.1, after=t), WIDE).delay for t in (late + 1, 3 * E, 9 * E)
    ]
    assert gaps == sorted(gaps) and gaps[0] < gaps[-1]
    assert gaps[-1] <= WIDE.max_interval


def test_gaps_are_clamped_to_the_policy():
    """However sure or unsure, a gap stays within [min_interval, max_interval]."""
    tight = Belief(anchor=0.0, unit=E, mu=math.log(0.001), sigma=0.001)
    far = Belief(anchor=0.0, unit=E, mu=math.log(50.0), sigma=0.3)
    assert plan(0.0, tight).delay == POLICY.min_interval
    assert plan(0.0, far).delay == POLICY.max_interval


def test_a_sure_shot_is_only_ever_delayed_by_jitter():
    """Jitter may make a sure check later, never earlier than the late edge."""
    policy = PollPolicy(min_interval=0.1, max_interval=600.0, jitter=0.1)
    belief = Belief(anchor=0.0, unit=E, mu=math.log(0.5), sigma=0.002)
    rng = random.Random(3)
    delays = [
        plan_check(now=0.0, policy=policy, belief=belief, polls=1, rng=rng).delay
        for _ in range(200)
    ]
    assert min(delays) >= belief.edge(2.0) - 1e-9


def test_a_capped_gap_is_only_ever_shortened_by_jitter():
    """Jitter may make a capped gap shorter, never longer than the goal."""
    policy = PollPolicy(min_interval=0.1, max_interval=600.0, jitter=0.1)
    rng = random.Random(4)
    now = E
    belief = Belief(anchor=0.0, unit=E, mu=0.0, sigma=0.3, after=now)
    for _ in range(200):
        gap = plan_check(now=now, policy=policy, belief=belief, polls=1, rng=rng).delay
        assert gap <= LATENCY_GOAL * E + 1e-9


def test_a_longer_learned_early_tail_opens_the_window_earlier():
    """Where samples reach earlier than a lognormal says, checking starts earlier."""
    plain = Belief(anchor=0.0, unit=E, mu=0.0, sigma=0.3)
    tailed = Belief(anchor=0.0, unit=E, mu=0.0, sigma=0.3, early_z=-3.0)
    assert plan(0.0, tailed, WIDE).delay < plan(0.0, plain, WIDE).delay


def test_a_finish_seen_between_two_checks_is_most_likely_where_the_belief_put_it():
    """The median of the belief within the bracket, or its middle if the belief missed it."""
    belief = Belief(anchor=0.0, unit=E, mu=0.0, sigma=0.1)
    assert belief.median_between(0.0, 1e9) == pytest.approx(E, rel=1e-6)
    inside = belief.median_between(55.0, 62.0)
    assert 55.0 < inside < 62.0 and inside > 58.5
    assert belief.median_between(300.0, 310.0) == pytest.approx(305.0)
