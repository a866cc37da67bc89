"""How precisely the mesh keeps time, measured against a running mesh
(``gridmesh up``; its config from the environment, as the CLI reads it):

- run_timeout: how long after an attempt's limit its process is dead — the
  pid, read from the node's ``GetWorkerStatus``, polled every millisecond
  in /proc;
- schedules: how long after each tick its task is created (a schedule every
  second).

    .venv/bin/python tools/timing.py [--timeouts 10] [--ticks 20]

Prints medians and maxima; it asserts nothing (speed and precision are
measured, not tested).
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import time
from datetime import UTC, datetime, timedelta

from gridmesh.cli import mesh
from gridmesh.config import load_config
from gridmesh.core.access import PeerRole
from gridmesh.grpc_support.tls import MeshTls, channel
from gridmesh.v1 import common_pb2, scheduler_pb2, worker_pb2, worker_pb2_grpc

RUN_TIMEOUT_S = 1.0


def _running(stub: worker_pb2_grpc.WorkerStub, task_id: str) -> worker_pb2.RunningTask | None:
    status = stub.GetWorkerStatus(worker_pb2.GetWorkerStatusRequest(), timeout=5)
    return next((r for r in status.running if r.task_id == task_id), None)


def timeouts(count: int) -> list[float]:
    """Seconds from each attempt's limit (its start + run_timeout) to its process being gone."""
    config = load_config(os.environ)
    node = f"{config.worker.host}:{config.worker.base_port}"
    late = []
    with (
        mesh.task_client(config) as tasks,
        channel(node, MeshTls.load(config, PeerRole.ADMIN), PeerRole.WORKER) as ch,
    ):
        stub = worker_pb2_grpc.WorkerStub(ch)
        for _ in range(count):
            task = tasks.submit("sleep", {"ms": 60_000}, "timing", run_timeout=RUN_TIMEOUT_S, max_attempts=1)
            while (running := _running(stub, task.task_id)) is None:
                time.sleep(0.005)
            limit = running.started_at.ToDatetime(tzinfo=UTC) + timedelta(seconds=RUN_TIMEOUT_S)
            while os.path.exists(f"/proc/{running.pid}"):
                time.sleep(0.001)
            late.append((datetime.now(UTC) - limit).total_seconds())
            final = tasks.wait(task.task_id, timeout=30)
            assert final.failure_reason == common_pb2.Task.TIMEOUT, final
    return late


def ticks(count: int) -> list[float]:
    """Seconds from each tick of a schedule every second to its task's creation."""
    config = load_config(os.environ)
    with mesh.task_client(config) as tasks:
        schedule = scheduler_pb2.Schedule(task=scheduler_pb2.SubmitTaskRequest(task_type="noop", result_dir="timing"))
        schedule.interval.FromSeconds(1)
        made = tasks.create_schedule(schedule)
        prefix = f"schedule:{made.schedule_id}:"
        try:
            time.sleep(count + 1.5)
        finally:
            tasks.delete_schedule(made.schedule_id)
        listed = list(itertools.islice(tasks.list(task_type="noop", page_size=1000), 5000))
    lateness = []
    for task in listed:
        if task.idempotency_key.startswith(prefix):
            tick = datetime.strptime(task.idempotency_key.removeprefix(prefix), "%Y%m%dT%H%M%S.%fZ")
            lateness.append((task.created_at.ToDatetime(tzinfo=UTC) - tick.replace(tzinfo=UTC)).total_seconds())
    return lateness


def _summary(what: str, values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    return f"{what}: n={len(ms)} median {statistics.median(ms):.1f} ms, max {ms[-1]:.1f} ms, min {ms[0]:.1f} ms"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--timeouts", type=int, default=10, help="sleep tasks killed by a 1 s run_timeout")
    p.add_argument("--ticks", type=int, default=20, help="ticks of a schedule every second")
    args = p.parse_args()
    print(_summary("run_timeout: process gone after its limit", timeouts(args.timeouts)))
    print(_summary("schedule: task created after its tick", ticks(args.ticks)))


if __name__ == "__main__":
    main()
