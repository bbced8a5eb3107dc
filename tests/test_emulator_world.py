"""The emulator's world varies like the real one: queues, run times, clock, progress."""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from test_emulator import AUTH, BODY, SUBMIT, fast, post, sleep_until, status, submit

from kling_async.emulator import Emulator, EmulatorConfig, build_parser, config_from_args
from kling_async.emulator._clock import EmulatedClock
from kling_async.emulator._fates import Slots, draw_timing
from kling_async.emulator._state import EmulatorState
from kling_async.emulator._tasks import Job, estimate_for, progress_at
from kling_async.testing import fast_config, realistic_config


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """A bare HTTP client (this module's tests speak to the emulator directly)."""
    async with aiohttp.ClientSession() as client:
        yield client


def draws(config: EmulatorConfig, n: int = 2000, estimate: float = 100.0) -> list[Any]:
    state = EmulatorState(config)
    return [draw_timing(config, state.rng, estimate) for _ in range(n)]


def test_queue_spread_adds_up_to_a_fraction_of_the_estimate() -> None:
    """With queue_spread the queue is queue_time plus uniform [0, spread x estimate]."""
    timings = draws(EmulatorConfig(queue_time=2.0, queue_spread=0.3, seed=1))
    queues = [t.queue for t in timings]
    assert min(queues) >= 2.0
    assert max(queues) <= 2.0 + 30.0
    assert min(queues) < 4.0 and max(queues) > 28.0  # the whole range is used
    assert not any(t.long_queue for t in timings)


def test_no_spread_means_a_fixed_queue() -> None:
    """By default every task queues exactly queue_time."""
    assert {t.queue for t in draws(EmulatorConfig(queue_time=2.0, seed=1), n=50)} == {2.0}


def test_long_queues_come_at_their_rate_and_length() -> None:
    """A long queue comes at long_queue_rate and lasts [0.5, 1] x factor x estimate."""
    timings = draws(EmulatorConfig(queue_time=0.0, long_queue_rate=0.05, seed=3), n=4000)
    long = [t for t in timings if t.long_queue]
    assert 0.02 * 4000 < len(long) < 0.09 * 4000
    assert all(100.0 <= t.queue <= 200.0 for t in long)  # factor 2, estimate 100
    assert all(t.queue == 0.0 for t in timings if not t.long_queue)
    always = draws(EmulatorConfig(long_queue_rate=1.0, long_queue_factor=4.0, seed=3), n=200)
    assert all(2.0 + 200.0 <= t.queue <= 2.0 + 400.0 for t in always)


def test_uniform_run_distribution_stays_in_its_band() -> None:
    """run_distribution "uniform" draws run/estimate uniformly in [1 - spread, 1 + spread]."""
    ratios = [t.run / 100.0 for t in draws(EmulatorConfig(run_distribution="uniform",
                                                           spread=0.5, seed=5))]  # fmt: skip
    assert 0.5 <= min(ratios) < 0.55
    assert 1.45 < max(ratios) <= 1.5
    biased = draws(EmulatorConfig(run_distribution="uniform", spread=0.5, bias=math.log(2)))
    assert all(1.0 <= t.run / 100.0 <= 3.0 for t in biased)


