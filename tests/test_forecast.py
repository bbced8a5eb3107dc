"""The forecaster: what each answer teaches, and the beliefs it plans from, in virtual time."""

from __future__ import annotations

import email.utils
import itertools
import math
import random
from collections.abc import Callable

import pytest

from kling_async import PollPolicy, TaskSnapshot, TaskStatus
from kling_async._clock import ServerClock
from kling_async._forecast import Forecaster, TaskForecast

E = 60.0
POLICY = PollPolicy(jitter=0.0)  # the defaults at real speed: a 60 s job, 2-30 s gaps
KIND = ("kling-v3", "std", 5, False)

Shape = Callable[[float], int]
LINEAR: Shape = lambda f: min(99, int(100 * f))  # noqa: E731
STEPS: Shape = lambda f: min(3, int(4 * f)) * 25  # noqa: E731
STUCK: Shape = lambda f: 0  # noqa: E731
EASED: Shape = lambda f: min(99, int(100 * (1 - (1 - f) ** 2)))  # noqa: E731


def answer(task_id: str, now: float, start: float, finish: float, shape: Shape) -> TaskSnapshot:
    """What a server reports at ``now`` about a task queued until ``start``."""
    if now >= finish:
        return TaskSnapshot(task_id, TaskStatus.COMPLETED, 100, estimated_time=E)
    if now < start:
        return TaskSnapshot(task_id, TaskStatus.PENDING, 0, estimated_time=E)
    progress = shape((now - start) / (finish - start))
    return TaskSnapshot(task_id, TaskStatus.PROCESSING, progress, estimated_time=E)


def follow(
    forecaster: Forecaster, forecast: TaskForecast, start: float, finish: float, shape: Shape
) -> list[float]:
    """Check one task where its plans say until it is seen done; the check times."""
    now, checks = forecast.planned_at, []
    now += forecaster.plan(forecast, now).delay
    while True:
        checks.append(now)
        snapshot = answer(forecast.task_id, now, start, finish, shape)
        forecaster.observe(forecast, snapshot, now, now)
        if snapshot.status.is_terminal:
            return checks
        assert len(checks) < 300, "the schedule never reached the finish"
        now += forecaster.plan(forecast, now).delay


def batch(
    shape: Shape, queue: Callable[[random.Random], float], n: int = 200, seed: int = 5
) -> tuple[list[float], list[int]]:
    """``n`` tasks submitted together, followed one after the other in one forecaster
    (so each teaches the next): detection delays (fractions of E) and checks per task."""
    rng = random.Random(seed)
    forecaster = Forecaster(POLICY, ServerClock(), random.Random(seed))
    delays, counts = [], []
    for i in range(n):
        start = queue(rng)
        finish = start + E * rng.uniform(0.6, 1.4)
        forecast = forecaster.track(f"task_{i}", KIND, 0.0)
        checks = follow(forecaster, forecast, start, finish, shape)
        delays.append((checks[-1] - finish) / E)
        counts.append(len(checks))
    return delays, counts


def p95(values: list[float]) -> float:
    return sorted(values)[math.ceil(0.95 * len(values)) - 1]


def test_a_task_queued_for_30_percent_is_still_noticed_within_5_percent():
    """Linear progress after a queue of 30 % of the estimate: seen done within 5 %."""
    forecaster = Forecaster(POLICY, ServerClock(), random.Random(1))
    for i in range(40):  # teach it the kind first
        forecast = forecaster.track(f"warm_{i}", KIND, 0.0)
        follow(forecaster, forecast, 0.3 * E, 0.3 * E + E * (0.8 + i / 100), LINEAR)
    forecast = forecaster.track("queued", KIND, 0.0)
    finish = 0.3 * E + 1.1 * E
    checks = follow(forecaster, forecast, 0.3 * E, finish, LINEAR)
    assert (checks[-1] - finish) / E <= 0.05
    assert len(checks) <= 4


@pytest.mark.parametrize(
    ("shape", "most_checks"),
    [(LINEAR, 4.5), (STEPS, 10), (STUCK, 20), (EASED, 10)],
    ids=["linear", "steps", "stuck", "eased"],
)
def test_every_progress_shape_is_noticed_within_5_percent_with_a_variable_queue(shape, most_checks):
    """Whatever the progress shape, over a queue of 0-30 % of the estimate, finishes are
    noticed within 5 % of the estimate at p95, with a bounded number of checks."""
    delays, counts = batch(shape, lambda rng: rng.uniform(0.0, 0.3) * E)
    assert p95(delays) <= 0.05
    assert min(delays) >= 0.0
    assert sum(counts) / len(counts) <= most_checks


def test_a_long_queue_is_never_assumed_away():
    """A task queued for two estimates is followed to its end and noticed promptly."""
    forecaster = Forecaster(POLICY, ServerClock(), random.Random(2))
    for i in range(30):
        forecast = forecaster.track(f"warm_{i}", KIND, 0.0)
        follow(forecaster, forecast, 2.0, 2.0 + E, LINEAR)
    forecast = forecaster.track("late", KIND, 0.0)
    checks = follow(forecaster, forecast, 2 * E, 3 * E, LINEAR)
    assert (checks[-1] - 3 * E) / E <= 0.05
    gaps = [b - a for a, b in itertools.pairwise(checks)]
    assert max(gaps) <= POLICY.max_interval + 1e-9  # never silent


