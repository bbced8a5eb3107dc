"""What the poller knows and learns about tasks: "when next, and how likely done".

The poller sends, routes and limits; this module keeps what each answer taught and turns
it into a :class:`~kling_async._schedule.Belief` about when a task finishes, for
``_schedule.plan_check`` to act on. It relies on none of the server's habits:

* **Own tasks are timed from the local submit** (the event loop's monotonic clock); a
  re-attached task's ``created`` is used only through the :class:`ServerClock`, which
  corrects for the server's offset and its one-second quantum.
* **When processing starts is not assumed, it is learned**: a task's start is bracketed
  by the last "pending" and the first "processing" answer, or read off its progress; the
  first few tasks of a kind scout (checked often while queued) to learn the queue early.
* **Times are learned per kind of request** (model, mode, duration, image input), shrunk
  towards what all kinds taught while a kind has few samples: the total time from submit
  to finish, the queue, the run time from start to finish, and how far the linear
  extrapolation of two progress readings misses the finish (so progress that is not
  linear in time, or moves in steps, is read for what it is). No maximum queue is
  assumed: a task still pending is believed to need a whole run after it starts, and the
  queue is used to read a first progress reading only once it proves steady.
* **Completions teach in registration order**: a lesson about how long tasks take waits
  until every task registered earlier has ended, so a batch's fast finishers do not make
  the model believe every task is fast while the slow ones still run
  (``MAX_PENDING_LESSONS`` bounds it). Checks planned before a lesson changed the model
  much are planned again when they come due (``postpone``).
* **Bad numbers are ignored**: estimates and ratios outside sane bounds teach nothing.

Where the belief is weak (no estimate yet, a re-attached task of unknown age), the plan
falls back to short gaps that double up to ``max_interval``: safe spacing, never silence.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import random
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from typing import NamedTuple

from ._clock import ServerClock
from ._config import PollPolicy
from ._models import TaskSnapshot, TaskStatus
from ._schedule import EARLY_Z, LATE_Z, Belief, Plan, plan_check

__all__ = ["Forecaster", "TaskForecast"]

Kind = Hashable

MAX_PENDING_LESSONS = 10_000
MAX_ESTIMATE = 7 * 86400.0
"""Estimates above a week (or not positive and finite) are taken for garbage."""
MAX_LOG_RATIO = math.log(100.0)
"""A task taking over 100x (or under 1/100) of its estimate teaches nothing."""
NARROW_START = 0.1
"""A start bracketed within this fraction of the estimate counts as known."""
KIND_WEIGHT = 4.0
"""Samples of all kinds a kind's own samples are shrunk towards, while it has few."""
SCOUTS = 3
"""Own tasks per kind that scout for the queue time."""
SCOUT_GAP = 0.04
"""A scout's gap while queued, in estimates: its start is then bracketed narrowly."""
EPOCH_SAMPLES = frozenset({4, 16, 64, 256, 1024})
"""Sample counts at which a statistic has changed enough to plan due checks again."""
QUEUE_KNOWN = 0.03
"""A kind's queue time counts as known once its spread is under this many estimates."""
_NEVER = -math.inf  # one shared float for "not seen yet", not one per task
MAX_QUEUE = 100.0


"""A queue over 100 estimates teaches nothing (it is garbage, or an outage)."""
RECENT = 512
"""Samples kept per statistic for its edges."""
MIN_EDGE_SAMPLES = 20
EDGE_QUANTILE = 0.02
"""The likely window spans at least the 2nd to the 98th percentile of what was learned."""


