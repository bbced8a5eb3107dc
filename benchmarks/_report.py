"""What every benchmark shares: where results go, the quantile, the JSON report and its
chart (matplotlib, from the ``[bench]`` extra)."""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = Path(tempfile.gettempdir()) / "kling-async-bench"
"""Results are written outside the source tree, so a run never dirties a clone."""


def unshadow_redis() -> None:
    """Take this folder off ``sys.path`` (once a script imported its siblings): here,
    ``redis.py`` (the Redis benchmark) would stand for the redis package."""
    sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != HERE]


def quantile(values: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile of ``values`` (no interpolation: a real sample)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def write_report(name: str, report: dict[str, Any], started: float, out: Path | None) -> Path:
    """Write ``report`` with the run's time and machine to ``out`` (default: a fresh file
    named after ``name`` under :data:`RESULTS`), and say where."""
    report = {
        **report,
        "seconds": time.time() - started,
        "python": platform.python_version(),
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
    }
    out = out or RESULTS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {out} ({report['seconds']:.0f} s)")
    return out


def chart(
    report: Path,
    title: str,
    xlabel: str,
    panels: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float]]]],
) -> Path | None:
    """Draw ``panels`` (y label -> {series name: (xs, ys)}), one above the other, to a PNG
    beside ``report`` (the JSON :func:`write_report` wrote), and say where. Without
    matplotlib (``pip install -e '.[bench]'``) it says so and draws nothing."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display
        import matplotlib.pyplot as plt
    except ImportError:
        print("no chart: matplotlib is missing (pip install -e '.[bench]')")
        return None
    figure, axes = plt.subplots(len(panels), 1, figsize=(8, 3 * len(panels)), squeeze=False)
    for ax, (ylabel, series) in zip(axes[:, 0], panels.items(), strict=True):
        for name, (xs, ys) in series.items():
            ax.plot(xs, ys, marker=".", label=name)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    axes[0, 0].set_title(title)
    axes[-1, 0].set_xlabel(xlabel)
    figure.tight_layout()
    out = report.with_suffix(".png")
    figure.savefig(out, dpi=100)
    plt.close(figure)
    print(f"chart: {out}")
    return out
