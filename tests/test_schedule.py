"""The schedule, pinned deterministically: simulated clocks, seeded jitter, no sleeping."""

from __future__ import annotations

import asyncio
import itertools
import math
import random
from typing import Any

import pytest

from kling_async import PollPolicy, TaskSnapshot, TaskStatus
from kling_async._poller import Poller
from kling_async._schedule import (
    LATENCY_GOAL,
    SURE_SHOT,
    Plan,
    Progress,
    SpreadModel,
    plan_check,
)

E = 60.0  # the estimate, seconds
POLICY = PollPolicy(min_interval=2.0, max_interval=30.0, jitter=0.0)
WIDE = PollPolicy(min_interval=1.0, max_interval=600.0, jitter=0.0)
QUEUE = 2.0  # seconds a simulated task is pending before its progress moves


def plan(
    now: float,
    progress: Progress | None = None,
    *,
    policy: PollPolicy = POLICY,
    model: SpreadModel | None = None,
    estimate: float | None = E,
    polls: int = 1,
    rng: random.Random | None = None,
) -> Plan:
    return plan_check(
        now=now,
        policy=policy,
        model=model or SpreadModel(),
        polls=polls,
        created=0.0,
        estimate=estimate,
        progress=progress or Progress(),
        rng=rng,
    )


def reading(shape: str, finish: float, now: float) -> int:
    """What the emulator's progress shapes report at ``now`` for a task ending at ``finish``."""
    fraction = min(max((now - QUEUE) / (finish - QUEUE), 0.0), 1.0)
    if shape == "stuck" or now < QUEUE:
        return 0
    if shape == "steps":
        return min(int(fraction * 4), 3) * 25
    return min(int(fraction * 100), 99)


def follow(
    shape: str, finish: float, *, policy: PollPolicy = POLICY, model: SpreadModel | None = None
) -> list[float]:
    """The check times of one task created at 0 that ends at ``finish``, on a simulated clock."""
    model = model or SpreadModel()
    progress, now, checks = Progress(), 0.0, []
    while now < finish:
        now += plan(now, progress, policy=policy, model=model, polls=len(checks)).delay
        checks.append(now)
        progress.observe(now, reading(shape, finish, now))
        assert len(checks) < 200, "the schedule never reached the finish"
    return checks


def trained(bias: float = 0.0, sigma: float = 0.25, n: int = 400) -> SpreadModel:
    model = SpreadModel()
    rng = random.Random(7)
    for _ in range(n):
        model.observe(E, E * rng.lognormvariate(bias, sigma))
    return model


# -- first check -------------------------------------------------------------------------


def test_without_an_estimate_the_first_check_is_soon_then_doubles():
    """No estimate known: check after min_interval to learn one, doubling up to the ceiling."""
    gaps = [plan(0.0, estimate=None, polls=n).delay for n in range(7)]
    assert gaps == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_with_an_estimate_the_first_check_aims_at_the_early_edge():
    """Knowing the estimate, the first check lands at the early edge of the likely finish."""
    model = SpreadModel()
    first = plan(0.0, policy=WIDE, model=model, polls=0)
    assert E * model.quantile(-2.5) < first.delay < E * model.quantile(-1.5)
    assert first.likelihood < 0.1


def test_the_first_check_respects_the_ceiling():
    """A long job is still looked at within max_interval."""
    assert plan(0.0, polls=0, estimate=600.0).delay == 30.0


# -- progress ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "step"), [((48, 88), 1), ((50, 75), 25), ((30, 70), 10), ((61,), 1), ((50,), 50)]
)
def test_progress_step_is_read_from_the_values(values, step):
    """Coarse progress shows in the readings' common factor; a factor below 5 is chance."""
    progress = Progress()
    for i, value in enumerate(values):
        progress.observe(float(i), value)
    assert progress.step == step


