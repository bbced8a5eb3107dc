"""Benchmark: the shared poller on a matrix of worlds, against one loop per task.

    python benchmarks/poller.py                         # the default matrix, 600 tasks a row
    python benchmarks/poller.py --quick                 # smoke test, under a minute
    python benchmarks/poller.py --shapes linear,steps --queues kind,realistic \\
        --skews 0,3 --scales 4,10                       # any cartesian matrix
    python benchmarks/poller.py --show results.json     # print a saved run's table

Each row is a world: a progress shape (linear, steps, stuck, eased) x a queue
(``kind``: the emulator's old defaults, a fixed 2 s queue and a lognormal run time;
``realistic``: the emulator's realistic preset, queues of 0-30 % of the estimate plus 5 %
long ones, run times 0.5-1.5x) x a server clock skew (emulated seconds the server is
ahead, with whole-second timestamps) x a time scale (how much faster than real the
emulator's clock runs). For each it starts ``python -m kling_async.emulator`` in a child
process (so the CPU measured is the client's alone) and runs:

1. ``sdk``: kling_async as documented: N coroutines each ``submit`` then ``await``; a
   fraction (``--reattach``) awaits through ``session.task(id)`` instead, as a service
   that re-attaches by id does, so the server's timestamps and clock skew matter. The poll
   policy is the default on the compressed clock (2 s / 30 s of emulated time).
2. ``loop``: what users write today, one ``while True: get; sleep(interval)`` per task,
   with the interval matched to the SDK's p95 (``p95 / 0.95``). Its requests and delays
   follow in closed form from the emulator's truth (each task's submit and finish), with
   no round trip and no server load: the most favourable case for the loop, so the ratio
   is conservative. ``--real-loop`` runs the loops for real instead.
3. ``floor``: bare aiohttp GETs at the SDK's request rate, to price one request.

Detection delay = the awaiter's wake-up minus the emulator's ``completes_at``, as a
fraction of the estimate. Memory per in-flight task is measured once, with tracemalloc.
Results print as a table with the targets met or missed, and are written as JSON outside
the source tree unless ``--out`` says where.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import statistics
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import attrs
from _report import quantile, write_report

from kling_async import KlingSession, PollPolicy, RetryPolicy, TextToVideo
from kling_async.testing import EmulatorProcess, scaled_poll

API_KEY = "sk-benchmark-0123456789"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
EMULATED_ESTIMATE = 60.0  # the emulator's estimate of a std 5 s job, emulated seconds
TERMINAL = frozenset({"completed", "failed", "cancelled"})
SUBMIT_CONCURRENCY = 32
FLOOR_SECONDS = 3.0  # how long the floor sends for (at least 300 requests)
SDK_FILES = "*/kling_async/*"
HOLD = "[hold]"  # prompts of tasks that never finish (memory phase)


def emulator_args(flags: list[str], seed: int) -> list[str]:
    """The emulator command's flags for a benchmark world: seeded, no failing prompts."""
    return [f"--seed={seed}", "--fail-marker=", *flags]


async def bounded(limit: int, jobs: list[Awaitable[None]]) -> None:
    """Run coroutines with at most ``limit`` at once."""
    gate = asyncio.Semaphore(limit)

    async def run(job: Awaitable[None]) -> None:
        async with gate:
            await job

    await asyncio.gather(*(run(j) for j in jobs))


# -- measuring -----------------------------------------------------------------------------


class LagProbe:
    """How late a 10 ms sleep wakes: the event loop's responsiveness."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(0.01)
            self.lags.append(time.perf_counter() - started - 0.01)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> float:
        """Stop and return the p99 lag in ms."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        return 1000 * quantile(self.lags, 0.99) if self.lags else 0.0


class Phase:
    """CPU, requests and lag from the last submit until the last awaiter woke."""

    def __init__(self, requests: Callable[[], int]) -> None:
        self._requests = requests
        self.cpu = self.count = self.wall = 0.0
        self.lag_p99 = 0.0
        self._probe = LagProbe()

    def begin(self) -> None:
        self._cpu0, self._count0 = time.process_time(), self._requests()
        self._wall0 = time.perf_counter()
        self._probe.start()

    async def end(self) -> None:
        self.cpu = time.process_time() - self._cpu0
        self.count = self._requests() - self._count0
        self.wall = time.perf_counter() - self._wall0
        self.lag_p99 = await self._probe.stop()


