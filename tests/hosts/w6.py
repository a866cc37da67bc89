"""Workload W6: how dispatch scales with worker hosts.

``tasks`` ``sleep {ms: 50}`` tasks are submitted through the edge (SubmitTasks
batches, as the bench's other workloads do) to a mesh on hosts
(tests/hosts/cluster.py, no Spark) with 1, 2 and then 3 worker hosts of 8
slots each; a rep is timed from the first submit to the last completion
notice on one WatchTasks stream, after a warm-up round of the same size.
Sleep tasks keep the tasks' own CPU out of it: an ideal mesh would run 160
tasks/s per host. Each host count gets a mesh of its own, started afresh; the
reps run back to back on it.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gridmesh.bench.client import BenchClient, Completions, submit_request
from gridmesh.config import API_KEY_VAR
from gridmesh.v1 import common_pb2
from tests.hosts.cluster import Cluster, Layout

SLOTS = 8
SLEEP_MS = 50
WARMUP = 48
TIMEOUT_S = 900.0


async def _round(client: BenchClient, completions: Completions, n: int, ms: int) -> tuple[float, float]:
    """Submit ``n`` sleep tasks, wait for every notice; (first submit, last notice) perf times."""
    completions.begin()
    ids = [""] * n

    def submitted(index: int, task_id: str) -> None:
        ids[index] = task_id
        completions.expect(task_id)

    request = submit_request("sleep", {"ms": ms}, "w6")
    t0 = time.perf_counter()
    await client.submit_all([request] * n, submitted)
    completions.seal()
    await completions.wait(TIMEOUT_S)
    failed = [i for i in ids if completions.seen[i].state != common_pb2.SUCCEEDED]
    if failed:
        raise RuntimeError(f"{len(failed)} of {n} W6 tasks did not succeed")
    return t0, max(completions.seen[i].at for i in ids)


async def _reps(edge: str, ca_file: str, tasks: int, reps: int) -> list[float]:
    client = BenchClient(edge, edge_ca=ca_file)
    completions = client.completions()
    try:
        # Every node alive, the stream and channels warm, then one unrecorded
        # round: Kafka's brokers are JVMs, and their first thousands of
        # events run before the JIT has compiled them.
        await _round(client, completions, WARMUP, 1)
        await _round(client, completions, tasks, SLEEP_MS)
        elapsed = []
        for _ in range(reps):
            t0, t1 = await _round(client, completions, tasks, SLEEP_MS)
            elapsed.append(t1 - t0)
        return elapsed
    finally:
        await completions.close()
        await client.close()


def run_w6(base: Path, host_counts: list[int], tasks: int, reps: int) -> Iterator[dict[str, Any]]:
    """One record per rep, then one summary per host count (median tasks/s and its ratio to 1 host)."""
    medians: dict[int, float] = {}
    for hosts in host_counts:
        cluster = Cluster(base / f"w6-{hosts}", Layout(workers=hosts, slots=SLOTS, spark=False))
        try:
            cluster.start()
            os.environ[API_KEY_VAR] = cluster.admin_key
            elapsed = asyncio.run(_reps(cluster.edge, cluster.ca_file, tasks, reps))
        finally:
            cluster.stop()
        rates = [tasks / s for s in elapsed]
        for rep, (s, rate) in enumerate(zip(elapsed, rates, strict=True), start=1):
            yield {
                "workload": "W6",
                "worker_hosts": hosts,
                "slots_per_host": SLOTS,
                "tasks": tasks,
                "sleep_ms": SLEEP_MS,
                "rep": rep,
                "elapsed_s": round(s, 3),
                "tasks_per_s": round(rate, 1),
                "at": datetime.now(UTC).isoformat(timespec="seconds"),
            }
        medians[hosts] = statistics.median(rates)
        summary: dict[str, Any] = {
            "workload": "W6",
            "summary": True,
            "worker_hosts": hosts,
            "median_tasks_per_s": round(medians[hosts], 1),
            "ideal_tasks_per_s": hosts * SLOTS * 1000 / SLEEP_MS,
        }
        if 1 in medians:
            summary["vs_1_host"] = round(medians[hosts] / medians[1], 2)
        yield summary
