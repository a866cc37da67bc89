"""One repetition of each workload against a running mesh, timed as the
peers time theirs: ``time.perf_counter()`` in the client, from just before the
first submit to the last completion notice, after a warm-up.

Each ``run_*`` coroutine answers ``(metrics, headline)`` with the peers'
metric names, or raises :class:`~gridmesh.bench.client.BenchError`.
"""

from __future__ import annotations

import asyncio
import http.client
import os
import signal
import ssl
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from gridmesh.bench import replication
from gridmesh.bench import workloads as wl
from gridmesh.bench.client import BenchClient, BenchError, Completions, key_metadata, submit_request
from gridmesh.bench.stats import latency_metrics
from gridmesh.bench.task_types import LOGGED_BURN, ensure_exec_log_dir
from gridmesh.config import MeshConfig
from gridmesh.core.access import PeerRole
from gridmesh.core.builtin_tasks import burn_units
from gridmesh.grpc_support.probe import Connect, to_component, to_edge
from gridmesh.grpc_support.tls import MeshTls, channel
from gridmesh.v1 import common_pb2, scheduler_pb2, scheduler_pb2_grpc, worker_pb2, worker_pb2_grpc

Metrics = dict[str, Any]
KILL_POLL_S = 0.002
"""How often the W4 killer reads the execution log."""
KILL_FALLBACK_S = 2.0
"""If no task started less than 8 ms ago is seen this long after the 50th
finished, W4 kills whichever task process runs a task (noted in the record)."""
WIND_UP_S = 5.0
"""Waits inside a repetition end this long before its deadline, so that a
run with missing notices still reports what it saw (W4: the lost tasks)."""
KILL_LOOKAHEAD = 10
"""The killer asks the Worker service for its task processes this many tasks before the kill."""
E1_WARMUP_CALLS = 200


@dataclass
class Tally:
    """What the progress line shows: ``done`` of ``total`` (read by another thread)."""

    total: int = 0
    done_fn: Callable[[], int] = field(default=lambda: 0)

    @property
    def done(self) -> int:
        return self.done_fn()


@dataclass
class RunContext:
    client: BenchClient
    n: int
    result_dir: str
    deadline: float
    """``time.monotonic()`` by which the repetition must be over."""
    edge: str
    direct: str
    worker_addresses: list[str]
    tally: Tally = field(default_factory=Tally)
    config: MeshConfig | None = None
    """The mesh's settings (R1/R2: MySQL and RabbitMQ)."""
    eventmanager: str = ""
    """The EventManager as this profile reaches it (the edge, or directly)."""
    admin_tls: MeshTls | None = None
    """The admin certificate, for calls to the mesh's processes themselves
    (the worker nodes; None: TLS is off)."""
    target_tls: MeshTls | None = None
    """What calls to the profile's target present: the admin certificate
    when it is the Scheduler or the EventManager itself, else nothing."""
    edge_ca: str | None = None
    """The CA the edge's certificate is checked against (None: a plaintext edge)."""
    quick: bool = False

    def left(self) -> float:
        """Seconds a wait may still take, keeping a margin to wind up and report."""
        return max(1.0, self.deadline - time.monotonic() - WIND_UP_S)


def noop_request(result_dir: str) -> scheduler_pb2.SubmitTaskRequest:
    return submit_request("noop", {"payload": wl.PAYLOAD}, result_dir)


# -- warm-up -----------------------------------------------------------------------------


async def warm_up(ctx: RunContext, completions: Completions, extra: list[scheduler_pb2.SubmitTaskRequest]) -> None:
    """Round trips before the clock starts: proves the workers and the
    completion stream alive and warms the connections."""
    requests = [noop_request(ctx.result_dir) for _ in range(wl.WARMUP_ROUND_TRIPS)] + extra
    await _round(ctx, completions, requests)