def test_lognormal_run_distribution_is_the_default() -> None:
    """The default run ratio is lognormal: median near 1, a long right tail."""
    ratios = sorted(t.run / 100.0 for t in draws(EmulatorConfig(spread=0.5, seed=5)))
    assert 0.9 < ratios[len(ratios) // 2] < 1.1
    assert ratios[-1] > 2.0


def test_run_time_no_longer_includes_the_queue() -> None:
    """A task queues, then runs its whole run time: created → queue → run → end."""
    state = EmulatorState(fast(queue_time=30.0))
    record = state.create_task(dict(BODY)).record(state.clock)
    assert record.queue_time == pytest.approx(30 / 200)
    assert record.run_time == pytest.approx(60 / 200)
    assert record.actual_time == pytest.approx(90 / 200)
    assert record.starts_at == pytest.approx(record.created + record.queue_time)
    assert record.long_queue is False


def test_max_concurrent_holds_the_rest_pending_in_order() -> None:
    """With max_concurrent, never more tasks process at once; slots go in creation order."""
    state = EmulatorState(fast(max_concurrent=3, queue_time=0.0, spread=0.5, queue_spread=0.2))
    tasks = [state.create_task(dict(BODY)) for _ in range(300)]
    events = sorted([(t.starts_at, 1) for t in tasks] + [(t.completes_at, -1) for t in tasks])
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    assert peak == 3
    for task in tasks:
        assert task.starts_at >= task.created
    later = tasks[3]
    assert later.starts_at == pytest.approx(min(t.completes_at for t in tasks[:3]))


def test_slots_free_one_at_a_time() -> None:
    """Slots.admit starts a task when it is ready or when the earliest slot frees, later of two."""
    slots = Slots(2)
    assert slots.admit(0.0, 10.0) == 0.0
    assert slots.admit(1.0, 10.0) == 1.0
    assert slots.admit(2.0, 10.0) == 10.0
    assert slots.admit(30.0, 10.0) == 30.0  # slot 2 freed at 11, the task was ready at 30
    assert Slots(None).admit(5.0, 99.0) == 5.0


async def test_max_concurrent_over_http(session: aiohttp.ClientSession) -> None:
    """The task past the limit reports "pending" with progress 0 while others process."""
    async with Emulator(EmulatorConfig(max_concurrent=2, queue_time=0.0, spread=0.0)) as emu:
        ids = [await submit(session, emu) for _ in range(3)]
        answers = [(await status(session, emu, task_id))[1]["data"] for task_id in ids]
        assert [a["status"] for a in answers] == ["processing", "processing", "pending"]
        assert answers[2]["progress"] == 0
        third = emu.task_record(ids[2])
        assert third.starts_at == pytest.approx(emu.task_record(ids[0]).completes_at)


def test_ten_thousand_tasks_stay_cheap_with_every_knob() -> None:
    """Creating 10,000 tasks with every queue knob on keeps one small record each."""
    config = realistic_config(max_concurrent=100, seed=9)
    state = EmulatorState(config)
    for _ in range(10_000):
        state.create_task(dict(BODY))
    assert len(state.tasks) == 10_000
    assert len(state.slots._free_at) == 100
    now = time.time()
    statuses = {task.status(now) for task in state.tasks.values()}
    assert statuses <= {"pending", "processing", "completed"}


@pytest.mark.parametrize(
    ("duration", "factor"), [(3, 0.76), (5, 1.0), (7, 1.24), (10, 1.6), (12, 1.84), (15, 2.2)]
)
def test_estimate_scales_for_any_duration(duration: int, factor: float) -> None:
    """The estimate grows 12 % per second of video over 5 s (and shrinks below)."""
    assert estimate_for(60.0, "std", duration) == pytest.approx(60.0 * factor)
    assert estimate_for(60.0, "pro", duration) == pytest.approx(90.0 * factor)


# -- the server clock ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scale", "offset", "real", "stamp"),
    [
        (1.0, 0.0, 1000.7, 1000),
        (1.0, 3.0, 1000.7, 1003),
        (1.0, -3.0, 1000.2, 997),
        (20.0, 0.0, 1000.07, 1000.05),
        (20.0, 3.0, 1000.07, 1000.2),  # 3 emulated s = 0.15 real s
        (200.0, 0.0, 1000.0071, 1000.005),
        (0.5, 0.0, 1001.9, 1000),  # whole emulated seconds are 2 real seconds
    ],
)
def test_server_clock_stamps_whole_emulated_seconds(
    scale: float, offset: float, real: float, stamp: float
) -> None:
    """stamp = floor((t + offset / scale) x scale) / scale; ints when whole."""
    value = EmulatedClock(scale, offset).stamp(real)
    assert value == stamp
    if scale == 1.0:
        assert isinstance(value, int)


def test_server_clock_durations_and_dates() -> None:
    """Durations round to whole emulated seconds (at least one); Date is on the server clock."""
    clock = EmulatedClock(20.0, 60.0)
    assert clock.duration(0.3) == 0.3
    assert clock.duration(0.333) == 0.35
    assert clock.duration(0.0001) == 0.05
    assert EmulatedClock(1.0, 0.0).duration(59.6) == 60
    assert EmulatedClock.between(1000.05, 1000.35) == 0.3
    date = email.utils.parsedate_to_datetime(clock.http_date(1_000_000.0))
    assert date.timestamp() == 1_000_003.0  # 60 emulated s ahead = 3 real s