async def summarise(
    name: str, emu: EmulatorProcess, n: int, woke: dict[str, float], phase: Phase
) -> dict[str, Any]:
    """Requests, detection delays (fractions of each task's estimate), CPU and rates."""
    stats = await emu.stats()
    records = await emu.records(woke)
    fractions = [(woke[i] - r["completes_at"]) / r["estimated_time"] for i, r in records.items()]
    estimate = statistics.mean(r["estimated_time"] for r in records.values())
    requests = stats["status_calls_total"]
    per_request = phase.cpu / phase.count if phase.count else float("nan")
    return {
        "name": name,
        "tasks": n,
        "status_requests": requests,
        "requests_per_task": requests / n,
        "delay_p50": quantile(fractions, 0.5),
        "delay_p95": quantile(fractions, 0.95),
        "cpu_ms_per_request": 1000 * per_request,
        "cpu_ms_per_task": 1000 * per_request * requests / n,
        "loop_lag_p99_ms": phase.lag_p99,
        "requests_per_second": phase.count / phase.wall if phase.wall else 0.0,
        "max_status_per_second": stats["max_status_per_second"],
        "rate_limited": stats["rate_limited"],
        "mean_estimate_s": estimate,
        "records": records,
    }


# -- the contenders --------------------------------------------------------------------------


async def run_sdk(
    emu: EmulatorProcess, n: int, policy: PollPolicy, reattach: float
) -> dict[str, Any]:
    """kling_async: submit, then await through the shared poller (some by re-attaching)."""
    await emu.reset_stats()
    woke: dict[str, float] = {}
    gate = asyncio.Semaphore(SUBMIT_CONCURRENCY)
    every = max(1, round(1 / reattach)) if reattach > 0 else 0
    async with KlingSession(
        api_key=API_KEY, base_url=emu.url, poll=policy, retry=RetryPolicy(base_delay=0.05)
    ) as session:
        phase = Phase(lambda: session.poll_stats().status_requests)
        left = n

        async def one(i: int) -> None:
            nonlocal left
            async with gate:
                task = await session.submit(TextToVideo(f"benchmark prompt {i}"))
            left -= 1
            if left == 0:
                phase.begin()
            handle = session.task(task.id) if every and i % every == 0 else task
            await handle.wait()
            woke[task.id] = time.time()

        await asyncio.gather(*(one(i) for i in range(n)))
        await phase.end()
    return await summarise("sdk", emu, n, woke, phase)


def matched_loop(records: dict[str, dict[str, Any]], p95: float) -> dict[str, Any]:
    """One fixed-interval loop per task, started at its submit, with the interval matched
    to ``p95`` (a fraction of the estimate): requests and delays in closed form."""
    fractions, requests = [], 0
    for record in records.values():
        interval = p95 * record["estimated_time"] / 0.95
        lasted = record["completes_at"] - record["created"]
        checks = math.ceil(lasted / interval)
        requests += checks + 1  # the first GET goes right after the submit
        fractions.append((checks * interval - lasted) / record["estimated_time"])
    n = len(records)
    return {
        "name": "loop",
        "tasks": n,
        "requests_per_task": requests / n,
        "delay_p50": quantile(fractions, 0.5),
        "delay_p95": quantile(fractions, 0.95),
    }


async def submit_plain(http: aiohttp.ClientSession, url: str, prompt: str) -> str:
    body = {"model": "kling-v3", "prompt": prompt, "duration": 5}
    async with http.post(url + "/v1/videos/generations", json=body, headers=AUTH) as response:
        payload = await response.json()
    task_id: str = payload["data"][0]["task_id"]
    return task_id


async def run_baseline(emu: EmulatorProcess, n: int, interval: float) -> dict[str, Any]:
    """One ``while True: get; sleep(interval)`` loop per task, aiohttp's default pool."""
    await emu.reset_stats()
    woke: dict[str, float] = {}
    gate = asyncio.Semaphore(SUBMIT_CONCURRENCY)
    sent = 0
    phase = Phase(lambda: sent)
    async with aiohttp.ClientSession() as http:
        left = n

        async def one(i: int) -> None:
            nonlocal left, sent
            async with gate:
                task_id = await submit_plain(http, emu.url, f"benchmark prompt {i}")
            left -= 1
            if left == 0:
                phase.begin()
            while True:
                async with http.get(emu.url + f"/v1/tasks/{task_id}", headers=AUTH) as r:
                    data = json.loads(await r.read())["data"]
                sent += 1
                if data["status"] in TERMINAL:
                    woke[task_id] = time.time()
                    return
                await asyncio.sleep(interval)

        await asyncio.gather(*(one(i) for i in range(n)))
        await phase.end()
    result = await summarise("baseline", emu, n, woke, phase)
    result["interval_s"] = interval
    return result


