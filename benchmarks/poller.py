"""Benchmark: the shared poller against per-task fixed-interval loops and bare aiohttp GETs.

    python benchmarks/poller.py --tasks 1000            # three progress shapes
    python benchmarks/poller.py --tasks 10000
    python benchmarks/poller.py --quick                 # smoke test, well under 30 s

For each progress shape it starts the emulator in its own process (so the CPU measured
here is the client's alone) with a compressed clock, and runs side by side:

1. ``sdk``: kling_async, each task submitted then awaited through the shared poller;
2. ``baseline``: what users write today, one ``while True: get; sleep(interval)`` loop per
   task on plain aiohttp, at ``interval = p95 delay of sdk / 0.95``. A fixed-interval loop
   notices a finish after a delay uniform on [0, interval] plus a round trip, so its p95
   is at least the SDK's: the request ratio printed is then conservative;
3. ``floor``: bare aiohttp GETs of the status route (read + ``json.loads``), with the
   SDK's concurrency, to price one request with no SDK around it.

Every schedule constant follows the clock: ``min_interval`` 2 s and ``max_interval`` 30 s
of emulated time, like the defaults at real speed. The detection delay of a task is the
wall time its awaiter woke minus the emulator's ``completes_at`` (``GET /_tasks/{id}``),
as a fraction of the task's estimate. CPU is this process's (``time.process_time``) while
tasks are awaited, after the last submit; CPU per task is CPU per status request times
requests per task (submits excluded). Memory per in-flight task is measured with
tracemalloc in a separate phase: N tasks that never finish are awaited until each had its
first check. Event-loop lag is how late a 10 ms sleep wakes. Results go to the console
and to ``benchmarks/results/poller-<tasks>-<time>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import aiohttp

from kling_async import KlingSession, PollPolicy, RetryPolicy, TextToVideo

API_KEY = "sk-benchmark-0123456789"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
EMULATED_ESTIMATE = 60.0  # the emulator's estimate of a std 5 s job, emulated seconds
TERMINAL = frozenset({"completed", "failed", "cancelled"})
RESULTS = Path(__file__).parent / "results"
SUBMIT_CONCURRENCY = 32
FLOOR_SECONDS = 3.0  # how long the floor sends for (at least 300 requests)
SDK_FILES = "*/kling_async/*"
HOLD = "[hold]"  # prompts of tasks that never finish (memory phase)


# -- the emulator in its own process -----------------------------------------------------


class EmulatorProcess:
    """``python -m kling_async.emulator`` in a child process, and a client for its controls."""

    def __init__(self, shape: str, time_scale: float, seed: int) -> None:
        self.args = [
            sys.executable,
            "-m",
            "kling_async.emulator",
            "--port=0",
            f"--time-scale={time_scale}",
            f"--progress-shape={shape}",
            f"--seed={seed}",
            "--fail-marker=",
        ]
        self.url = ""
        self._proc: asyncio.subprocess.Process | None = None
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> EmulatorProcess:
        self._proc = await asyncio.create_subprocess_exec(
            *self.args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
        )
        assert self._proc.stdout is not None
        line = (await self._proc.stdout.readline()).decode()
        if not line.startswith("KLING_EMULATOR_URL="):
            raise RuntimeError(f"the emulator did not start: {line!r}")
        self.url = line.strip().split("=", 1)[1]
        self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=32))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._http is not None:
            await self._http.close()
        if self._proc is not None:
            self._proc.terminate()
            await self._proc.wait()

    @property
    def http(self) -> aiohttp.ClientSession:
        assert self._http is not None
        return self._http

    async def control(self, method: str, path: str, body: Any = None) -> Any:
        async with self.http.request(method, self.url + path, json=body) as response:
            return await response.json()

    async def records(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The emulator's record of each task (``completes_at``, ``estimated_time``, ...)."""
        found: dict[str, dict[str, Any]] = {}

        async def one(task_id: str) -> None:
            found[task_id] = await self.control("GET", f"/_tasks/{task_id}")

        await bounded(32, [one(i) for i in ids])
        return found


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


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


async def delays(emu: EmulatorProcess, woke: dict[str, float]) -> tuple[list[float], float, float]:
    """Each task's detection delay as a fraction of its estimate, and the mean estimate
    and mean actual run time (real seconds)."""
    records = await emu.records(woke)
    fractions = [(woke[i] - r["completes_at"]) / r["estimated_time"] for i, r in records.items()]
    estimate = statistics.mean(r["estimated_time"] for r in records.values())
    actual = statistics.mean(r["actual_time"] for r in records.values())
    return fractions, estimate, actual