def test_progress_ignores_zero_hundred_and_going_back():
    """0 (not started), 100 and a value going backwards leave the readings unchanged."""
    progress = Progress()
    for when, value in ((1.0, 0), (2.0, 40), (3.0, 100), (4.0, 30)):
        progress.observe(when, value)
    assert (progress.first, progress.last, progress.last_until) == (40, 40, 2.0)
    assert Progress().bounds(0.0, 3.0) == (-math.inf, math.inf)


def test_two_readings_bound_the_finish_tightly():
    """Linear progress read twice brackets the finish within a few percent of the run."""
    progress = Progress()
    progress.observe(20.0, 30)  # a task going 0 -> 100 from t=2 to t=62 reads 30 at 20
    progress.observe(50.6, 81)
    lo, hi = progress.bounds(0.0, 3.0)
    assert lo <= 62.0 <= hi
    assert hi - lo < 2.0


def test_one_reading_bounds_the_finish_by_the_start_lag():
    """One reading: the finish is no later than at the rate since creation, no earlier than
    at the rate since the latest start allowed."""
    progress = Progress()
    progress.observe(30.0, 46)
    lo, hi = progress.bounds(0.0, 3.0)
    assert hi == pytest.approx(30.0 * 100 / 46)
    assert lo == pytest.approx(3.0 + 27.0 * 100 / 47)


# -- extrapolation ---------------------------------------------------------------------------


@pytest.mark.parametrize("ratio", [0.7, 0.85, 1.0, 1.2, 1.5])
def test_linear_progress_is_caught_in_three_checks_just_after_the_finish(ratio):
    """Extrapolating progress: at most three checks, the last one just after the finish."""
    finish = E * ratio
    checks = follow("linear", finish)
    assert len(checks) <= 3
    assert 0.0 <= checks[-1] - finish <= SURE_SHOT * E * 1.5


def test_a_narrow_band_gets_one_sure_check_at_its_end():
    """Once the band is narrower than SURE_SHOT, the check lands on its late edge."""
    progress = Progress()
    progress.observe(20.0, 30)
    progress.observe(50.6, 81)
    _, hi = progress.bounds(0.0, 0.05 * E)
    sure = plan(50.6, progress)
    assert sure.likelihood == 1.0
    assert sure.delay == pytest.approx(hi - 50.6)


def test_one_reading_checks_before_the_finish_to_narrow_the_band():
    """After one reading the next check comes before the finish, where it reads progress."""
    finish = 66.0
    progress = Progress()
    progress.observe(30.0, reading("linear", finish, 30.0))
    refine = plan(30.0, progress)
    assert refine.likelihood < 0.5
    assert 30.0 + refine.delay < finish


def test_progress_that_stops_explaining_the_task_is_ignored():
    """Still running past the band's late edge: fall back to the prior, no crash, no stall."""
    progress = Progress()
    progress.observe(20.0, 30)
    progress.observe(50.6, 81)
    late = plan(90.0, progress)
    assert POLICY.min_interval <= late.delay <= POLICY.max_interval
    assert late.likelihood < 1.0


# -- stuck progress ---------------------------------------------------------------------------


def test_stuck_progress_is_checked_no_wider_than_the_goal_inside_the_window():
    """Progress stuck at 0: inside the likely window gaps are at most LATENCY_GOAL."""
    model = trained()
    checks = follow("stuck", 1.3 * E, policy=WIDE, model=model)
    inside = [b - a for a, b in itertools.pairwise(checks) if a > 0.8 * E]
    assert inside
    assert max(inside) <= LATENCY_GOAL * E + 1e-9
    assert checks[-1] - 1.3 * E <= LATENCY_GOAL * E


def test_stuck_checks_skip_the_time_before_the_likely_finish():
    """A stuck task is not checked again between the first look and the early edge."""
    model = trained()
    checks = follow("stuck", E, policy=WIDE, model=model)
    assert sum(1 for t in checks if t < model.quantile(-2.5) * E) <= 1


def test_overdue_gaps_grow_with_the_overrun():
    """Far past every plausible finish, the gap grows with how overdue the task is."""
    model = trained()
    gaps = [plan(E * x, policy=WIDE, model=model).delay for x in (2.5, 4.0, 8.0)]
    assert gaps == sorted(gaps)
    assert gaps[-1] > 4 * gaps[0]


