"""Benchmark: N processes awaiting the same tasks, with and without a shared Redis.

    python benchmarks/redis.py                        # 600 tasks, 1/2/4 processes, ~5 min
    python benchmarks/redis.py --quick                # 200 tasks, ~3 min
    python benchmarks/redis.py --tasks 1000 --scale 10 --failure-scale 2
    python benchmarks/redis.py --show results.json    # print a saved run's table

It starts ``python -m kling_async.emulator`` and a ``redis-server`` (the OS package, on a
free port, no persistence; ``tests/support/redis_server.py``) as child processes, submits the tasks
from this process, then starts N worker processes (``tests/support/redis_worker.py``, the
multi-process tests' own, started and read by its ``Worker``): each
opens a ``KlingSession``, re-attaches to every task by id (``session.task(id)``, as a service's
workers do) and awaits them all, reporting when each woke it. Runs, one after the other
against the same emulator (counters reset, Redis flushed in between):

1. **shared** / **alone**: N = 1, 2, 4 processes with ``redis=`` the shared server, and
   the same N without it (each polls on its own, as before Redis). The poll policy is
   the default one on the compressed clock, its cap included (10 requests/s of emulated
   time: ``10 x scale`` real ones), so it binds as it would on a real key with that many
   tasks in flight.
2. **baseline** / **sigkill** / **restart**: 4 processes with Redis; ``baseline`` is
   nothing but that. In ``sigkill``, when a tenth of the (task, process) pairs have woken
   (the first tasks finishing), the process that sent the most status requests (the one
   holding the leases) is SIGKILLed; the other three must finish every task. In
   ``restart``, at that moment ``redis-server`` is stopped, and started again on its port
   ``--outage`` seconds later; every process must get every result.

The failure runs use ``--failure-scale`` (default 2: a 60 s job in 30 s) instead of
``--scale``: the lease (3 s) and the reconnect cadence (1 s) are real seconds, so on a
clock compressed S times they weigh S times more against the estimate than at real
speed. They use an ample cap (``--failure-max-rps``, 1000) so the delays measure the
failure, not the budget: at the default cap 600 tasks are budget-bound (see the
README).

Measured: status requests per task (the emulator's count / tasks), the highest 1 s
status-request rate across all processes (the emulator's ``max_status_per_second``),
detection delay (each process's wake-up minus the emulator's ``completes_at``, as a
fraction of the task's estimate; p50/p95 over every (task, process) pair), requests per
process, errors. Results print as a table with the issue's targets met or missed, and
are written as JSON outside the source tree unless ``--out`` says where.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _report import quantile, write_report
from poller import SUBMIT_CONCURRENCY, emulator_args

# The multi-process Redis tests' worker and redis-server, so both measure one program.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support.redis_server import RedisServer
from support.redis_worker import Worker

from kling_async import KlingSession, TextToVideo
from kling_async.testing import EmulatorProcess, scaled_poll

API_KEY = "sk-benchmark-redis-0123456789"
SPLIT = 0.1
"""The failure runs strike once this fraction of (task, process) pairs has woken."""


# -- one run ---------------------------------------------------------------------------------


async def submit(emu: EmulatorProcess, n: int, prompt: str) -> list[str]:
    async with KlingSession(api_key=API_KEY, base_url=emu.url) as session:
        gate = asyncio.Semaphore(SUBMIT_CONCURRENCY)

        async def one(i: int) -> str:
            async with gate:
                return (await session.submit(TextToVideo(f"{prompt} {i}"))).id

        return list(await asyncio.gather(*(one(i) for i in range(n))))


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(600_000):
        if condition():
            return
        await asyncio.sleep(0.01)


async def run(
    name: str,
    emu: EmulatorProcess,
    redis: RedisServer,
    logs: Path,
    n: int,
    shared: bool,
    args: argparse.Namespace,
    scale: float,
    max_rps: float | None,
    strike: str | None = None,
) -> dict[str, Any]:
    """N processes awaiting the same fresh tasks (their stderr in ``logs``); ``strike``
    ("sigkill", "restart") what happens once the first tasks finish (None: a steady run;
    "baseline": nothing)."""
    redis.flush()
    policy = scaled_poll(scale, max_rps)
    config = {
        "base_url": emu.url,
        "api_key": API_KEY,
        "redis": redis.url if shared else None,
        "poll": policy,
        "timeout": 20 * 60 / scale + 120,
    }
    group = [Worker(config, logs / f"{name} {i}.log") for i in range(n)]
    notes: dict[str, Any] = {}
    try:
        await asyncio.gather(*(w.start() for w in group))
        ids = await submit(emu, args.tasks, name)
        await emu.reset_stats()
        started = time.time()
        await asyncio.gather(*(w.attach(ids) for w in group))
        survivors = group
        if strike in ("sigkill", "restart"):
            await until(lambda: sum(len(w.woke) for w in group) >= SPLIT * n * args.tasks)
            notes["struck_after_s"] = time.time() - started
            if strike == "sigkill":
                victim = max(group, key=lambda w: w.sent)
                victim.kill()
                survivors = [w for w in group if w is not victim]
                notes["victim_had_woken"] = len(victim.woke)
                notes["victim_sent"] = victim.sent
            else:
                redis.stop()
                notes["woken_at_stop"] = sum(len(w.woke) for w in group)
                notes["outage_s"] = args.outage
                await asyncio.sleep(args.outage)
                await asyncio.get_running_loop().run_in_executor(None, redis.start)
                notes["woken_at_restart"] = sum(len(w.woke) for w in group)
        await asyncio.gather(*(w.finish(config["timeout"] + 60) for w in survivors))
        wall = time.time() - started
    finally:
        await asyncio.gather(*(w.stop() for w in group))
    stats = await emu.stats()
    records = await emu.records(ids)
    fractions, late = [], []
    for task_id, record in records.items():
        for w in survivors:
            if task_id in w.woke:
                delay = w.woke[task_id] - record["completes_at"]
                fractions.append(delay / record["estimated_time"])
                late.append(delay)
    finished = all(w.woke.keys() == set(ids) and not w.errors for w in survivors)
    if strike == "restart":
        notes["warnings_per_process"] = [w.stderr().count("Redis unreachable") for w in group]
    requests = stats["status_calls_total"]
    return {
        "name": name,
        "processes": n,
        "redis": shared,
        "strike": strike,
        "scale": scale,
        "tasks": args.tasks,
        "cap": policy.max_requests_per_second,
        "status_requests": requests,
        "requests_per_task": requests / args.tasks,
        "max_status_per_second": stats["max_status_per_second"],
        "rate_limited": stats["rate_limited"],
        "delay_p50": quantile(fractions, 0.5) if fractions else math.nan,
        "delay_p95": quantile(fractions, 0.95) if fractions else math.nan,
        "worst_delay_s": max(late, default=math.nan),
        "mean_estimate_s": statistics.mean(r["estimated_time"] for r in records.values()),
        "per_process": [w.done["status_requests"] if w.done else None for w in group],
        "finished_every_task": finished,
        "errors": sum(len(w.errors) for w in survivors),
        "wall_s": wall,
        **notes,
    }


def emulator_flags(args: argparse.Namespace, scale: float) -> list[str]:
    preset = ["--preset=realistic"] if args.realistic else []
    return [*preset, f"--time-scale={scale}"]


async def run_all(args: argparse.Namespace, say: Callable[[str], None]) -> list[dict[str, Any]]:
    try:
        redis = RedisServer()
    except FileNotFoundError as missing:
        raise SystemExit(str(missing)) from None
    redis.start()
    results = []
    logs = Path(tempfile.mkdtemp(prefix="kling-async-redis-bench-"))
    try:
        flags = emulator_args(emulator_flags(args, args.scale), args.seed)
        async with EmulatorProcess(*flags) as emu:
            for n in args.processes:
                for shared in (False, True):
                    name = f"{n} {'shared' if shared else 'alone'}"
                    say(f"{name}: {args.tasks} tasks, scale {args.scale:g}")
                    results.append(
                        await run(name, emu, redis, logs, n, shared, args, args.scale, args.max_rps)
                    )
        scale, cap = args.failure_scale, args.failure_max_rps
        flags = emulator_args(emulator_flags(args, scale), args.seed)
        async with EmulatorProcess(*flags) as emu:
            for strike in ("baseline", "sigkill", "restart"):
                say(f"{strike}: 4 processes awaiting {args.tasks} tasks, scale {scale:g}")
                results.append(
                    await run(strike, emu, redis, logs, 4, True, args, scale, cap, strike)
                )
    finally:
        redis.stop()
        shutil.rmtree(logs, ignore_errors=True)
    return results


# -- the table and the targets ---------------------------------------------------------------


def table(results: list[dict[str, Any]]) -> str:
    """Markdown tables: the steady runs side by side, then the failure runs."""
    alone = {r["processes"]: r for r in results if not r["redis"] and r["strike"] is None}
    one = alone.get(1)
    head = ["processes", "Redis", "req/task", "vs 1 alone", "max req/s", "cap",
            "p50 %est", "p95 %est", "requests per process"]  # fmt: skip
    rows = [head, ["---"] * len(head)]
    for r in results:
        if r["strike"] is not None:
            continue
        ratio = r["requests_per_task"] / one["requests_per_task"] if one else math.nan
        rows.append([
            str(r["processes"]), "yes" if r["redis"] else "no",
            f"{r['requests_per_task']:.2f}", f"{ratio:.2f}x",
            str(r["max_status_per_second"]), f"{r['cap']:g}",
            f"{r['delay_p50']:.1%}", f"{r['delay_p95']:.1%}",
            " / ".join(str(p) for p in r["per_process"]),
        ])  # fmt: skip
    text = "\n".join("| " + " | ".join(row) + " |" for row in rows)
    head = ["run", "scale", "estimate", "finished", "p50 %est", "p95 %est", "worst delay",
            "req/task", "max req/s", "cap", "what happened"]  # fmt: skip
    rows = [head, ["---"] * len(head)]
    for r in results:
        if r["strike"] is None:
            continue
        if r["strike"] == "baseline":
            what = "nothing (the baseline of the two below)"
        elif r["strike"] == "sigkill":
            what = (f"killed the checker ({r['victim_sent']} requests sent) at "
                    f"{r['struck_after_s']:.1f} s")  # fmt: skip
        else:
            down = r["struck_after_s"]
            what = (f"Redis down at {down:.1f} s for {r['outage_s']:g} s; (task, process) "
                    f"pairs woken {r['woken_at_stop']} / {r['woken_at_restart']} / "
                    f"{r['processes'] * r['tasks']} at stop / restart / end; "
                    f"warnings {r['warnings_per_process']}")  # fmt: skip
        rows.append([
            r["strike"], f"{r['scale']:g}x", f"{r['mean_estimate_s']:.0f} s",
            "every task" if r["finished_every_task"] else f"NO ({r['errors']} errors)",
            f"{r['delay_p50']:.1%}", f"{r['delay_p95']:.1%}", f"{r['worst_delay_s']:.1f} s",
            f"{r['requests_per_task']:.2f}", str(r["max_status_per_second"]), f"{r['cap']:g}",
            what,
        ])  # fmt: skip
    return text + "\n\n" + "\n".join("| " + " | ".join(row) + " |" for row in rows)


def verdicts(results: list[dict[str, Any]]) -> list[str]:
    """The issue's targets, met or missed, from this run's numbers."""
    lines: list[tuple[str, bool]] = []
    steady = {(r["processes"], r["redis"]): r for r in results if r["strike"] is None}
    one, four = steady.get((1, False)), steady.get((4, True))
    if one and four:
        ratio = four["requests_per_task"] / one["requests_per_task"]
        lines.append((f"4 processes with Redis: {four['requests_per_task']:.2f} req/task, "
                      f"{ratio:.2f}x one process alone <= 1.3x", ratio <= 1.3))  # fmt: skip
    for r in results:
        if r["redis"]:
            lines.append((f"{r['name']}: max {r['max_status_per_second']} status req/s in "
                          f"any 1 s <= the shared cap {r['cap']:g}",
                          r["max_status_per_second"] <= r["cap"]))  # fmt: skip
    calm = next((r for r in results if r["strike"] == "baseline"), None)
    for r in results:
        if r["strike"] == "sigkill":
            lines.append(("sigkill: the other 3 processes finished every task",
                          r["finished_every_task"]))  # fmt: skip
            without = f" (no failure: {calm['delay_p95']:.1%})" if calm else ""
            lines.append((f"sigkill: p95 detection {r['delay_p95']:.1%} of the estimate "
                          f"<= 25 %{without}", r["delay_p95"] <= 0.25))  # fmt: skip
        elif r["strike"] == "restart":
            lines.append(("restart: every process got every result",
                          r["finished_every_task"]))  # fmt: skip
    return [f"{'met ' if ok else 'MISS'}  {text}" for text, ok in lines]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=600, help="tasks all processes await")
    parser.add_argument(
        "--processes", default="1,2,4", help="process counts of the steady runs (1,2,4)"
    )
    parser.add_argument(
        "--scale", type=float, default=10.0, help="time scale of the steady runs (10)"
    )
    parser.add_argument(
        "--failure-scale", type=float, default=2.0,
        help="time scale of the sigkill and restart runs (2: a 60 s job in 30 s)",
    )  # fmt: skip
    parser.add_argument(
        "--max-rps", type=float, default=None,
        help="max_requests_per_second (default: 10/s of emulated time, 10 x scale)",
    )  # fmt: skip
    parser.add_argument(
        "--failure-max-rps", type=float, default=1000.0,
        help="max_requests_per_second of the failure runs (1000: ample, so delays show the "
        "failure, not the budget)",
    )  # fmt: skip
    parser.add_argument("--outage", type=float, default=3.0, help="seconds Redis stays down")
    parser.add_argument("--realistic", action="store_true", help="the emulator's realistic preset")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="200 tasks, failures at 4x")
    parser.add_argument("--out", type=Path, default=None, help="where to write the JSON")
    parser.add_argument("--show", type=Path, default=None, help="print a saved JSON's table")
    args = parser.parse_args(argv)
    args.processes = [int(n) for n in args.processes.split(",")]
    if args.quick:
        args.tasks, args.failure_scale = 200, 4.0
    return args


def show(path: Path) -> None:
    report = json.loads(path.read_text())
    print(table(report["results"]))
    print()
    print("\n".join(verdicts(report["results"])))


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.show is not None:
        show(args.show)
        return 0
    started = time.time()

    def say(text: str) -> None:
        print(f"[{time.time() - started:5.0f}s] {text}", flush=True)

    results = await run_all(args, say)
    print()
    print(table(results))
    print()
    print("\n".join(verdicts(results)))
    report = {
        "tasks": args.tasks,
        "scale": args.scale,
        "failure_scale": args.failure_scale,
        "outage": args.outage,
        "results": results,
    }
    write_report(f"redis-{args.tasks}", report, started, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