async def summarise(
    name: str, emu: EmulatorProcess, n: int, woke: dict[str, float], phase: Phase
) -> dict[str, Any]:
    stats = await emu.control("GET", "/_stats")
    fractions, estimate, actual = await delays(emu, woke)
    requests = stats["status_calls_total"]
    per_request = phase.cpu / phase.count if phase.count else float("nan")
    return {
        "name": name,
        "tasks": n,
        "status_requests": requests,
        "requests_per_task": requests / n,
        "delay_p50": quantile(fractions, 0.5),
        "delay_p95": quantile(fractions, 0.95),
        "delay_p95_seconds": quantile(fractions, 0.95) * estimate,
        "cpu_ms_per_request": 1000 * per_request,
        "cpu_ms_per_task": 1000 * per_request * requests / n,
        "loop_lag_p99_ms": phase.lag_p99,
        "requests_per_second": phase.count / phase.wall if phase.wall else 0.0,
        "max_status_per_second": stats["max_status_per_second"],
        "rate_limited": stats["rate_limited"],
        "mean_estimate_s": estimate,
        "mean_actual_s": actual,
    }


# -- the contenders --------------------------------------------------------------------------


async def run_sdk(emu: EmulatorProcess, n: int, policy: PollPolicy) -> dict[str, Any]:
    """kling_async: submit, then await through the shared poller."""
    await emu.control("POST", "/_reset")
    woke: dict[str, float] = {}
    gate = asyncio.Semaphore(SUBMIT_CONCURRENCY)
    async with KlingSession(
        api_key=API_KEY, base_url=emu.url, poll=policy, retry=RetryPolicy(base_delay=0.05)
    ) as session:
        phase = Phase(lambda: session.poller.requests_sent if session.poller is not None else 0)
        left = n

        async def one(i: int) -> None:
            nonlocal left
            async with gate:
                task = await session.submit(TextToVideo(f"benchmark prompt {i}"))
            left -= 1
            if left == 0:
                phase.begin()
            await task.wait()
            woke[task.id] = time.time()

        await asyncio.gather(*(one(i) for i in range(n)))
        await phase.end()
    return await summarise("sdk", emu, n, woke, phase)


async def submit_plain(http: aiohttp.ClientSession, url: str, prompt: str) -> str:
    body = {"model": "kling-v3", "prompt": prompt, "duration": 5}
    async with http.post(url + "/v1/videos/generations", json=body, headers=AUTH) as response:
        payload = await response.json()
    task_id: str = payload["data"][0]["task_id"]
    return task_id


async def run_baseline(emu: EmulatorProcess, n: int, interval: float) -> dict[str, Any]:
    """One ``while True: get; sleep(interval)`` loop per task, aiohttp's default pool."""
    await emu.control("POST", "/_reset")
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
            return session.poller is not None and session.poller.requests_sent >= n

        total, sdk = await traced(waits, first_checks_done, n)
    return {"sdk": sdk, "sdk_total": total, "baseline": baseline}


# -- one shape, the table, the targets ----------------------------------------------------------


def scaled_policy(time_scale: float, max_rps: float) -> PollPolicy:
    """The default poll policy on the compressed clock."""
    default = PollPolicy()
    return PollPolicy(
        min_interval=default.min_interval / time_scale,
        max_interval=default.max_interval / time_scale,
        max_requests_per_second=max_rps,
        max_concurrency=default.max_concurrency,
        jitter=default.jitter,
    )


async def run_shape(shape: str, args: argparse.Namespace) -> dict[str, Any]:
    scale = EMULATED_ESTIMATE / args.job_seconds
    policy = scaled_policy(scale, args.max_rps)
    async with EmulatorProcess(shape, scale, args.seed) as emu:
        sdk = await run_sdk(emu, args.tasks, policy)
        interval = args.baseline_interval or sdk["delay_p95_seconds"] / 0.95
        baseline = await run_baseline(emu, args.tasks, interval)
        records = await emu.control("GET", "/_stats")
        ids = list(records["status_calls"])
        floor = await run_floor(emu, ids, policy, sdk["requests_per_second"])
        mem = await memory(emu, args.tasks, policy) if args.memory else None
    if mem is not None:
        sdk["memory_bytes_per_task"] = mem["sdk"]
        sdk["memory_bytes_per_task_with_awaiter"] = mem["sdk_total"]
        baseline["memory_bytes_per_task"] = mem["baseline"]
    return {
        "shape": shape,
        "time_scale": scale,
        "policy": {
            "min_interval": policy.min_interval,
            "max_interval": policy.max_interval,
            "max_requests_per_second": policy.max_requests_per_second,
            "max_concurrency": policy.max_concurrency,
        },
        "runs": [sdk, baseline, floor],
        "ratios": {
            "requests_sdk_over_baseline": sdk["requests_per_task"] / baseline["requests_per_task"],
            "cpu_per_request_sdk_over_floor": sdk["cpu_ms_per_request"]
            / floor["cpu_ms_per_request"],
        },
    }


COLUMNS = (
    ("run", "name", "{}"),
    ("req/task", "requests_per_task", "{:.2f}"),
    ("p50 %est", "delay_p50", "{:.1%}"),
    ("p95 %est", "delay_p95", "{:.1%}"),
    ("CPU ms/task", "cpu_ms_per_task", "{:.2f}"),
    ("CPU us/req", "cpu_ms_per_request", "{:.0f}"),
    ("mem B/task", "memory_bytes_per_task", "{:.0f}"),
    ("+awaiter B", "memory_bytes_per_task_with_awaiter", "{:.0f}"),
    ("lag p99 ms", "loop_lag_p99_ms", "{:.1f}"),
    ("max req/s", "max_status_per_second", "{}"),
)