async def run_floor(
    emu: EmulatorProcess, ids: list[str], policy: PollPolicy, rate: float
) -> dict[str, Any]:
    """Bare aiohttp GETs with the SDK's pool and concurrency, sent at the SDK's mean rate
    (each request woken by its own timer, as the SDK's are): the cost of a request."""
    connector = aiohttp.TCPConnector(limit=policy.max_concurrency + 8)
    gate = asyncio.Semaphore(policy.max_concurrency)
    count = int(min(5000, max(300, rate * FLOOR_SECONDS)))
    async with aiohttp.ClientSession(connector=connector) as http:

        async def get(task_id: str) -> None:
            async with gate, http.get(emu.url + f"/v1/tasks/{task_id}", headers=AUTH) as r:
                json.loads(await r.read())

        await get(ids[0])  # open the pool first
        phase = Phase(lambda: 0)
        phase.begin()
        gets = []
        for i in range(count):
            gets.append(asyncio.ensure_future(get(ids[i % len(ids)])))
            await asyncio.sleep(1 / rate)
        await asyncio.gather(*gets)
        await phase.end()
    return {
        "name": "floor",
        "status_requests": count,
        "requests_per_second": count / phase.wall,
        "cpu_ms_per_request": 1000 * phase.cpu / count,
        "loop_lag_p99_ms": phase.lag_p99,
    }


# -- memory per in-flight task ---------------------------------------------------------------


async def traced(
    start: Callable[[], list[asyncio.Future[Any]]], ready: Callable[[], bool], n: int
) -> tuple[float, float]:
    """Bytes per task still allocated once ``start()``'s waits all had their first check:
    all of them, and those allocated from inside kling_async."""
    gc.collect()
    tracemalloc.start(32)
    before = tracemalloc.take_snapshot()
    waits = start()
    for _ in range(6000):  # at most 5 minutes
        if ready():
            break
        await asyncio.sleep(0.05)
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    for wait in waits:
        wait.cancel()
    await asyncio.gather(*waits, return_exceptions=True)
    sdk = [tracemalloc.Filter(True, SDK_FILES, all_frames=True)]
    total = sum(d.size_diff for d in after.compare_to(before, "filename"))
    ours = sum(
        d.size_diff
        for d in after.filter_traces(sdk).compare_to(before.filter_traces(sdk), "filename")
    )
    return total / n, ours / n


async def memory(emu: EmulatorProcess, n: int, policy: PollPolicy) -> dict[str, float]:
    """Memory per in-flight task on tasks that never end: the baseline's loops, the SDK's
    own (allocated from inside kling_async) and the SDK's with the awaiting asyncio Task."""
    await emu.control("POST", "/_scripts", {"prompt_contains": HOLD, "time_factor": 1e4})
    async with aiohttp.ClientSession() as http:
        ids: list[str] = []

        async def submit(i: int) -> None:
            ids.append(await submit_plain(http, emu.url, f"{HOLD} {i}"))

        await bounded(SUBMIT_CONCURRENCY, [submit(i) for i in range(n)])
        checked = 0

        async def loop(task_id: str) -> None:
            nonlocal checked
            while True:
                async with http.get(emu.url + f"/v1/tasks/{task_id}", headers=AUTH) as r:
                    json.loads(await r.read())
                checked += 1
                await asyncio.sleep(3600)

        def loops() -> list[asyncio.Future[Any]]:
            return [asyncio.ensure_future(loop(i)) for i in ids]

        baseline, _ = await traced(loops, lambda: checked >= n, n)
    async with KlingSession(api_key=API_KEY, base_url=emu.url, poll=policy) as session:

        def waits() -> list[asyncio.Future[Any]]:
            return [asyncio.ensure_future(session.task(i).wait()) for i in ids]

        def first_checks_done() -> bool:
            return session.poll_stats().status_requests >= n

        total, sdk = await traced(waits, first_checks_done, n)
    return {"sdk": sdk, "sdk_total": total, "baseline": baseline}


# -- one shape, the table, the targets ----------------------------------------------------------


