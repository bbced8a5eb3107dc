"""Soak: one session open while 50,000 tasks come and go. Does anything grow?

    python benchmarks/soak.py                      # 50,000 tasks, 300 in flight
    python benchmarks/soak.py --tasks 10000 --redis

The emulator runs in a process of its own (``EmulatorProcess``) on a compressed clock; this
process keeps one :class:`KlingSession` open and keeps ``--in-flight`` tasks submitted and
awaited at all times. Every ``--every`` finished tasks it collects garbage and records
RSS (psutil), the memory allocated from inside ``kling_async`` that is still alive
(tracemalloc), the ``poll_stats()`` counters and the size of every internal structure
that could grow (the poller's maps and heaps, the forecaster's ``_ended``, ``_live`` and
``_lessons``, and with ``--redis`` the coordinator's sets). After the first ``--baseline``
tasks it lets every task in flight end before it measures, as it does at the end, so the
two are alike. Target: RSS and traced memory at the end within 10 % of their value after
the first 5,000 tasks, and the counters that
should return to zero (tasks watched, ...) back at zero. Prints a table, writes JSON
outside the source tree and draws a chart (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import psutil
from _report import chart, unshadow_redis, write_report

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from kling_async import KlingSession, TextToVideo
from kling_async.testing import FAST_RETRY, EmulatorProcess, scaled_poll

KEY = "sk-soak-0123456789"
PACKAGE = str(Path(__file__).resolve().parent.parent / "kling_async")


def traced_package_bytes() -> int:
    """Bytes allocated from inside kling_async and still alive."""
    snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, PACKAGE + "/*")])
    return sum(stat.size for stat in snapshot.statistics("filename"))


def structures(session: KlingSession) -> dict[str, int]:
    """Sizes of the internal structures that must not grow with the tasks seen."""
    poller = session._poller
    forecaster = poller.forecaster
    sizes = {
        "watches": len(poller._entries),
        "heap": len(poller._heap),
        "ready": len(poller._ready),
        "in_flight": len(poller._in_flight),
        "checks": len(poller._checks),
        "forecast_live": len(forecaster._live),
        "forecast_ended": len(forecaster._ended),
        "forecast_lessons": len(forecaster._lessons),
        "forecast_learning": sum(len(v) for v in forecaster._learning.values()),
        "forecast_kinds": len(forecaster._kinds),
    }
    coordinator = session._coordinator
    for name in ("_watched", "_held", "_released", "_outbox"):
        if hasattr(coordinator, name):
            sizes["redis" + name] = len(getattr(coordinator, name))
    return sizes


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    process = psutil.Process()
    redis_server = None
    if args.redis:
        from support.redis_server import RedisServer

        redis_server = RedisServer()
        redis_server.start()
    flags = (f"--time-scale={args.scale}", "--seed=5", "--fail-marker=", "--queue-time=2")
    rows: list[dict[str, Any]] = []
    try:
        async with EmulatorProcess(*flags) as emu:
            policy = scaled_poll(args.scale)
            redis = redis_server.url if redis_server is not None else None
            session = KlingSession(
                api_key=KEY, base_url=emu.url, poll=policy, retry=FAST_RETRY, redis=redis
            )
            async with session:
                tracemalloc.start()
                gate = asyncio.Semaphore(args.in_flight)
                done = errors = 0
                started = time.monotonic()
                next_mark = args.every

                async def one(i: int) -> None:
                    nonlocal done, errors
                    try:
                        task = await session.submit(TextToVideo(f"soak {i}"))
                        await task.wait(timeout=120)
                    except Exception:
                        errors += 1
                    finally:
                        done += 1
                        gate.release()

                running: set[asyncio.Task[None]] = set()
                baseline = 0
                for i in range(args.tasks):
                    if i == args.baseline:  # the baseline, like the end, with nothing in flight
                        await asyncio.gather(*running)
                        await asyncio.sleep(0.5)
                        baseline = len(rows)
                        rows.append(await mark(session, process, done, errors, started))
                    await gate.acquire()
                    job = asyncio.ensure_future(one(i))
                    running.add(job)
                    job.add_done_callback(running.discard)
                    if done >= next_mark:
                        next_mark += args.every
                        rows.append(await mark(session, process, done, errors, started))
                await asyncio.gather(*running)
                await asyncio.sleep(0.5)  # let the last answers settle
                rows.append(await mark(session, process, done, errors, started))
                tracemalloc.stop()
    finally:
        if redis_server is not None:
            redis_server.stop()
    return {"rows": rows, "baseline_row": baseline}


async def mark(
    session: KlingSession, process: psutil.Process, done: int, errors: int, started: float
) -> dict[str, Any]:
    gc.collect()
    stats = session.poll_stats()
    row = {
        "done": done,
        "errors": errors,
        "seconds": round(time.monotonic() - started, 1),
        "rss_mb": process.memory_info().rss / 2**20,
        "traced_kb": traced_package_bytes() / 1024,
        "tasks_watched": stats.tasks,
        "status_requests": stats.status_requests,
        **structures(session),
    }
    print(
        f"{row['done']:>7} done {row['seconds']:>7.1f} s  rss {row['rss_mb']:7.1f} MB  "
        f"traced {row['traced_kb']:8.1f} KB  watched {row['tasks_watched']:>4}  "
        f"ended {row['forecast_ended']:>5}  lessons {row['forecast_lessons']:>4}",
        flush=True,
    )
    return row


def report(result: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    rows = result["rows"]
    final = rows[-1]
    base = rows[result["baseline_row"]]  # taken, like the final one, with nothing in flight
    busy = rows[-2] if len(rows) > 1 else final  # the last mark with tasks in flight
    # the structures after the last task ended, against those at the baseline mark
    grew = {
        name: (base[name], final[name])
        for name in final
        if name not in ("done", "errors", "seconds", "rss_mb", "traced_kb", "status_requests")
        and final[name] > max(base[name], 0)
    }
    targets = {
        "rss within 10 % of the baseline": final["rss_mb"] <= 1.1 * base["rss_mb"],
        "traced within 10 % of the baseline": final["traced_kb"] <= 1.1 * base["traced_kb"],
        "no task watched at the end": final["tasks_watched"] == 0 and final["watches"] == 0,
        "nothing left in flight": final["in_flight"] == 0 and final["checks"] == 0,
        "every task finished": final["errors"] == 0 and final["done"] == args.tasks,
    }
    print(f"\nbaseline (none in flight) after {base['done']} tasks, last mark in flight "
          f"after {busy['done']}, final (none in flight) after {final['done']}:")  # fmt: skip
    print("| measure | baseline | last in flight | final | final / baseline |")
    print("| --- | --- | --- | --- | --- |")
    for name in ("rss_mb", "traced_kb"):
        ratio = final[name] / base[name]
        print(f"| {name} | {base[name]:.1f} | {busy[name]:.1f} | {final[name]:.1f} | {ratio:.3f} |")
    print("\n| structure | baseline | final |\n| --- | --- | --- |")
    for name in final:
        if name not in ("done", "errors", "seconds", "rss_mb", "traced_kb"):
            print(f"| {name} | {base[name]} | {final[name]} |")
    print("\ngrew (final > baseline):", grew or "nothing")
    for target, met in targets.items():
        print(f"{'met ' if met else 'MISSED'} {target}")
    return {"baseline": base, "final": final, "grew": grew, "targets": targets}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=50_000)
    parser.add_argument("--in-flight", type=int, default=300)
    parser.add_argument("--every", type=int, default=2500, help="record every N finished")
    parser.add_argument("--baseline", type=int, default=5000, help="compare with this mark")
    parser.add_argument("--scale", type=float, default=100.0, help="emulator time scale")
    parser.add_argument("--redis", action="store_true", help="through a redis-server too")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    unshadow_redis()  # before anything imports the redis package
    started = time.time()
    result = asyncio.run(soak(args))
    summary = report(result, args)
    name = f"soak-{args.tasks}{'-redis' if args.redis else ''}"
    payload = {"args": vars(args) | {"out": None}, **result, **summary}
    out = write_report(name, payload, started, args.out)
    rows = result["rows"]
    xs = [row["done"] for row in rows]
    chart(
        out,
        f"soak: {args.tasks} tasks, {args.in_flight} in flight, one session",
        "tasks finished",
        {
            "MB / KB": {
                "RSS (MB)": (xs, [row["rss_mb"] for row in rows]),
                "traced in kling_async (KB / 100)": (xs, [row["traced_kb"] / 100 for row in rows]),
            },
            "entries": {
                name: (xs, [row[name] for row in rows])
                for name in ("watches", "heap", "forecast_live", "forecast_ended")
            },
        },
    )


if __name__ == "__main__":
    main()