def reattached_checks(offset: float) -> list[float]:
    """Check times of a re-attached task (age known only from the server's `created`)
    when the server's clock is ``offset`` seconds ahead of ours."""
    clock = ServerClock()
    forecaster = Forecaster(POLICY, clock, random.Random(3))
    for i in range(20):
        forecast = forecaster.track(f"warm_{i}", KIND, 0.0)
        follow(forecaster, forecast, 2.0, 2.0 + E, LINEAR)
    epoch = 1_700_000_000.0  # our clock's reading of the server's unix time, less offset
    created_local, now = 100.0, 130.0  # the task was created 30 s before we re-attach
    forecast = forecaster.track("old_task", KIND, None)
    checks = []
    start, finish = created_local + 1.0, created_local + 1.0 + E
    while True:
        checks.append(now)
        date = email.utils.formatdate(math.floor(epoch + offset + now), usegmt=True)
        clock.observe(date, now - 0.01, now + 0.01)
        snapshot = answer("old_task", now, start, finish, STUCK)
        created = math.floor(epoch + offset + created_local)  # whole server seconds
        snapshot = TaskSnapshot(
            "old_task", snapshot.status, snapshot.progress, created=created, estimated_time=E
        )
        forecaster.observe(forecast, snapshot, now - 0.01, now + 0.01)
        if snapshot.status.is_terminal:
            return checks
        now += forecaster.plan(forecast, now).delay


def test_a_server_clock_ten_seconds_off_changes_nothing():
    """Server timestamps are read through the clock learned from Date headers: a server
    10 s ahead (or behind) schedules a re-attached task (whose progress says nothing) the
    same as one in step."""
    in_step = reattached_checks(0.0)
    for offset in (10.0, -10.0, 3.4):
        assert reattached_checks(offset) == pytest.approx(in_step, abs=1.5)
    assert (in_step[-1] - 161.0) / E <= 0.05


def test_without_a_server_clock_a_reattached_task_gets_safe_spacing():
    """With no Date header to read server timestamps by, checks fall back to short,
    doubling gaps, never silence, and the finish is still seen."""
    forecaster = Forecaster(POLICY, ServerClock(), random.Random(4))
    forecast = forecaster.track("no_clock", KIND, None)
    checks = follow(forecaster, forecast, -10.0, 50.0, LINEAR)
    gaps = [b - a for a, b in itertools.pairwise([forecast.planned_at, *checks])]
    assert max(gaps) <= POLICY.max_interval + 1e-9


def test_the_kind_waits_for_one_task_to_learn_its_estimate():
    """While no estimate is known for a kind, one task learns it; the others wait and
    are handed back when it arrives."""
    forecaster = Forecaster(POLICY, ServerClock(), random.Random(5))
    first, *rest = (forecaster.track(f"t{i}", KIND, 0.0) for i in range(4))
    assert not forecaster.needs_learner(first)
    assert all(forecaster.needs_learner(other) for other in rest)
    woken = forecaster.observe(first, answer("t0", 2.0, 0.0, E, LINEAR), 2.0, 2.0)
    assert set(woken) == set(rest)
    assert forecaster.estimate_for(KIND) == E


def test_absurd_numbers_teach_nothing_and_break_nothing():
    """An estimate of 1e300 with an actual time of 5 s neither overflows nor is learned."""
    forecaster = Forecaster(POLICY, ServerClock(), random.Random(6))
    forecast = forecaster.track("absurd", KIND, 0.0)
    for now, status in ((1.0, TaskStatus.PROCESSING), (5.0, TaskStatus.COMPLETED)):
        snapshot = TaskSnapshot("absurd", status, 50, estimated_time=1e300, actual_time=5.0)
        forecaster.observe(forecast, snapshot, now, now)
    assert forecaster.samples == 0
    assert forecaster.estimate_for(KIND) is None
    other = forecaster.track("next", KIND, 0.0)
    assert math.isfinite(forecaster.plan(other, 0.0).delay)


def test_lessons_wait_for_every_earlier_task():
    """A fast finisher teaches only once every task registered before it has ended, so a
    batch's early finishers do not bias the model; a forgotten task holds nothing back."""
    forecaster = Forecaster(POLICY, ServerClock(), random.Random(7))
    slow = forecaster.track("slow", KIND, 0.0)
    forgotten = forecaster.track("forgotten", KIND, 0.0)
    fast = forecaster.track("fast", KIND, 0.0)
    follow(forecaster, fast, 1.0, 0.5 * E, LINEAR)
    assert forecaster.pending_lessons > 0
    forecaster.forget(forgotten)
    assert forecaster.pending_lessons > 0
    follow(forecaster, slow, 1.0, 1.5 * E, LINEAR)
    assert forecaster.pending_lessons == 0 and forecaster.samples > 0


def test_nothing_is_kept_for_tasks_that_ended():
    """Thousands of finished tasks, with or without estimates, leave nothing behind."""
    forecaster = Forecaster(POLICY, ServerClock(), random.Random(8))
    for i in range(2000):
        forecast = forecaster.track(f"t{i}", ("no-estimate", i % 3), 0.0)
        forecaster.needs_learner(forecast)
        snapshot = TaskSnapshot(f"t{i}", TaskStatus.COMPLETED, 100)
        forecaster.observe(forecast, snapshot, 1.0, 1.0)
    assert len(forecaster) == 0
    assert forecaster.pending_lessons == 0
