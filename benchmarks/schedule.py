"""Benchmark: the poll schedule on a matrix of worlds, in virtual time.

    python benchmarks/schedule.py                  # the whole matrix, 600 tasks per row
    python benchmarks/schedule.py --tasks 2000 --shapes linear,eased

Runs the SDK's own :class:`~kling_async._forecast.Forecaster` (the code that decides
every check of the shared poller) against simulated tasks, with no network and no
wall clock: each row takes a fraction of a second and is exactly reproducible for a
seed, so the whole matrix can be judged side by side in one run. ``poller.py`` measures
the same schedule end to end against the emulator; this one isolates the schedule.

A world is a progress shape x a queue model x a run-time model:

* shapes: ``linear``; ``steps`` (0/25/50/75); ``stuck`` (0 until done); ``eased``
  (fast start, slow finish: 100(1-(1-f)^2));
* queues: ``fixed`` (2 s of a 60 s job: the emulator's old default), ``realistic``
  (uniform over 0-30 % of the estimate, and 5 % of tasks wait 1-2 estimates, as when an
  account's concurrency slots are full);
* run times: ``lognormal`` (sigma 0.25) or ``uniform`` (0.5-1.5x the estimate).

Every task is submitted at t=0 (a batch fanned out with ``asyncio.gather``). The server
reports progress floored to whole percent; timestamps are not used for own tasks.
For each row it reports status requests per task and the detection delay (time from the
finish to the check that saw it, as a fraction of the estimate) at p50 and p95, and the
same for one fixed-interval loop per task whose interval is matched to the SDK's p95
(``interval = p95 / 0.95``; its requests follow in closed form). Results print as a
table and are written as JSON (by default outside the source tree).
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _report import RESULTS, quantile, write_report

from kling_async import PollPolicy, TaskSnapshot, TaskStatus
from kling_async._clock import ServerClock
from kling_async._forecast import Forecaster

ESTIMATE = 60.0
SHAPES: dict[str, Callable[[float], int]] = {
    "linear": lambda f: min(99, int(100 * f)),
    "steps": lambda f: min(3, int(4 * f)) * 25,
    "stuck": lambda f: 0,
    "eased": lambda f: min(99, int(100 * (1 - (1 - f) ** 2))),
}


def queue_time(model: str, rng: random.Random) -> float:
    if model == "fixed":
        return 2.0
    if rng.random() < 0.05:
        return rng.uniform(1.0, 2.0) * ESTIMATE
    return rng.uniform(0.0, 0.3) * ESTIMATE


def run_time(model: str, rng: random.Random) -> float:
    if model == "uniform":
        return rng.uniform(0.5, 1.5) * ESTIMATE
    return rng.lognormvariate(0.0, 0.25) * ESTIMATE


def simulate(shape: str, queue: str, run: str, tasks: int, seed: int) -> dict[str, Any]:
    """One world: the schedule's requests and detection delays, and the matched loop's."""
    rng = random.Random(seed)
    policy = PollPolicy()  # the defaults, at real speed: a 60 s job, checks 2-30 s apart
    forecaster = Forecaster(policy, ServerClock(), random.Random(seed + 1))
    progress = SHAPES[shape]
    truth: dict[str, tuple[float, float]] = {}  # id -> (start, finish)
    heap: list[tuple[float, int, str]] = []
    version: dict[str, int] = {}  # the heap item that is current, as the poller's seq
    forecasts = {}

    def schedule(task_id: str, now: float, delay: float | None = None) -> None:
        if delay is None:
            delay = forecaster.plan(forecasts[task_id], now).delay
        version[task_id] = version.get(task_id, 0) + 1
        heapq.heappush(heap, (now + delay, version[task_id], task_id))

    for i in range(tasks):
        task_id = f"task_{i}"
        start = queue_time(queue, rng)
        truth[task_id] = (start, start + run_time(run, rng))
        forecasts[task_id] = forecaster.track(task_id, "std-5s", 0.0)
        waits = forecaster.needs_learner(forecasts[task_id])
        schedule(task_id, 0.0, min(policy.max_interval, 4 * policy.min_interval) if waits else None)
    requests = 0
    delays: list[float] = []
    while heap:
        now, seq, task_id = heapq.heappop(heap)
        if version[task_id] != seq:
            continue
        later = forecaster.postpone(forecasts[task_id], now, policy.min_interval / 4)
        if later is not None:  # as the poller: planned again on what was learned since
            schedule(task_id, now, later - now)
            continue
        requests += 1
        start, finish = truth[task_id]
        if now >= finish:
            snapshot = TaskSnapshot(task_id, TaskStatus.COMPLETED, 100, estimated_time=ESTIMATE)
        elif now >= start:
            fraction = (now - start) / (finish - start)
            snapshot = TaskSnapshot(
                task_id, TaskStatus.PROCESSING, progress(fraction), estimated_time=ESTIMATE
            )
        else:
            snapshot = TaskSnapshot(task_id, TaskStatus.PENDING, 0, estimated_time=ESTIMATE)
        woken = forecaster.observe(forecasts[task_id], snapshot, now, now)
        if snapshot.status.is_terminal:
            delays.append((now - finish) / ESTIMATE)
        else:
            schedule(task_id, now)
        for other in woken:
            if other.polls == 0:
                schedule(other.task_id, now)
    p95 = quantile(delays, 0.95)
    interval = p95 * ESTIMATE / 0.95
    loop_requests = sum(math.floor(finish / interval) + 1 for _, finish in truth.values())
    loop_delays = [
        (math.ceil(finish / interval) * interval - finish) / ESTIMATE
        for _, finish in truth.values()
    ]
    return {
        "shape": shape,
        "queue": queue,
        "run": run,
        "tasks": tasks,
        "requests_per_task": requests / tasks,
        "delay_p50": quantile(delays, 0.5),
        "delay_p95": p95,
        "loop_interval_s": interval,
        "loop_requests_per_task": loop_requests / tasks,
        "loop_delay_p95": quantile(loop_delays, 0.95),
        "fewer_requests": loop_requests / requests,
    }


def table(rows: list[dict[str, Any]]) -> str:
    head = [
        "shape",
        "queue",
        "run time",
        "req/task",
        "p50 %est",
        "p95 %est",
        "loop req/task",
        "loop p95",
        "fewer requests",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append(
            f"| {r['shape']} | {r['queue']} | {r['run']} | {r['requests_per_task']:.2f} | "
            f"{r['delay_p50']:.1%} | {r['delay_p95']:.1%} | {r['loop_requests_per_task']:.1f} | "
            f"{r['loop_delay_p95']:.1%} | {r['fewer_requests']:.2f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=600, help="tasks per row")
    parser.add_argument("--shapes", default=",".join(SHAPES), help="progress shapes")
    parser.add_argument("--queues", default="fixed,realistic", help="queue models")
    parser.add_argument("--runs", default="lognormal,uniform", help="run-time models")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--out",
        type=Path,
        default=RESULTS / "schedule.json",
        help="where to write the JSON (default: outside the source tree)",
    )
    args = parser.parse_args(argv)
    started = time.time()
    rows = [
        simulate(shape, queue, run, args.tasks, args.seed)
        for shape in args.shapes.split(",")
        for queue in args.queues.split(",")
        for run in args.runs.split(",")
    ]
    print(table(rows))
    write_report(
        "schedule", {"tasks": args.tasks, "seed": args.seed, "rows": rows}, started, args.out
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