async def _round(
    ctx: RunContext, completions: Completions, requests: list[scheduler_pb2.SubmitTaskRequest]
) -> tuple[float, float, list[str]]:
    """Submit all, wait for every notice: (first submit, all submitted) perf times and the ids in order."""
    completions.begin()
    ids = [""] * len(requests)

    def submitted(index: int, task_id: str) -> None:
        ids[index] = task_id
        completions.expect(task_id)

    t0 = time.perf_counter()
    await ctx.client.submit_all(requests, submitted)
    t_submitted = time.perf_counter()
    completions.seal()
    await completions.wait(ctx.left())
    failed = [completions.seen[i] for i in ids if completions.seen[i].state != common_pb2.SUCCEEDED]
    if failed:
        state = common_pb2.TaskState.Name(failed[0].state)
        raise BenchError(f"{len(failed)} of {len(ids)} tasks did not succeed; first: {state} {failed[0].error}")
    return t0, t_submitted, ids


# -- W1 W2 W3 ------------------------------------------------------------------------------


async def run_w1(ctx: RunContext) -> tuple[Metrics, str]:
    completions = ctx.client.completions()
    try:
        await warm_up(ctx, completions, [])
        ctx.tally.done_fn = lambda: completions.done
        request = noop_request(ctx.result_dir)
        t0, t_sub, ids = await _round(ctx, completions, [request] * ctx.n)
        t1 = max(completions.seen[i].at for i in ids)
    finally:
        await completions.close()
    return {
        "tasks_per_s": round(ctx.n / (t1 - t0), 1),
        "submit_per_s": round(ctx.n / (t_sub - t0), 1),
        "elapsed_s": round(t1 - t0, 3),
        "n": ctx.n,
    }, "tasks_per_s"


async def run_w2(ctx: RunContext) -> tuple[Metrics, str]:
    request = noop_request(ctx.result_dir)

    async def one() -> float:
        t = time.perf_counter()
        task = await ctx.client.wait(await ctx.client.submit(request), timeout=min(30.0, ctx.left()))
        elapsed = time.perf_counter() - t
        if task.state != common_pb2.SUCCEEDED:
            raise BenchError(f"task {task.task_id} ended {common_pb2.TaskState.Name(task.state)}: {task.error}")
        return elapsed

    for _ in range(wl.WARMUP_ROUND_TRIPS):
        await one()
    latencies: list[float] = []
    ctx.tally.done_fn = lambda: len(latencies)
    for _ in range(ctx.n):
        latencies.append(await one())
    return latency_metrics(latencies), "p50_ms"


def burn_unit_ms_today(reps: int = 15) -> float:
    """Median ms of one unit of the burn loop in this process (after one to warm up)."""
    burn_units(1)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        burn_units(1)
        times.append(time.perf_counter() - t)
    return round(statistics.median(times) * 1000, 2)


async def run_w3(ctx: RunContext) -> tuple[Metrics, str]:
    completions = ctx.client.completions()
    try:
        burn0 = submit_request("burn", {"units": 0}, ctx.result_dir)
        await warm_up(ctx, completions, [burn0] * wl.SLOTS)
        unit = burn_unit_ms_today()
        ctx.tally.done_fn = lambda: completions.done
        request = submit_request("burn", {"units": 1}, ctx.result_dir)
        t0, _, ids = await _round(ctx, completions, [request] * ctx.n)
        makespan = max(completions.seen[i].at for i in ids) - t0
    finally:
        await completions.close()
    ideal = wl.IDEAL_W3_S * ctx.n / wl.N_W3
    return {
        "makespan_s": round(makespan, 3),
        "ratio_vs_ideal": round(makespan / ideal, 3),
        "burn_unit_ms_today": unit,
        "ratio_vs_today_ideal": round(makespan / (ctx.n * unit / 1000 / wl.SLOTS), 3),
        "n": ctx.n,
    }, "ratio_vs_ideal"


# -- W4 --------------------------------------------------------------------------------------


@dataclass
class Kill:
    pid: int
    at: float
    """``time.time()`` right after the signal was sent."""
    how: str
    """``fresh`` (its task had started < 8 ms and < 0.4 typical run times before) or ``fallback``."""


