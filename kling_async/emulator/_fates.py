"""How long a task queues and runs: drawn once, when the task is created.

A task's life is ``created → queue ("pending") → run ("processing") → end``.

- Queue (emulated seconds): ``queue_time`` plus uniform [0, ``queue_spread`` x estimate],
  plus, with probability ``long_queue_rate``, a long wait uniform in
  [0.5, 1] x ``long_queue_factor`` x estimate (an account whose concurrent slots are full).
- Run (emulated seconds): estimate x ratio x the script's ``time_factor``, the ratio
  lognormal (``exp(N(bias, spread))``) or uniform in [1 - spread, 1 + spread] x exp(bias).
- With ``max_concurrent``, `Slots` holds the tasks past their queue "pending" until one
  of that many processing slots is free, handing slots out in creation order. Every
  earlier task's run is fixed when it is created, so a heap of slot-free times answers
  at creation when the new task will start: no timer, state stays a function of time.
"""

from __future__ import annotations

import heapq
import math
import random

import attrs

from ._config import EmulatorConfig

__all__ = ["Slots", "Timing", "draw_timing"]


@attrs.frozen
class Timing:
    """A task's drawn durations, in emulated seconds."""

    queue: float
    """Time "pending" before the task may take a processing slot."""
    run: float
    """Time "processing"."""
    long_queue: bool
    """Whether the queue includes a long wait."""


def _run_ratio(config: EmulatorConfig, rng: random.Random) -> float:
    if config.spread <= 0:
        return math.exp(config.bias)
    if config.run_distribution == "uniform":
        return rng.uniform(1 - config.spread, 1 + config.spread) * math.exp(config.bias)
    return rng.lognormvariate(config.bias, config.spread)


def draw_timing(
    config: EmulatorConfig, rng: random.Random, estimate: float, time_factor: float = 1.0
) -> Timing:
    """Draw the queue and run time of a task whose estimate is `estimate` emulated seconds."""
    queue = config.queue_time
    if config.queue_spread > 0:
        queue += rng.uniform(0.0, config.queue_spread * estimate)
    long_queue = config.long_queue_rate > 0 and rng.random() < config.long_queue_rate
    if long_queue:
        queue += rng.uniform(0.5, 1.0) * config.long_queue_factor * estimate
    run = estimate * _run_ratio(config, rng) * time_factor
    return Timing(queue=queue, run=run, long_queue=long_queue)


class Slots:
    """At most `limit` tasks processing at once (None: no limit); real unix seconds."""

    __slots__ = ("_free_at", "_limit")

    def __init__(self, limit: int | None) -> None:
        self._limit = limit
        self._free_at: list[float] = []  # min-heap: when each busy slot frees up

    def admit(self, ready_at: float, run: float) -> float:
        """When a task that may start at `ready_at` and runs `run` seconds really starts."""
        limit = self._limit
        if limit is None:
            return ready_at
        free_at = self._free_at
        if len(free_at) < limit:
            starts_at = ready_at
            heapq.heappush(free_at, starts_at + run)
        else:
            starts_at = max(ready_at, free_at[0])
            heapq.heapreplace(free_at, starts_at + run)
        return starts_at