class _Stat:
    """Mean and spread of log ratios (Welford), shrunk towards a prior while samples are
    few, and the most recent samples, for the edges a lognormal gets wrong (a uniform
    spread, a long queue now and then)."""

    __slots__ = ("m2", "mean", "n", "recent", "sorted")

    def __init__(self) -> None:
        self.n = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.recent: deque[float] = deque()
        self.sorted: list[float] = []

    def add(self, x: float) -> None:
        self.n += 1
        delta = x - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (x - self.mean)
        self.recent.append(x)
        bisect.insort(self.sorted, x)
        if len(self.recent) > RECENT:
            old = self.recent.popleft()
            del self.sorted[bisect.bisect_left(self.sorted, old)]

    def edges(self, mu: float, sigma: float) -> tuple[float, float]:
        """Where the learned samples put the likely window's edges, in standard deviations
        of ``(mu, sigma)``: no narrower than the lognormal's own."""
        ordered = self.sorted
        if len(ordered) < MIN_EDGE_SAMPLES or sigma <= 0:
            return EARLY_Z, LATE_Z
        low = ordered[int(EDGE_QUANTILE * len(ordered))]
        high = ordered[min(len(ordered) - 1, int((1 - EDGE_QUANTILE) * len(ordered)))]
        return min(EARLY_Z, (low - mu) / sigma), max(LATE_Z, (high - mu) / sigma)

    def blend(self, mu: float, sigma: float, weight: float) -> tuple[float, float]:
        """Mean and spread, the prior ``(mu, sigma)`` counting as ``weight`` samples."""
        n = self.n + weight
        mean = (self.n * self.mean + weight * mu) / n
        # pooled: own scatter, the prior's spread, and how far the two means lie apart
        spread = self.m2 + weight * sigma**2 + self.n * weight / n * (self.mean - mu) ** 2
        return mean, math.sqrt(spread / n)


class _Fit(NamedTuple):
    """A learned lognormal, with its likely window's edges as log offsets from ``mu``."""

    mu: float
    sigma: float
    low: float
    high: float

    def belief(
        self,
        anchor: float,
        unit: float,
        after: float,
        shift: float = 0.0,
        spread: float | None = None,
    ) -> Belief:
        """A belief that the finish is ``anchor + unit * exp(shift) * X``, X this fit
        (its spread widened to ``spread`` if given)."""
        sigma = self.sigma if spread is None else max(spread, self.sigma)
        return Belief(
            anchor,
            unit,
            self.mu + shift,
            sigma,
            after,
            early_z=min(EARLY_Z, self.low / sigma),
            late_z=max(LATE_Z, self.high / sigma),
        )


class _Model:
    """What was learned about one kind of request (or about all of them)."""

    __slots__ = ("epoch", "estimate", "queue", "residual", "run", "scouts", "step", "total")

    def __init__(self) -> None:
        self.estimate: float | None = None
        self.epoch = 0  # bumped when what was learned changes enough to plan again
        self.scouts = 0
        self.step = 100  # gcd of every progress value seen: 25 for 0/25/50/75 steps
        self.total = _Stat()  # log(finish - submit) / estimate
        self.run = _Stat()  # log(finish - start) / estimate
        self.residual = _Stat()  # log(actual / extrapolated remaining time)
        self.queue = _Stat()  # (start - submit) / estimate, not a log: it may be 0


# Priors: "on time, give or take a third"; a queue makes the total a little longer;
# progress is taken as linear until completions say otherwise; a short queue.
_PRIORS = {
    "total": (0.1, 0.35),
    "run": (0.0, 0.3),
    "residual": (0.0, 0.15),
    "queue": (0.05, 0.05),
}
_PRIOR_WEIGHT = 4.0
LINEAR = 0.1
"""Progress counts as linear in time once completions put the residual's mean and spread
(in log units) under this."""


class TaskForecast:
    """What the answers so far say about one task (slotted: thousands live at once).

    Times are the poller's monotonic seconds. A progress reading is the first answer
    that showed a value; ``running_at`` is when the task was last seen unfinished.
    """

    __slots__ = (
        "epoch",
        "estimate",
        "first_p",
        "first_t",
        "kind",
        "last_p",
        "last_t",
        "order",
        "origin",
        "pending_at",
        "planned_at",
        "polls",
        "queue_known",
        "running_at",
        "scout",
        "started_by",
        "task_id",
    )

    def __init__(self, task_id: str, kind: Kind | None, order: int, origin: float | None) -> None:
        self.task_id = task_id
        self.kind = kind
        self.order = order
        self.origin = origin  # when the task was created, if known
        self.estimate: float | None = None
        self.pending_at = _NEVER  # last seen queued
        self.started_by = math.inf  # first seen processing
        self.running_at = _NEVER  # last seen unfinished
        self.first_p = self.last_p = 0
        self.first_t = self.last_t = 0.0
        self.polls = 0
        self.queue_known = False  # its queue time has been taught
        self.scout = False  # checked often while queued, to learn the queue time
        self.epoch = 0  # the kind's epoch when it was last planned
        self.planned_at = 0.0  # when it was last planned

    def __repr__(self) -> str:
        return f"<TaskForecast {self.task_id} polls={self.polls} progress={self.last_p}>"

    def read_progress(self, when: float, progress: int) -> bool:
        """Record a reading (True if new); 0 (not started), 100 and values going
        backwards say nothing."""
        if not 0 < progress < 100 or progress <= self.last_p:
            return False
        if self.first_p == 0:
            self.first_p, self.first_t = progress, when
        self.last_p, self.last_t = progress, when
        return True

    def start_bracket(self) -> tuple[float, float]:
        """Earliest and latest the processing can have started (±inf if unknown)."""
        low = self.pending_at
        if self.origin is not None:
            low = max(low, self.origin)
        return low, self.started_by