class Killer(threading.Thread):
    """Once ``kill_after`` tasks have ended, kill -9 one task process that the
    Worker service lists as running a ``logged_burn`` task, preferring one
    whose task started less than 8 ms ago and early in its run (by the
    execution log)."""

    def __init__(
        self, log_path: Path, worker_addresses: list[str], kill_after: int, deadline: float, tls: MeshTls | None
    ) -> None:
        super().__init__(name="w4-killer", daemon=True)
        self.tail = wl.ExecLogTail(log_path)
        self.kill: Kill | None = None
        self.error: str | None = None
        self._addresses = worker_addresses
        self._tls = tls
        self._kill_after = kill_after
        self._deadline = deadline
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()
        if self.ident is not None:
            self.join(timeout=5)

    def run(self) -> None:
        channels = [channel(a, self._tls, PeerRole.WORKER) for a in self._addresses]
        stubs = [worker_pb2_grpc.WorkerStub(c) for c in channels]
        try:
            self._hunt(stubs)
        except grpc.RpcError as e:
            self.error = f"GetWorkerStatus failed: {e}"
        finally:
            for ch in channels:
                ch.close()

    def _running_pids(self, stubs: list[worker_pb2_grpc.WorkerStub]) -> set[int]:
        pids = set()
        for stub in stubs:
            status = stub.GetWorkerStatus(worker_pb2.GetWorkerStatusRequest(), timeout=2)
            pids |= {r.pid for r in status.running if r.task_type == LOGGED_BURN.name and r.pid}
        return pids

    def _fresh_age_s(self) -> float:
        typical = self.tail.typical_run_s()
        return wl.KILL_FRESH_S if typical is None else min(wl.KILL_FRESH_S, wl.KILL_FRESH_FRACTION * typical)

    def _hunt(self, stubs: list[worker_pb2_grpc.WorkerStub]) -> None:
        # Task processes are long-lived (one per slot, replaced only after a
        # crash), so the pids the Worker service listed shortly before still
        # name task processes: ask ahead, and kill without a call in between.
        known: set[int] = set()
        reached_at: float | None = None
        fresh_age_s = wl.KILL_FRESH_S
        while not self._halt.is_set() and time.monotonic() < self._deadline:
            self.tail.poll()
            if not known and self.tail.ended >= self._kill_after - KILL_LOOKAHEAD:
                known = self._running_pids(stubs)
            if self.tail.ended >= self._kill_after:
                now = time.time()
                if reached_at is None:  # learnt once, from the tasks ended so far (not every poll)
                    reached_at, fresh_age_s = now, self._fresh_age_s()
                fresh = self.tail.fresh_starts(now, fresh_age_s)
                chosen = [pid for pid in fresh if pid in known]
                how = "fresh"
                if fresh and not chosen:
                    known |= self._running_pids(stubs)
                    chosen = [pid for pid in fresh if pid in known]
                if not chosen and now - reached_at > KILL_FALLBACK_S:
                    running = self._running_pids(stubs)
                    self.tail.poll()
                    chosen = [pid for pid in running if self.tail.open_start(pid)]
                    how = "fallback"
                # The task may have ended while we chose (a slow poll, an RPC,
                # the GIL): read the log once more, so the kill lands mid-task.
                self.tail.poll()
                chosen = [pid for pid in chosen if self.tail.open_start(pid)]
                if chosen:
                    os.kill(chosen[0], signal.SIGKILL)
                    self.kill = Kill(chosen[0], time.time(), how)
                    return
            self._halt.wait(KILL_POLL_S)


def _kill_age_ms(log: wl.ExecLog, kill: Kill) -> float | None:
    """How long the killed process's task had run when the kill came."""
    starts = [at for ex in log.values() for pid, at in ex.starts if pid == kill.pid and at <= kill.at]
    return round((kill.at - max(starts)) * 1000, 2) if starts else None