@pytest.mark.parametrize("scale", [1.0, 20.0, 200.0])
async def test_reported_times_are_whole_emulated_seconds(
    session: aiohttp.ClientSession, scale: float
) -> None:
    """created, estimated_time, completed, actual_time and expires_at tick in 1/scale steps."""
    config = EmulatorConfig(time_scale=scale, spread=0.3, estimated_time=1.0, queue_time=0.5,
                            clock_offset=7.0, seed=4)  # fmt: skip
    async with Emulator(config) as emu:
        task_id = await submit(session, emu)
        record = emu.task_record(task_id)
        await sleep_until(record.completes_at)
        _, body = await status(session, emu, task_id)
        data = body["data"]
        assert data["status"] == "completed"
        for field in ("created", "completed", "estimated_time", "actual_time"):
            ticks = data[field] * scale
            assert abs(ticks - round(ticks)) < 1e-3, (field, data[field])
        expires = data["result"]["videos"][0]["expires_at"] * scale
        assert abs(expires - round(expires)) < 1e-3
        offset = 7.0 / scale
        assert record.created + offset - 1 / scale <= data["created"] <= record.created + offset
        assert data["created"] == record.reported_created
        assert data["completed"] == record.reported_completed
        assert data["actual_time"] == record.reported_actual_time
        assert data["estimated_time"] == record.reported_estimated_time
        if scale == 1.0:
            assert all(isinstance(data[f], int) for f in ("created", "completed", "actual_time"))


@pytest.mark.parametrize("offset", [3600.0, -3600.0])
async def test_clock_offset_shifts_bodies_and_the_date_header(
    session: aiohttp.ClientSession, offset: float
) -> None:
    """A skewed server clock shows in created, expires_at and every response's Date header."""
    async with Emulator(EmulatorConfig(clock_offset=offset, spread=0.0)) as emu:
        before = time.time()
        task_id = await submit(session, emu)
        async with session.get(f"{emu.url}/v1/tasks/{task_id}", headers=AUTH) as response:
            data = (await response.json())["data"]
            date = email.utils.parsedate_to_datetime(response.headers["Date"]).timestamp()
        assert abs(data["created"] - (before + offset)) < 3
        assert abs(date - (time.time() + offset)) < 3
        truth = emu.task_record(task_id)
        assert abs(truth.created - before) < 3  # the truth stays on the real clock
        for path, method in (("/v1/tasks/task_NOPE", "GET"), (SUBMIT, "POST"), ("/_stats", "GET")):
            async with session.request(method, emu.url + path) as response:
                date = email.utils.parsedate_to_datetime(response.headers["Date"]).timestamp()
                assert abs(date - (time.time() + offset)) < 3, (path, response.status)


async def test_real_speed_record_reports_integers(session: aiohttp.ClientSession) -> None:
    """At time_scale 1 the record's reported values are the integers the body shows."""
    async with Emulator(EmulatorConfig(clock_offset=3.0)) as emu:
        task_id = await submit(session, emu)
        record = emu.task_record(task_id)
        assert isinstance(record.reported_created, int)
        assert record.reported_estimated_time == 60
        async with session.get(f"{emu.url}/_tasks/{task_id}") as response:
            remote = await response.json()
        assert remote["reported_created"] == record.reported_created
        assert remote["queue_time"] == pytest.approx(2.0)


# -- progress --------------------------------------------------------------------------


def test_eased_and_step_progress_values() -> None:
    """ "eased" is 100(1 - (1 - f)^2) capped at 99; "steps" jumps by progress_step."""
    assert [progress_at("eased", f) for f in (0, 0.1, 0.5, 0.9, 1)] == [0, 19, 75, 99, 99]
    assert [progress_at("steps", f, 30) for f in (0, 0.29, 0.3, 0.61, 0.95, 1)] == [
        0, 0, 30, 60, 90, 90,
    ]  # fmt: skip
    assert {progress_at("steps", f / 100, 10) for f in range(101)} == set(range(0, 100, 10))
    assert {progress_at("steps", f / 100, 99) for f in range(101)} == {0, 99}


@pytest.mark.parametrize("shape", ["linear", "steps", "stuck", "eased"])
def test_progress_is_zero_while_pending_and_100_only_at_the_end(shape: str) -> None:
    """For every shape: 0 while pending, rising and below 100 while processing, 100 when done."""
    state = EmulatorState(fast(progress_shape=shape, queue_time=20.0))
    task: Job = state.create_task(dict(BODY))
    seen: list[tuple[str, int]] = []
    steps = 400
    span = task.completes_at - task.created
    for i in range(steps + 1):
        now = task.created + span * i / steps
        data = state.status_payload(task, now)["data"]
        seen.append((data["status"], data["progress"]))
    assert seen[-1] == ("completed", 100)
    assert all(p == 0 for s, p in seen if s == "pending")
    processing = [p for s, p in seen if s == "processing"]
    assert processing == sorted(processing)
    assert max(processing) < 100
    assert {s for s, _ in seen} == {"pending", "processing", "completed"}
    if shape != "stuck":
        assert max(processing) > 50