@attrs.frozen
class Scenario:
    """One world of the matrix."""

    shape: str
    queue: str  # "kind" (the old defaults) or "realistic" (the emulator's preset)
    skew: float  # emulated seconds the server clock is ahead
    scale: float  # emulated seconds per real second

    @property
    def name(self) -> str:
        return f"{self.shape} {self.queue} skew {self.skew:g} {self.scale:g}x"

    def flags(self) -> list[str]:
        preset = ["--preset=realistic"] if self.queue == "realistic" else []
        return [
            *preset,
            f"--progress-shape={self.shape}",
            f"--clock-offset={self.skew}",
            f"--time-scale={self.scale}",
        ]


async def run_scenario(
    scenario: Scenario, args: argparse.Namespace, with_memory: bool
) -> dict[str, Any]:
    policy = scaled_poll(scenario.scale, args.budget * scenario.scale)
    async with EmulatorProcess(*emulator_args(scenario.flags(), args.seed)) as emu:
        sdk = await run_sdk(emu, args.tasks, policy, args.reattach)
        records = sdk.pop("records")
        loop = matched_loop(records, sdk["delay_p95"])
        if args.real_loop:
            interval = sdk["delay_p95"] * sdk["mean_estimate_s"] / 0.95
            loop = await run_baseline(emu, args.tasks, interval)
            loop.pop("records", None)
        floor = await run_floor(emu, list(records), policy, sdk["requests_per_second"])
        mem = await memory(emu, args.tasks, policy) if with_memory else None
    if mem is not None:
        sdk["memory_bytes_per_task"] = mem["sdk"]
        sdk["memory_bytes_per_task_with_awaiter"] = mem["sdk_total"]
    return {
        "scenario": attrs.asdict(scenario),
        "name": scenario.name,
        "policy": attrs.asdict(policy),
        "runs": [sdk, loop, floor],
        "ratios": {
            "fewer_requests": loop["requests_per_task"] / sdk["requests_per_task"],
            "cpu_per_request_sdk_over_floor": sdk["cpu_ms_per_request"]
            / floor["cpu_ms_per_request"],
        },
    }


COLUMNS = (
    ("req/task", lambda r: r["runs"][0]["requests_per_task"], "{:.2f}"),
    ("p50 %est", lambda r: r["runs"][0]["delay_p50"], "{:.1%}"),
    ("p95 %est", lambda r: r["runs"][0]["delay_p95"], "{:.1%}"),
    ("loop req/task", lambda r: r["runs"][1]["requests_per_task"], "{:.1f}"),
    ("loop p95", lambda r: r["runs"][1]["delay_p95"], "{:.1%}"),
    ("fewer requests", lambda r: r["ratios"]["fewer_requests"], "{:.2f}x"),
    ("CPU us/req", lambda r: 1000 * r["runs"][0]["cpu_ms_per_request"], "{:.0f}"),
    ("vs bare", lambda r: r["ratios"]["cpu_per_request_sdk_over_floor"], "{:.2f}x"),
    ("max req/s", lambda r: r["runs"][0]["max_status_per_second"], "{}"),
)


def table(results: list[dict[str, Any]]) -> str:
    """A Markdown table, one row per world."""
    head = ["shape", "queue", "skew", "scale", *(title for title, _, _ in COLUMNS)]
    rows = [head, ["---"] * len(head)]
    for result in results:
        s = result["scenario"]
        cells = [s["shape"], s["queue"], f"{s['skew']:g} s", f"{s['scale']:g}x"]
        rows.append([*cells, *(fmt.format(get(result)) for _, get, fmt in COLUMNS)])
    memory = [r["runs"][0] for r in results if "memory_bytes_per_task" in r["runs"][0]]
    text = "\n".join("| " + " | ".join(row) + " |" for row in rows)
    for run in memory:
        text += (
            f"\n\nmemory per task in flight: {run['memory_bytes_per_task']:.0f} B in kling_async, "
            f"{run['memory_bytes_per_task_with_awaiter']:.0f} B with the awaiting asyncio Task"
        )
    return text