# -- clamping and jitter -----------------------------------------------------------------------


def test_gaps_are_clamped_to_the_policy():
    """Every gap lies in [min_interval, max_interval] whatever the state."""
    progress = Progress()
    progress.observe(20.0, 30)
    progress.observe(59.0, 95)
    assert plan(59.9, progress).delay == POLICY.min_interval
    assert plan(0.0, polls=0, estimate=6000.0).delay == POLICY.max_interval
    assert plan(E * 50, model=trained()).delay == POLICY.max_interval


def test_a_sure_shot_is_only_ever_delayed_by_jitter():
    """Jitter never moves a check aimed at a sure finish earlier."""
    progress = Progress()
    progress.observe(20.0, 30)
    progress.observe(50.6, 81)
    exact = plan(50.6, progress).delay
    jittery = PollPolicy(min_interval=2.0, max_interval=30.0, jitter=0.1)
    rng = random.Random(3)
    delays = [plan(50.6, progress, policy=jittery, rng=rng).delay for _ in range(200)]
    assert min(delays) >= exact
    assert max(delays) <= exact * 1.05 + 1e-9


def test_a_capped_gap_is_only_ever_shortened_by_jitter():
    """Jitter never widens a gap capped at the latency goal."""
    model = trained()
    jittery = PollPolicy(min_interval=1.0, max_interval=600.0, jitter=0.1)
    rng = random.Random(4)
    delays = [plan(E, policy=jittery, model=model, rng=rng).delay for _ in range(200)]
    assert max(delays) <= LATENCY_GOAL * E + 1e-9
    assert min(delays) >= 0.9 * LATENCY_GOAL * E - 1e-9


# -- learning the spread ---------------------------------------------------------------------


def test_the_spread_model_learns_mean_and_spread():
    """Hundreds of completions pull the prior to the true mean and spread of log(actual/est)."""
    model = trained(bias=math.log(1.5), sigma=0.1)
    assert model.samples == 400
    assert model.mu == pytest.approx(math.log(1.5), abs=0.02)
    assert model.sigma == pytest.approx(0.1, abs=0.02)
    assert model.quantile(0.0) == pytest.approx(math.exp(model.mu))


def test_few_completions_barely_move_the_prior():
    """One odd task does not swing the model: the prior weighs like several tasks."""
    model = SpreadModel()
    model.observe(E, 3 * E)
    assert 0 < model.mu < math.log(3) / 2
    model.observe(0.0, E)  # ignored
    assert model.samples == 1


def test_learning_that_tasks_run_late_moves_the_first_check_later():
    """When tasks take 1.5x their estimate, the first check aims later than on the prior."""
    prior = plan(0.0, policy=WIDE, polls=0).delay
    late = plan(0.0, policy=WIDE, polls=0, model=trained(bias=math.log(1.5))).delay
    assert late > 1.3 * prior


def test_learning_a_tight_spread_makes_stuck_checks_start_later():
    """A consistent server (small spread) lets the first look wait for the likely finish."""
    loose = plan(0.0, policy=WIDE, polls=0, model=trained(sigma=0.4)).delay
    tight = plan(0.0, policy=WIDE, polls=0, model=trained(sigma=0.05)).delay
    assert tight > loose


# -- the poller's use of the schedule ------------------------------------------------------------


class IdleTransport:
    """A transport that is never called (these tests drive the poller by hand)."""

    def task_path(self, task_id: str) -> str:
        return task_id

    async def request_json(self, method: str, path: str, body: Any = None) -> Any:
        raise AssertionError("not expected to be called")


class Unlimited:
    """A rate limiter that always lets the request go."""

    def reserve(self, now: float) -> float:
        return 0.0


def snapshot(task_id: str, status: str = "processing", **fields: Any) -> TaskSnapshot:
    return TaskSnapshot(id=task_id, status=TaskStatus(status), **fields)