async def run_w4(ctx: RunContext) -> tuple[Metrics, str]:
    if not ctx.worker_addresses:
        raise BenchError("no worker node is registered with the Scheduler")
    if LOGGED_BURN.name not in await ctx.client.task_types():
        raise BenchError(
            f"the mesh does not know the task type {LOGGED_BURN.name}: install gridmesh (pip install -e .) "
            "and restart the mesh, so that its Scheduler and workers load the plugin"
        )
    log_dir = ensure_exec_log_dir()
    stem = f"w4-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    warm_log, log_path = log_dir / f"{stem}-warmup.log", log_dir / f"{stem}.log"

    def burn(units: int, tag: int, log: Path) -> scheduler_pb2.SubmitTaskRequest:
        return submit_request(LOGGED_BURN.name, {"units": units, "tag": tag, "log": log.name}, ctx.result_dir)

    completions = ctx.client.completions()
    killer = Killer(log_path, ctx.worker_addresses, wl.KILL_AFTER_W4, time.monotonic() + ctx.left(), ctx.admin_tls)
    try:
        await warm_up(ctx, completions, [burn(0, i, warm_log) for i in range(wl.SLOTS)])
        if len(wl.read_exec_log(warm_log)) != wl.SLOTS:
            raise BenchError(
                f"the workers do not write the execution log in {log_dir} (is logged_burn installed, "
                "and do the workers share this machine's temp directory?)"
            )
        ctx.tally.done_fn = lambda: completions.done
        completions.begin()
        tags: dict[str, int] = {}

        def submitted(index: int, task_id: str) -> None:
            tags[task_id] = index
            completions.expect(task_id)

        killer.start()
        t0 = time.perf_counter()
        await ctx.client.submit_all((burn(wl.W4_UNITS, i, log_path) for i in range(ctx.n)), submitted)
        completions.seal()
        errors: list[str] = []
        try:
            await completions.wait(ctx.left())
        except BenchError as e:
            errors.append(str(e))  # missing notices are the verdict's "lost"
        notices = {tag: completions.seen.get(task_id) for task_id, tag in tags.items()}
        done_at = [n.at for n in notices.values() if n is not None]
        makespan = (max(done_at) - t0) if done_at else None
        killer.stop()
        log = wl.read_exec_log(log_path)
    finally:
        await completions.close()
        killer.stop()
        for path in (warm_log, log_path):
            path.unlink(missing_ok=True)
    kill = killer.kill
    if kill is None:
        raise BenchError(killer.error or f"no task process was killed ({killer.tail.ended} tasks ended)")
    succeeded = [tag for tag, n in notices.items() if n is not None and n.state == common_pb2.SUCCEEDED]
    errors += [
        f"{tag}:{common_pb2.TaskState.Name(n.state)}"
        for tag, n in notices.items()
        if n is not None and n.state != common_pb2.SUCCEEDED
    ]
    verdict = wl.crash_verdict(log, ctx.n, kill.at, kill.pid, succeeded)
    metrics = verdict.metrics()
    metrics.update(
        {
            "makespan_s": None if makespan is None else round(makespan, 3),
            "ratio_vs_ideal": None if makespan is None else round(makespan / (wl.IDEAL_W4_S * ctx.n / wl.N_W4), 3),
            "killed_pid": kill.pid,
            "kill_choice": kill.how,
            "kill_task_age_ms": _kill_age_ms(log, kill),
            "client_errors": errors[:5],
            "n": ctx.n,
        }
    )
    return metrics, "recovery_s"


# -- E1 ------------------------------------------------------------------------------------------


def _grpc_latencies(target: str, connect: Connect, task_id: str, n: int, count: Callable[[], None]) -> list[float]:
    with connect(target) as ch:
        stub = scheduler_pb2_grpc.SchedulerStub(ch)
        request = scheduler_pb2.GetTaskRequest(task_id=task_id)
        for _ in range(E1_WARMUP_CALLS):
            stub.GetTask(request, timeout=10, metadata=key_metadata())
        out = []
        for _ in range(n):
            t = time.perf_counter()
            task = stub.GetTask(request, timeout=10, metadata=key_metadata())
            out.append(time.perf_counter() - t)
            if task.task_id != task_id:
                raise BenchError(f"GetTask through {target} answered another task")
            count()
    return out