def _sane_ratio(value: float, unit: float) -> float | None:
    """``log(value / unit)`` if both are sane, else None."""
    if not (value > 0 and 0 < unit <= MAX_ESTIMATE and math.isfinite(value)):
        return None
    ratio = math.log(value / unit)
    return ratio if abs(ratio) <= MAX_LOG_RATIO else None


class Forecaster:
    """Keeps a :class:`TaskForecast` per task and learns from completions, per kind."""

    def __init__(
        self, policy: PollPolicy, clock: ServerClock, rng: random.Random | None = None
    ) -> None:
        self._policy = policy
        self._clock = clock
        self._rng = rng or random.Random()
        self._all = _Model()
        self._kinds: dict[Kind, _Model] = {}
        self._interned: dict[Kind, Kind] = {}

        self._order = itertools.count()
        self._live: list[int] = []  # orders of tasks still tracked (heap, lazily pruned)
        self._ended: set[int] = set()
        self._lessons: list[tuple[int, Kind | None, str, float]] = []
        self._learning: dict[Kind, set[TaskForecast]] = {}
        #: Called with each lesson this process learns, to share it (None: keep it).
        self.share: Callable[[Kind | None, str, float], None] | None = None

    # -- tracking ------------------------------------------------------------------------

    def track(self, task_id: str, kind: Kind | None, origin: float | None) -> TaskForecast:
        """Start forecasting a task created at local time ``origin`` (None if unknown).

        The first ``SCOUTS`` own tasks of a kind scout: while queued they are checked
        every ``SCOUT_GAP`` estimates, so when processing starts (the queue time) is
        learned long before the others' first progress readings."""
        model = self._model(kind)
        if kind is not None:
            kind = self._interned.setdefault(kind, kind)  # one tuple per kind, not per task
        forecast = TaskForecast(task_id, kind, next(self._order), origin)
        if origin is not None and model.scouts < SCOUTS:
            model.scouts += 1
            forecast.scout = True
        forecast.epoch = model.epoch
        heapq.heappush(self._live, forecast.order)
        return forecast

    def postpone(self, forecast: TaskForecast, now: float, slack: float) -> float | None:
        """If what was learned about the task's kind changed since its check was planned,
        plan it again as of then: the new due time if that is over ``slack`` seconds
        after ``now``, else None (check now)."""
        if forecast.epoch == self._model(forecast.kind).epoch:
            return None
        planned = forecast.planned_at
        due = planned + self.plan(forecast, planned).delay
        return due if due > now + slack else None

    def forget(self, forecast: TaskForecast) -> None:
        """Stop forecasting a task that nobody waits for any more (it teaches nothing)."""
        self._end(forecast)

    def _end(self, forecast: TaskForecast) -> None:
        waiting = self._learning.get(forecast.kind)
        if waiting is not None:
            waiting.discard(forecast)
            if not waiting:
                del self._learning[forecast.kind]
        self._ended.add(forecast.order)
        self._apply_lessons()

    def estimate_for(self, kind: Kind | None) -> float | None:
        """The latest estimate the server gave for this kind of request."""
        model = self._kinds.get(kind) if kind is not None else None
        return model.estimate if model is not None else None

    def belief_unit(self, forecast: TaskForecast) -> float:
        """The task's estimate in seconds, the yardstick of its schedule (0 if unknown)."""
        return forecast.estimate or self.estimate_for(forecast.kind) or 0.0

    def __len__(self) -> int:
        """Tasks tracked and not yet ended or forgotten."""
        return len(self._live) - len(self._ended)

    @property
    def pending_lessons(self) -> int:
        """Lessons waiting for an earlier-registered task to end."""
        return len(self._lessons)

    @property
    def samples(self) -> int:
        """How many completions taught the model so far."""
        return self._all.total.n + self._all.run.n

    # -- planning ------------------------------------------------------------------------

    def plan(self, forecast: TaskForecast, now: float) -> Plan:
        """When to check this task next, and how likely it is done by then."""
        forecast.epoch = self._model(forecast.kind).epoch
        forecast.planned_at = now
        unit = forecast.estimate or self.estimate_for(forecast.kind)
        if forecast.scout and forecast.started_by == math.inf and unit is not None:
            gap = max(self._policy.min_interval, SCOUT_GAP * unit)
            return Plan(min(gap, self._policy.max_interval), 0.0)
        return plan_check(
            now=now,
            policy=self._policy,
            belief=self.belief(forecast),
            polls=forecast.polls,
            rng=self._rng,
        )

    def needs_learner(self, forecast: TaskForecast) -> bool:
        """True if this task should wait for another of its kind to learn the estimate
        (registering it as waiting); False if it should be checked on its own plan."""
        kind = forecast.kind
        if kind is None or forecast.estimate is not None or self.estimate_for(kind) is not None:
            return False
        waiting = self._learning.get(kind)
        if waiting is None:
            self._learning[kind] = set()  # this task's first check learns the estimate
            return False
        waiting.add(forecast)
        return True

    def belief(self, forecast: TaskForecast) -> Belief | None:
        """What the answers so far say about the finish, or None with no estimate known."""
        unit = forecast.estimate or self.estimate_for(forecast.kind)
        if unit is None:
            return None
        after = forecast.running_at
        step = self._step(forecast.kind)
        if forecast.last_p > forecast.first_p:
            # Two readings: extrapolate linearly, corrected by what completions taught.
            rise = forecast.last_p - forecast.first_p
            rate = rise / max(forecast.last_t - forecast.first_t, 1e-9)
            remaining = (100 - forecast.last_p) / rate
            residual = self._stat(forecast.kind, "residual")
            spread = math.hypot(residual.sigma, step / rise, step / (100 - forecast.last_p) / 2)
            shift = math.log(max(remaining, 1e-9) / unit)
            return residual.belief(forecast.last_t, unit, after, shift, spread)
        run = self._stat(forecast.kind, "run")
        if forecast.first_p:
            return self._one_reading(forecast, unit, step, run, after)

        low, high = forecast.start_bracket()
        if high < math.inf and high - max(low, high - unit) <= NARROW_START * unit:
            # Started (processing seen) at a known time: a whole run after that.
            return run.belief((max(low, high - unit) + high) / 2, unit, after)
        queued = forecast.pending_at
        if forecast.origin is None:
            # A task of unknown age (re-attached, no server clock): only a queued one says
            # when its run can end; otherwise fall back to safe spacing.
            return None if queued == -math.inf else run.belief(queued, unit, after)
        by_total = self._stat(forecast.kind, "total").belief(forecast.origin, unit, after)
        if queued == -math.inf and high == math.inf:
            return by_total
        # Started somewhere in a wide bracket, or still queued: no maximum queue is
        # assumed, so a task is believed to need a whole run after it was last seen queued.
        by_run = run.belief(max(queued, forecast.origin), unit, after)
        return by_run if by_run.edge(0.0) > by_total.edge(0.0) else by_total

    def _one_reading(
        self, forecast: TaskForecast, unit: float, step: int, run: _Fit, after: float
    ) -> Belief:
        """The finish after one progress reading: the rest of a run whose length is
        learned; and, once progress is known to be linear, also where a start after a
        learned queue puts it, the two weighed by how sure each is."""
        t1 = forecast.first_t
        done = min((forecast.first_p + step / 2) / 100, 0.999)
        left = 1 - done
        spread = math.hypot(run.sigma, step / 100 / left / 2)
        by_run = run.belief(t1, unit, after, math.log(left), spread)
        if forecast.origin is None or not self._linear(forecast.kind):
            return by_run
        queue = self._stat(forecast.kind, "queue")
        ran = t1 - forecast.origin - queue.mu * unit  # since the start the queue suggests
        if ran <= 0 or queue.sigma > QUEUE_KNOWN:
            return by_run  # a queue that varies this much would only mislead
        ratio = left / done
        mean_q = t1 + ran * ratio
        sd_q = ratio * math.hypot(queue.sigma * unit, ran * step / 100 / done / math.sqrt(12))
        median_r = unit * math.exp(by_run.mu)
        mean_r, sd_r = t1 + median_r, median_r * by_run.sigma
        weight_q, weight_r = 1 / max(sd_q, 1e-9) ** 2, 1 / max(sd_r, 1e-9) ** 2
        mean = (mean_q * weight_q + mean_r * weight_r) / (weight_q + weight_r)
        sd = 1 / math.sqrt(weight_q + weight_r)
        if not by_run.edge(by_run.early_z) < mean < by_run.edge(by_run.late_z):
            return by_run  # the two disagree: trust neither more than the run alone
        return Belief(t1, unit, math.log((mean - t1) / unit), sd / (mean - t1), after)

    def _linear(self, kind: Kind | None) -> bool:
        """True once completions showed that progress moves linearly in time."""
        if self._step(kind) != 1:
            return False
        residual = self._stat(kind, "residual")
        return abs(residual.mu) < LINEAR and residual.sigma < LINEAR

    def _learn_queue(self, forecast: TaskForecast) -> None:
        """Teach how long this task queued, once its start is known. Taught at once: a
        task's own start is only ever used given that it did start."""
        unit = forecast.estimate
        if forecast.queue_known or forecast.origin is None or unit is None:
            return
        low, high = forecast.start_bracket()
        start: float | None = None
        if high < math.inf and high - low <= NARROW_START * unit:
            start = (low + high) / 2
        elif forecast.last_p > forecast.first_p and self._linear(forecast.kind):
            rate = (forecast.last_p - forecast.first_p) / max(
                forecast.last_t - forecast.first_t, 1e-9
            )
            start = forecast.first_t - (forecast.first_p + 0.5) / rate
        if start is None:
            return
        forecast.queue_known = True
        queued = max(0.0, start - forecast.origin) / unit
        if queued <= MAX_QUEUE:
            self._teach(forecast.kind, "queue", queued)

    def _model(self, kind: Kind | None) -> _Model:
        if kind is None:
            return self._all
        model = self._kinds.get(kind)
        if model is None:
            model = self._kinds[kind] = _Model()
        return model

    def _step(self, kind: Kind | None) -> int:
        """The quantum of this kind's progress: the gcd of every value seen (25 for
        0/25/50/75); a common factor below 5 is taken for chance, not coarse progress.
        One reading of 50 counts as coarse until another value says otherwise: a
        reading taken for coarser than it is only brings a check early, never late."""
        step = self._model(kind).step
        return step if step >= 5 else 1

    def _stat(self, kind: Kind | None, name: str) -> _Fit:
        """What was learned of a statistic: this kind's samples shrunk towards all
        kinds', shrunk towards the prior."""
        prior_mu, prior_sigma = _PRIORS[name]
        pooled: _Stat = getattr(self._all, name)
        mu, sigma = pooled.blend(prior_mu, prior_sigma, _PRIOR_WEIGHT)
        model = self._kinds.get(kind) if kind is not None else None
        own: _Stat | None = getattr(model, name) if model is not None else None
        if own is not None and own.n:
            mu, sigma = own.blend(mu, sigma, KIND_WEIGHT)
        edges = own if own is not None and len(own.sorted) >= MIN_EDGE_SAMPLES else pooled
        early_z, late_z = edges.edges(mu, sigma)
        return _Fit(mu, sigma, early_z * sigma, late_z * sigma)

    # -- learning ------------------------------------------------------------------------

    def observe(
        self,
        forecast: TaskForecast,
        snapshot: TaskSnapshot,
        sent: float,
        received: float,
        *,
        teach: bool = True,
    ) -> Iterable[TaskForecast]:
        """Learn from one answer, read between local ``sent`` and ``received``. Returns the
        tasks that waited for this kind's estimate and should now be planned again."""
        forecast.polls += 1
        when = (sent + received) / 2
        if forecast.origin is None and snapshot.created is not None:
            low, high = self._clock.to_local(snapshot.created)
            if math.isfinite(low) and math.isfinite(high):
                forecast.origin = (low + high) / 2
        woken: Iterable[TaskForecast] = ()
        estimate = snapshot.estimated_time
        if estimate is not None and 0 < estimate <= MAX_ESTIMATE:
            forecast.estimate = estimate
            if forecast.kind is not None:
                self._model(forecast.kind).estimate = estimate
                woken = self._learning.pop(forecast.kind, ())
            self._all.estimate = estimate
        status = snapshot.status
        if status.is_terminal:
            if teach and status == TaskStatus.COMPLETED and forecast.running_at > -math.inf:
                # Finished somewhere between the last check that saw it running and this
                # one: most likely where the belief put it within that bracket.
                belief = self.belief(forecast)
                low = forecast.running_at
                finish = (
                    belief.median_between(low, received)
                    if belief is not None
                    else (low + received) / 2
                )
                self._learn(forecast, finish)
            self._end(forecast)
            return woken

        forecast.running_at = max(forecast.running_at, sent)
        if status == TaskStatus.PENDING:
            forecast.pending_at = max(forecast.pending_at, sent)
        elif status == TaskStatus.PROCESSING:
            forecast.started_by = min(forecast.started_by, received)
            if forecast.read_progress(when, snapshot.progress):
                model = self._model(forecast.kind)
                model.step = math.gcd(model.step, snapshot.progress)
            if teach:
                self._learn_queue(forecast)
        return woken

    def _learn(self, forecast: TaskForecast, finish: float) -> None:
        """Queue what a completed task teaches (applied in registration order)."""
        unit = forecast.estimate
        if unit is None or forecast.running_at == -math.inf:
            return
        lessons: list[tuple[str, float | None]] = []
        if forecast.origin is not None:
            lessons.append(("total", _sane_ratio(finish - forecast.origin, unit)))
        start = self._start_of(forecast, finish, unit, self._step(forecast.kind))
        if start is not None:
            lessons.append(("run", _sane_ratio(finish - start, unit)))
        if forecast.last_p > forecast.first_p and self._step(forecast.kind) == 1:
            # (Coarse progress says more through its steps' timing than through a
            # residual: its extrapolations scatter by the step, which the belief adds.)
            rate = (forecast.last_p - forecast.first_p) / max(
                forecast.last_t - forecast.first_t, 1e-9
            )
            extrapolated = (100 - forecast.last_p) / rate
            # How progress maps to time does not depend on how long a task runs: no
            # censoring to wait out, so this lesson is taught at once.
            residual = _sane_ratio(finish - forecast.last_t, extrapolated)
            if residual is not None:
                self._teach(forecast.kind, "residual", residual)
        for name, value in lessons:
            if value is not None:
                heapq.heappush(self._lessons, (forecast.order, forecast.kind, name, value))

    def _teach(self, kind: Kind | None, name: str, value: float) -> None:
        """Learn one sample of this process's own, and share it."""
        self.teach(kind, name, value)
        if self.share is not None:
            self.share(kind, name, value)

    def teach(self, kind: Kind | None, name: str, value: float) -> None:
        """Learn one sample (also one another process shared); a kind whose model changed
        enough gets a new epoch, so checks planned on the old one are planned again when
        they come due. Unknown statistics and bad numbers are ignored."""
        if name not in _PRIORS or not math.isfinite(value):
            return
        if not (0 <= value <= MAX_QUEUE if name == "queue" else abs(value) <= MAX_LOG_RATIO):
            return

        model = self._model(kind)
        linear = self._linear(kind)
        getattr(self._all, name).add(value)
        if model is not self._all:
            getattr(model, name).add(value)
        if getattr(model, name).n in EPOCH_SAMPLES or self._linear(kind) != linear:
            model.epoch += 1

    @staticmethod
    def _start_of(forecast: TaskForecast, finish: float, unit: float, step: int) -> float | None:
        """When processing started: the answers' bracket if narrow, else from progress."""
        low, high = forecast.start_bracket()
        if high < math.inf and high - low <= NARROW_START * unit:
            return (low + high) / 2
        if forecast.first_p:
            done = (forecast.first_p + step / 2) / 100
            return (forecast.first_t - done * finish) / (1 - done)
        return None

    def _apply_lessons(self) -> None:
        """Teach every lesson no task registered earlier is still running for: a batch
        then teaches its slow tasks along with its fast ones, not only the fast."""
        live, ended = self._live, self._ended
        while live and live[0] in ended:
            ended.discard(heapq.heappop(live))
        if len(ended) > 2 * len(live) + 1000:  # never let lazily deleted orders pile up
            live[:] = [order for order in live if order not in ended]
            heapq.heapify(live)
            ended.clear()
        oldest = live[0] if live else math.inf
        lessons = self._lessons
        while lessons and (lessons[0][0] < oldest or len(lessons) > MAX_PENDING_LESSONS):
            _, kind, name, value = heapq.heappop(lessons)
            self._teach(kind, name, value)