async def test_over_budget_the_likeliest_done_tasks_are_checked_first():
    """With one request allowed, the due task most likely done goes before older due ones."""
    poller = Poller(IdleTransport(), PollPolicy(max_requests_per_second=1))  # type: ignore[arg-type]
    poller._ensure_driver = lambda: None  # type: ignore[method-assign]
    launched: list[str] = []

    async def check(entry: Any) -> None:
        launched.append(entry.task_id)

    poller._check = check  # type: ignore[method-assign]
    loop = asyncio.get_running_loop()
    try:
        for name, boost in (("unlikely", 0.0), ("likely", 6.0), ("middling", 2.0)):
            entry = poller._entry(name, None)
            poller._schedule(entry, 0.0)
            entry.boost = boost
        poller._heap = [(due - 5.0, seq, tid) for due, seq, tid in poller._heap]  # all overdue
        poller._launch_due(loop)
        await asyncio.sleep(0)
        assert launched == ["likely"]
        poller._limiter = Unlimited()  # type: ignore[assignment]
        poller._launch_due(loop)
        await asyncio.sleep(0)
        assert launched == ["likely", "middling", "unlikely"]
    finally:
        await poller.close()


async def test_one_task_per_kind_learns_the_estimate_for_the_others():
    """Tasks of a kind with no estimate yet: one checks soon, the rest wait, then aim."""
    policy = PollPolicy(min_interval=2.0, max_interval=30.0, jitter=0.0)
    poller = Poller(IdleTransport(), policy)  # type: ignore[arg-type]
    poller._ensure_driver = lambda: None  # type: ignore[method-assign]
    loop = asyncio.get_running_loop()
    try:
        entries = [poller._entry(f"t{i}", "std-5s") for i in range(5)]
        start = loop.time()
        dues = {tid: due - start for due, _, tid in poller._heap}
        assert dues["t0"] == pytest.approx(2.0, abs=0.05)
        assert all(dues[f"t{i}"] == pytest.approx(8.0, abs=0.05) for i in range(1, 5))
        learner = entries[0]
        learner.seq = -1  # its check is in flight
        poller._deliver(learner, snapshot("t0", estimated_time=E, created=learner.created), 0.0)
        current = {tid: due - start for due, seq, tid in poller._heap if poller._current(seq, tid)}
        assert all(current[f"t{i}"] > 20.0 for i in range(1, 5))  # aiming near their finish
        assert poller.model.estimate_for("std-5s") == E
        later = poller._entry("t9", "std-5s")
        assert later.seq != -1 and "std-5s" not in poller._learning
    finally:
        await poller.close()


async def test_completions_teach_the_model_in_registration_order():
    """A fast task finishing first is learned only once every earlier task has ended too."""
    poller = Poller(IdleTransport(), POLICY)  # type: ignore[arg-type]
    poller._ensure_driver = lambda: None  # type: ignore[method-assign]
    try:
        slow, fast = poller._entry("slow", None), poller._entry("fast", None)
        fast.seq = slow.seq = -1
        poller._deliver(fast, snapshot("fast", "completed", estimated_time=E, actual_time=40.0), 0)
        assert poller.model.samples == 0
        poller._deliver(slow, snapshot("slow", "completed", estimated_time=E, actual_time=90.0), 0)
        assert poller.model.samples == 2
    finally:
        await poller.close()


async def test_a_task_id_watched_again_does_not_hold_back_learning():
    """An id awaited again after it ended does not block lessons of tasks registered before."""
    poller = Poller(IdleTransport(), POLICY)  # type: ignore[arg-type]
    poller._ensure_driver = lambda: None  # type: ignore[method-assign]
    try:
        first = poller._entry("a", None)
        first.seq = -1
        poller._deliver(first, snapshot("a", "completed", estimated_time=E, actual_time=50.0), 0)
        assert poller.model.samples == 1
        other = poller._entry("b", None)
        poller._entry("a", None)  # awaited again, registered after "b"
        other.seq = -1
        poller._deliver(other, snapshot("b", "completed", estimated_time=E, actual_time=70.0), 0)
        assert poller.model.samples == 2
    finally:
        await poller.close()