def _json_latencies(edge: str, edge_ca: str | None, task_id: str, n: int, count: Callable[[], None]) -> list[float]:
    host, _, port = edge.rpartition(":")
    conn = (  # one kept-alive connection
        http.client.HTTPSConnection(host, int(port), timeout=10, context=ssl.create_default_context(cafile=edge_ca))
        if edge_ca
        else http.client.HTTPConnection(host, int(port), timeout=10)
    )
    path = f"/v1/tasks/{task_id}"

    def get() -> bytes:
        conn.request("GET", path, headers=dict(key_metadata()))
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise BenchError(f"GET {path} through Envoy answered {response.status}: {body[:200]!r}")
        return body

    try:
        for _ in range(E1_WARMUP_CALLS):
            get()
        out = []
        for _ in range(n):
            t = time.perf_counter()
            body = get()
            out.append(time.perf_counter() - t)
            if task_id.encode() not in body:
                raise BenchError(f"GET {path} answered another task")
            count()
    finally:
        conn.close()
    return out


def measure_e1(
    edge: str, direct: str, tls: MeshTls | None, edge_ca: str | None, task_id: str, n: int, tally: Tally
) -> Metrics:
    """Sequential ``GetTask`` of one task: straight to the Scheduler, through
    Envoy (gRPC), through Envoy (HTTP/JSON, one kept-alive connection)."""
    done = [0]
    tally.total, tally.done_fn = 3 * n, lambda: done[0]

    def count() -> None:
        done[0] += 1

    metrics: Metrics = {"n": n}
    metrics.update(
        latency_metrics(
            _grpc_latencies(direct, to_component(tls, PeerRole.SCHEDULER), task_id, n, count), "direct_grpc_"
        )
    )
    metrics.update(latency_metrics(_grpc_latencies(edge, to_edge(edge_ca), task_id, n, count), "envoy_grpc_"))
    metrics.update(latency_metrics(_json_latencies(edge, edge_ca, task_id, n, count), "envoy_json_"))
    for path in ("envoy_grpc", "envoy_json"):
        for p in ("p50", "p99"):
            metrics[f"{path}_overhead_{p}_ms"] = round(metrics[f"{path}_{p}_ms"] - metrics[f"direct_grpc_{p}_ms"], 3)
    return metrics


async def run_e1(ctx: RunContext) -> tuple[Metrics, str]:
    task = await ctx.client.wait(await ctx.client.submit(noop_request(ctx.result_dir)), timeout=ctx.left())
    metrics = await asyncio.to_thread(
        measure_e1, ctx.edge, ctx.direct, ctx.admin_tls, ctx.edge_ca, task.task_id, ctx.n, ctx.tally
    )
    return metrics, "envoy_json_overhead_p50_ms"


# -- R1 R2 ----------------------------------------------------------------------------------------


def _replication_args(ctx: RunContext) -> tuple[MeshConfig, str, float, Callable[[Callable[[], int]], None]]:
    if ctx.config is None or not ctx.eventmanager:
        raise BenchError("R1/R2 need the mesh's settings and its EventManager's address")

    def progress(done: Callable[[], int]) -> None:
        ctx.tally.done_fn = done

    # The appliers must be stopped and everything deleted before the repetition's deadline.
    return ctx.config, ctx.eventmanager, ctx.deadline - 2 * WIND_UP_S, progress


async def run_r1(ctx: RunContext) -> tuple[Metrics, str]:
    config, target, deadline, progress = _replication_args(ctx)
    return await asyncio.to_thread(
        replication.measure_r1, config, target, ctx.target_tls, ctx.edge_ca, ctx.n, deadline, progress
    ), "events_per_s"


async def run_r2(ctx: RunContext) -> tuple[Metrics, str]:
    config, target, deadline, progress = _replication_args(ctx)
    rate = replication.r2_rate(ctx.quick)
    metrics = await asyncio.to_thread(
        replication.measure_r2, config, target, ctx.target_tls, ctx.edge_ca, ctx.n, rate, deadline, progress
    )
    return metrics, "p50_ms"


RUNNERS = {"W1": run_w1, "W2": run_w2, "W3": run_w3, "W4": run_w4, "R1": run_r1, "R2": run_r2, "E1": run_e1}
"""The workloads that can be measured, by id."""