# -- config, preset, flags -------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("queue_spread", -0.1),
        ("long_queue_rate", 1.5),
        ("long_queue_factor", 0.0),
        ("max_concurrent", 0),
        ("max_concurrent", 2.5),
        ("run_distribution", "normal"),
        ("progress_shape", "zigzag"),
        ("progress_step", 0),
        ("progress_step", 100),
        ("error_style", "xml"),
        ("max_upload_bytes", 0),
        ("clock_offset", math.nan),
        ("bias", math.inf),
        ("time_scale", math.inf),
        ("url_ttl", -1.0),
        ("fail_marker", ""),
        ("quirks", "yes"),
        ("seed", 1.5),
    ],
)
def test_every_knob_is_validated_naming_its_field(field: str, value: Any) -> None:
    """An invalid value raises a ValueError whose message names the field."""
    with pytest.raises(ValueError, match=field):
        EmulatorConfig(**{field: value})


def test_uniform_spread_must_stay_below_one() -> None:
    """A uniform run ratio needs spread < 1 (a ratio can never be zero or negative)."""
    with pytest.raises(ValueError, match="spread"):
        EmulatorConfig(run_distribution="uniform", spread=1.0)
    assert EmulatorConfig(run_distribution="uniform", spread=0.99).spread == 0.99
    assert EmulatorConfig(spread=1.5).spread == 1.5  # fine for the lognormal


def test_realistic_preset_and_overrides() -> None:
    """realistic() sets the preset's fields, keeps other defaults, and overrides win."""
    config = EmulatorConfig.realistic()
    assert (config.queue_spread, config.long_queue_rate) == (0.3, 0.05)
    assert (config.run_distribution, config.spread) == ("uniform", 0.5)
    assert (config.clock_offset, config.progress_shape) == (3.0, "linear")
    assert config.time_scale == 1.0 and config.queue_time == 2.0
    tuned = EmulatorConfig.realistic(spread=0.2, progress_shape="eased", time_scale=50)
    assert (tuned.spread, tuned.progress_shape, tuned.time_scale) == (0.2, "eased", 50)
    assert tuned.queue_spread == 0.3


def test_realistic_config_runs_at_the_test_time_scale() -> None:
    """testing.realistic_config() is the preset at fast_config's time scale."""
    config = realistic_config(seed=1)
    assert config.time_scale == fast_config().time_scale
    assert config.retry_after == fast_config().retry_after
    assert (config.run_distribution, config.clock_offset, config.seed) == ("uniform", 3.0, 1)


def test_flags_cover_the_new_knobs_and_the_preset() -> None:
    """--preset realistic starts from the preset; explicit flags override it."""
    parse = build_parser().parse_args
    config = config_from_args(parse(["--preset", "realistic", "--spread", "0.2",
                                     "--clock-offset", "-5"]))  # fmt: skip
    assert config == EmulatorConfig.realistic(spread=0.2, clock_offset=-5.0)
    config = config_from_args(parse([
        "--queue-spread", "0.4", "--long-queue-rate", "0.1", "--long-queue-factor", "3",
        "--max-concurrent", "4", "--run-distribution", "uniform", "--spread", "0.3",
        "--progress-shape", "eased", "--progress-step", "10", "--error-style", "mixed",
        "--max-upload-bytes", "1000", "--url-ttl", "60",
    ]))  # fmt: skip
    assert config == EmulatorConfig(
        queue_spread=0.4, long_queue_rate=0.1, long_queue_factor=3.0, max_concurrent=4,
        run_distribution="uniform", spread=0.3, progress_shape="eased", progress_step=10,
        error_style="mixed", max_upload_bytes=1000, url_ttl=60.0,
    )  # fmt: skip
    assert config_from_args(parse([])) == EmulatorConfig()


async def test_a_realistic_emulator_serves_end_to_end(session: aiohttp.ClientSession) -> None:
    """The preset at test speed still takes a task from submit to a completed body."""
    async with Emulator(realistic_config(seed=2, estimated_time=6.0)) as emu:
        code, body = await post(session, emu)
        assert code == 200
        task_id = body["data"][0]["task_id"]
        await sleep_until(emu.task_record(task_id).completes_at)
        _, done = await status(session, emu, task_id)
        assert done["data"]["status"] == "completed"
