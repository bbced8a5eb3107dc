"""What every benchmark shares: where results go, the quantile, and the JSON report."""

from __future__ import annotations

import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(tempfile.gettempdir()) / "kling-async-bench"
"""Results are written outside the source tree, so a run never dirties a clone."""


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