def cell(run: dict[str, Any], key: str, fmt: str) -> str:
    if key not in run:
        return "-"
    value = run[key]
    return fmt.format(1000 * value if key == "cpu_ms_per_request" else value)


def table(results: list[dict[str, Any]]) -> str:
    """A Markdown table, one row per shape and run."""
    head = ["shape", *(title for title, _, _ in COLUMNS)]
    rows = [head, ["---"] * len(head)]
    for result in results:
        for run in result["runs"]:
            rows.append([result["shape"], *(cell(run, k, f) for _, k, f in COLUMNS)])
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def verdicts(results: list[dict[str, Any]], max_rps: float) -> list[str]:
    """Each target, met or missed, from the numbers of this run."""
    lines = []
    for result in results:
        sdk, baseline, _ = result["runs"]
        ratio = result["ratios"]["requests_sdk_over_baseline"]
        cpu = result["ratios"]["cpu_per_request_sdk_over_floor"]
        shape = result["shape"]
        checks = [
            (
                f"requests {ratio:.2f}x the baseline's (p95 {baseline['delay_p95']:.1%})",
                ratio <= (1 / 2 if shape == "stuck" else 1 / 3),
            ),
            (
                f"max {sdk['max_status_per_second']} status req/s <= {max_rps:g}",
                sdk["max_status_per_second"] <= max_rps,
            ),
            (f"CPU/request {cpu:.2f}x bare aiohttp", cpu <= 1.3),
            (f"loop lag p99 {sdk['loop_lag_p99_ms']:.1f} ms", sdk["loop_lag_p99_ms"] <= 20),
        ]
        if shape == "linear":
            checks.insert(
                0,
                (
                    f"{sdk['requests_per_task']:.2f} req/task, p95 {sdk['delay_p95']:.1%} of est.",
                    sdk["requests_per_task"] <= 3 and sdk["delay_p95"] <= 0.05,
                ),
            )
        if "memory_bytes_per_task" in sdk and sdk["tasks"] >= 1000:  # fixed costs dominate below
            memory_used = sdk["memory_bytes_per_task"]
            checks.append((f"{memory_used:.0f} B per in-flight task", memory_used <= 2048))
        for text, ok in checks:
            lines.append(f"{'met ' if ok else 'MISS'}  {shape:6} {text}")
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=1000, help="tasks in flight at once")
    parser.add_argument("--shapes", default="linear,steps,stuck", help="progress shapes")
    parser.add_argument(
        "--job-seconds",
        type=float,
        default=None,
        help="real seconds of a 60 s job (default: tasks/33, from 4 to 50): the clock is "
        "compressed by 60/job-seconds",
    )
    parser.add_argument(
        "--max-rps", type=float, default=1000.0, help="the SDK's max_requests_per_second"
    )
    parser.add_argument(
        "--baseline-interval", type=float, default=None, help="override the matched interval"
    )
    parser.add_argument("--no-memory", dest="memory", action="store_false")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="a smoke test: 150 tasks, linear only")
    parser.add_argument("--out", type=Path, default=None, help="where to write the JSON")
    parser.add_argument("--show", type=Path, default=None, help="print a saved JSON's table")
    args = parser.parse_args(argv)
    if args.quick:
        args.tasks, args.shapes, args.job_seconds = 150, "linear", 3.0
    if args.job_seconds is None:
        args.job_seconds = min(50.0, max(4.0, args.tasks / 33))
    return args


def show(path: Path) -> None:
    """Print the table and verdicts of a saved run."""
    report = json.loads(path.read_text())
    print(
        f"{report['tasks']} tasks, a 60 s job in {report['job_seconds']:g} s, "
        f"max_requests_per_second={report['max_rps']:g}\n"
    )
    print(table(report["results"]))
    print()
    print("\n".join(verdicts(report["results"], report["max_rps"])))


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.show is not None:
        show(args.show)
        return 0
    started = time.time()
    results = []
    for i, shape in enumerate(args.shapes.split(",")):
        print(f"[{time.time() - started:5.0f}s] {shape}: {args.tasks} tasks ...", flush=True)
        args.memory = args.memory and i == 0  # memory does not depend on the shape
        results.append(await run_shape(shape, args))
    print()
    print(table(results))
    print()
    print("\n".join(verdicts(results, args.max_rps)))
    report = {
        "tasks": args.tasks,
        "job_seconds": args.job_seconds,
        "max_rps": args.max_rps,
        "seconds": time.time() - started,
        "python": platform.python_version(),
        "machine": platform.platform(),
        "results": results,
    }
    out = args.out or RESULTS / f"poller-{args.tasks}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {out} ({report['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
