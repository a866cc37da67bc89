"""Statistics definitions of the benchmark, the same as the peers' (pure)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any


def percentile(values: Iterable[float], p: float) -> float:
    """Nearest-rank percentile (``p`` in 0..100) of a non-empty collection."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    k = max(0, min(len(ordered) - 1, math.ceil(p / 100.0 * len(ordered)) - 1))
    return ordered[k]


def latency_metrics(seconds: Sequence[float], prefix: str = "") -> dict[str, Any]:
    """p50/p90/p99/mean/max in ms (rounded to µs) and n, of latencies in seconds."""
    ms = [x * 1000.0 for x in seconds]
    return {
        f"{prefix}p50_ms": round(percentile(ms, 50), 3),
        f"{prefix}p90_ms": round(percentile(ms, 90), 3),
        f"{prefix}p99_ms": round(percentile(ms, 99), 3),
        f"{prefix}mean_ms": round(sum(ms) / len(ms), 3),
        f"{prefix}max_ms": round(max(ms), 3),
        f"{prefix}n": len(ms),
    }


def numbers(values: Iterable[Any]) -> list[float]:
    """The values that are numbers (``None`` and the like are skipped; bools are not numbers)."""
    return [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]


def median(values: Iterable[Any]) -> float | None:
    """Median of the numbers among ``values``; ``None`` if there are none."""
    xs = numbers(values)
    return statistics.median(xs) if xs else None


def spread(values: Iterable[Any]) -> tuple[float, float, float] | None:
    """(median, min, max) of the numbers among ``values``; ``None`` if there are none."""
    xs = numbers(values)
    return (statistics.median(xs), min(xs), max(xs)) if xs else None
