"""A binding rate budget: how much of the cap the SDK uses, and whether any 1 s window
the server counts ever holds more than the cap, alone and through Redis, idle or busy.

    python benchmarks/budget.py                    # cap 100/s, 12 s a run
    python benchmarks/budget.py --hogs 3 --stalls  # three CPU hogs, worker loop stalls

Each run starts ``tests/support/redis_worker.py`` workers (1 without Redis; 1 and 3 sharing a
redis-server) awaiting 300 tasks that outlast the run, polled at least every 50 ms, so
the demand is many times the cap; the emulator runs in its own process and counts. Over
the run after a 2 s warm-up: requests per second / cap ("used"), and the most the
emulator saw in any 1 s sliding window ("peak"). The sliding window of the limiter is
``1 + SEND_JITTER`` s alone and ``1 + GRANT_LIFE + SEND_JITTER`` s through Redis, so at
most ``1 / window`` of the cap can be used in a long run: the rest is the price of the
guarantee. Prints a table, writes JSON outside the source tree, draws a chart.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _report import chart, unshadow_redis, write_report

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support.redis_server import RedisServer
from support.redis_worker import Worker

from kling_async import KlingSession, PollPolicy, TextToVideo
from kling_async._ratelimit import SEND_JITTER
from kling_async._ratelimit import WINDOW as LOCAL_WINDOW
from kling_async.testing import FAST_RETRY, EmulatorProcess

KEY = "sk-budget-0123456789"
TASKS = 300


def redis_window() -> float:
    from kling_async._redisbudget import WINDOW

    return WINDOW


async def run(processes: int, redis: str | None, args: argparse.Namespace) -> dict[str, Any]:
    async with EmulatorProcess("--time-scale=1", "--seed=3", "--fail-marker=") as emu:
        async with KlingSession(api_key=KEY, base_url=emu.url, retry=FAST_RETRY) as session:
            ids = [(await session.submit(TextToVideo(f"budget {i}"))).id for i in range(TASKS)]
        poll = PollPolicy(min_interval=0.01, max_interval=0.05, max_requests_per_second=args.cap)
        settings: dict[str, Any] = {
            "base_url": emu.url, "api_key": KEY, "redis": redis, "poll": poll, "timeout": 600,
        }  # fmt: skip
        if args.stalls:
            settings["stalls"] = {"longest": 0.2, "every": 0.25, "seed": 1}
        log = Path(tempfile.mkdtemp())
        group = [Worker({**settings, "worker": i}, log / f"w{i}.log") for i in range(processes)]
        try:
            await asyncio.gather(*(worker.start() for worker in group))
            await asyncio.gather(*(worker.attach(ids) for worker in group))
            await asyncio.sleep(2.0)
            await emu.reset_stats()
            started = time.monotonic()
            await asyncio.sleep(args.seconds)
            stats = await emu.stats()
            elapsed = time.monotonic() - started
        finally:
            await asyncio.gather(*(worker.stop() for worker in group))
    rate = stats["status_calls_total"] / elapsed
    return {
        "processes": processes,
        "redis": redis is not None,
        "rate": rate,
        "used": rate / args.cap,
        "peak": stats["max_status_per_second"],
        "bound": 1 / (redis_window() if redis is not None else LOCAL_WINDOW),
    }


async def bench(args: argparse.Namespace) -> list[dict[str, Any]]:
    server = RedisServer()
    server.start()
    rows = []
    try:
        for processes, redis in ((1, None), (1, server.url), (3, server.url)):
            row = await run(processes, redis, args)
            server.flush()
            rows.append(row)
            print(
                f"{processes} process(es) {'Redis' if redis else 'alone'}: {row['rate']:.1f}/s "
                f"= {row['used']:.1%} of the cap (bound {row['bound']:.1%}), peak {row['peak']}",
                flush=True,
            )
    finally:
        server.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cap", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--hogs", type=int, default=0, help="CPU hogs running alongside")
    parser.add_argument("--stalls", action="store_true", help="workers stall their loops")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    unshadow_redis()  # before anything imports the redis package
    started = time.time()
    hogs = [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(args.hogs)]
    try:
        rows = asyncio.run(bench(args))
    finally:
        for hog in hogs:
            hog.kill()
    print(f"\ncap {args.cap:g}/s, {args.hogs} hogs, stalls {'on' if args.stalls else 'off'}, "
          f"SEND_JITTER {SEND_JITTER * 1000:g} ms")  # fmt: skip
    print("| processes | Redis | req/s | used | bound (1 / window) | unused | peak 1 s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(
            f"| {row['processes']} | {'yes' if row['redis'] else 'no'} | {row['rate']:.1f} | "
            f"{row['used']:.1%} | {row['bound']:.1%} | {1 - row['used']:.1%} | {row['peak']} |"
        )
    name = f"budget-{args.cap:g}-hogs{args.hogs}{'-stalls' if args.stalls else ''}"
    out = write_report(name, {"args": vars(args) | {"out": None}, "rows": rows}, started, args.out)
    labels = [f"{r['processes']}{' Redis' if r['redis'] else ' alone'}" for r in rows]
    xs = list(range(len(rows)))
    chart(
        out,
        f"binding budget, cap {args.cap:g}/s, {args.hogs} hogs (x: {', '.join(labels)})",
        "run",
        {
            "share of the cap": {
                "used": (xs, [r["used"] for r in rows]),
                "bound": (xs, [r["bound"] for r in rows]),
            },
            "peak 1 s / cap": {"peak": (xs, [r["peak"] / args.cap for r in rows])},
        },
    )


if __name__ == "__main__":
    main()