def verdicts(results: list[dict[str, Any]]) -> list[str]:
    """Each target of the schedule, met or missed, from the numbers of this run."""
    lines: list[tuple[str, bool]] = []
    for result in results:
        sdk = result["runs"][0]
        s = result["scenario"]
        ratio = result["ratios"]["fewer_requests"]
        where = result["name"]
        p95 = sdk["delay_p95"]
        if s["queue"] == "realistic" and s["shape"] == "linear":
            lines.append(
                (
                    f"{where}: {sdk['requests_per_task']:.2f} req/task <= 4 at p95 {p95:.1%} "
                    "<= 5 %",
                    sdk["requests_per_task"] <= 4 and p95 <= 0.05,
                )
            )
        goal = {"linear": 3.0, "steps": 3.0, "stuck": 1.6}.get(s["shape"])
        if s["queue"] == "realistic" and goal is not None:
            lines.append((f"{where}: {ratio:.2f}x fewer requests >= {goal:g}x", ratio >= goal))
        cap = result["policy"]["max_requests_per_second"]
        lines.append(
            (
                f"{where}: max {sdk['max_status_per_second']} status req/s <= {cap:g}",
                sdk["max_status_per_second"] <= cap,
            )
        )
    by_world: dict[tuple[str, str, float], dict[float, dict[str, Any]]] = {}
    for result in results:
        s = result["scenario"]
        by_world.setdefault((s["shape"], s["queue"], s["skew"]), {})[s["scale"]] = result
    for (shape, queue, skew), scales in by_world.items():
        if len(scales) < 2:
            continue
        low, high = scales[min(scales)], scales[max(scales)]
        for label, get in (("req/task", COLUMNS[0][1]), ("fewer requests", COLUMNS[5][1])):
            a, b = get(low), get(high)
            drift = abs(a - b) / max(a, b)
            lines.append(
                (
                    f"{shape} {queue} skew {skew:g}: {label} {a:.2f} vs {b:.2f} across scales, "
                    f"{drift:.0%} apart <= 15 %",
                    drift <= 0.15,
                )
            )
    return [f"{'met ' if ok else 'MISS'}  {text}" for text, ok in lines]


def matrix(args: argparse.Namespace) -> list[Scenario]:
    """The worlds to run: the cartesian product asked for, or the default matrix."""
    if args.shapes or args.queues or args.skews or args.scales:
        return [
            Scenario(shape, queue, float(skew), float(scale))
            for shape in (args.shapes or "linear,steps,stuck,eased").split(",")
            for queue in (args.queues or "realistic").split(",")
            for skew in (args.skews or "3").split(",")
            for scale in (args.scales or "4,10").split(",")
        ]
    if args.quick:
        return [Scenario("linear", "realistic", 3.0, 10.0)]
    realistic = [
        Scenario(shape, "realistic", 3.0, scale)
        for shape in ("linear", "steps", "stuck", "eased")
        for scale in (4.0, 10.0)
    ]
    in_step = Scenario("linear", "realistic", 0.0, 4.0)
    kind = Scenario("linear", "kind", 0.0, 4.0)
    return [*realistic, in_step, kind]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=600, help="tasks in flight at once")
    parser.add_argument("--shapes", help="progress shapes: linear,steps,stuck,eased")
    parser.add_argument("--queues", help="queue worlds: kind,realistic")
    parser.add_argument("--skews", help="server clock skews, emulated seconds (e.g. 0,3)")
    parser.add_argument("--scales", help="time scales (e.g. 4,10)")
    parser.add_argument(
        "--reattach", type=float, default=0.2, help="fraction of tasks awaited by id"
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=250.0,
        help="the SDK's max_requests_per_second at real speed; a world compressed Nx gets N "
        "times that, like every other constant of the policy (default 250)",
    )
    parser.add_argument("--real-loop", action="store_true", help="run the loops for real")
    parser.add_argument("--no-memory", dest="memory", action="store_false")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="one world, 150 tasks")
    parser.add_argument("--out", type=Path, default=None, help="where to write the JSON")
    parser.add_argument("--show", type=Path, default=None, help="print a saved JSON's table")
    args = parser.parse_args(argv)
    if args.quick:
        args.tasks = 150
    return args


def show(path: Path) -> None:
    """Print the table and verdicts of a saved run."""
    report = json.loads(path.read_text())
    print(
        f"{report['tasks']} tasks a world, a budget of {report['budget']:g} requests/s "
        "at real speed\n"
    )
    print(table(report["results"]))
    print()
    print("\n".join(verdicts(report["results"])))


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.show is not None:
        show(args.show)
        return 0
    started = time.time()
    results = []
    for i, scenario in enumerate(matrix(args)):
        print(f"[{time.time() - started:5.0f}s] {scenario.name}: {args.tasks} tasks", flush=True)
        results.append(await run_scenario(scenario, args, with_memory=args.memory and i == 0))
    print()
    print(table(results))
    print()
    print("\n".join(verdicts(results)))
    report = {
        "tasks": args.tasks,
        "budget": args.budget,
        "reattach": args.reattach,
        "results": results,
    }
    write_report(f"poller-{args.tasks}", report, started, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
