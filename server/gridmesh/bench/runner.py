"""``gridmesh bench``: the SPEC §5 workloads against a running mesh, the way
``../shared/peers/run_all.py`` measures the peers.

For each workload: a load gate (wait for a quiet machine), then N
repetitions, each with its own RSS/foreign-CPU sampler process and its own
``RESULT {json}`` record; a repetition during which foreign processes used
more than ``foreign_max_pct`` of a core is marked discarded and run again
after the gate. If no mesh answers, one is started with the mesh code (one
worker node, 2 slots) and exactly what was started is stopped at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from gridmesh.adapters import prometheus
from gridmesh.bench import machine, replication
from gridmesh.bench.client import IN_FLIGHT, BenchClient, BenchError
from gridmesh.bench.measure import RUNNERS, RunContext, Tally, burn_unit_ms_today
from gridmesh.bench.records import append_jsonl, finish_record, new_record, result_line, versions
from gridmesh.bench.sampler import Sampler
from gridmesh.bench.table import render
from gridmesh.bench.workloads import SLOTS, WORKLOADS, Workload
from gridmesh.cli import backing, mesh, procs
from gridmesh.common.errors import InvalidArgument, Unavailable
from gridmesh.config import API_KEY_VAR, MeshConfig
from gridmesh.core.access import PeerRole
from gridmesh.grpc_support.probe import grpc_health, to_component, to_edge
from gridmesh.grpc_support.tls import MeshTls
from gridmesh.v1 import scheduler_pb2

SCHEDULER_SERVICE = "gridmesh.v1.Scheduler"
GATE_MODES = ("case", "rep", "off")
BUSY_GATE_TIMEOUT_S = 60.0
"""After two gates in a row timed out the machine is persistently busy: wait at most this long."""
REPLICATION = ("R1", "R2")
RSS_SCOPE = (
    "bench client + gridmesh services, worker nodes with their task processes, Envoy"
    " (not the analytics job: its Spark application is reported with the backing services)"
)


@dataclass(frozen=True)
class BenchOptions:
    """What ``gridmesh bench`` was asked to do."""

    workloads: tuple[str, ...]
    """Workload ids in the order to run them."""
    reps: int = 3
    """Repetitions of each workload."""
    w4_reps: int = 5
    """Repetitions of W4 when ``reps`` > 1 (recovery times can be bimodal)."""
    direct: bool = False
    """Talk straight to the Scheduler instead of through Envoy."""
    quick: bool = False
    """Small N, for smoke tests (numbers meaningless)."""
    out: Path | None = None
    """JSON-lines file the records are appended to."""
    gate: str = "case"
    """``case``: gate before each workload; ``rep``: before each repetition;
    ``off``: never (and no re-runs for foreign CPU)."""
    gate_threshold: float = machine.LOAD_THRESHOLD
    """The gate waits for load1 below this."""
    gate_timeout_s: float = machine.GATE_TIMEOUT_S
    """Longest one gate waits before measuring anyway (flagged in the record)."""
    foreign_max_pct: float = 5.0
    """A repetition with more foreign CPU (% of a core) is discarded and re-run."""
    retries: int = 2
    """Re-runs of a repetition disturbed by foreign CPU (the last one is kept)."""

    def __post_init__(self) -> None:
        unknown = [w for w in self.workloads if w not in WORKLOADS]
        if unknown:
            raise InvalidArgument(f"unknown workload(s) {', '.join(unknown)}; known: {', '.join(WORKLOADS)}")
        later = [w for w in self.workloads if not WORKLOADS[w].implemented]
        if later:
            raise InvalidArgument(f"{', '.join(later)}: not measured yet; available: {', '.join(RUNNERS)}")
        if self.gate not in GATE_MODES:
            raise InvalidArgument(f"gate must be one of {', '.join(GATE_MODES)}")
        if self.reps < 1 or self.w4_reps < 1:
            raise InvalidArgument("reps must be at least 1")

    @property
    def profile(self) -> str:
        return "direct" if self.direct else "edge"

    def reps_of(self, workload: str) -> int:
        return max(self.reps, self.w4_reps) if workload == "W4" and self.reps > 1 else self.reps


# -- the progress line ----------------------------------------------------------------------


class ProgressLine:
    """One line on stderr redrawn twice a second while a repetition runs
    (on a terminal; elsewhere a line every 10 s), and notes above it."""

    BAR = 24

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        self._tty = self._stream.isatty()
        self._label = ""
        self._tally: Tally | None = None
        self._since = 0.0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="bench-progress", daemon=True)
        self._thread.start()

    def note(self, text: str) -> None:
        with self._lock:
            self._clear()
            print(text, file=self._stream, flush=True)

    def begin(self, label: str, tally: Tally) -> None:
        with self._lock:
            self._label, self._tally, self._since = label, tally, time.monotonic()
        self._wake.set()

    def end(self) -> None:
        with self._lock:
            self._clear()
            self._tally = None

    def close(self) -> None:
        self.end()
        self._closed = True
        self._wake.set()

    def _clear(self) -> None:
        if self._tty:
            self._stream.write("\r\033[K")
            self._stream.flush()

    def line(self) -> str:
        tally = self._tally
        if tally is None:
            return ""
        done, total = tally.done, tally.total
        filled = int(self.BAR * min(done, total) / total) if total else 0
        bar = "#" * filled + "." * (self.BAR - filled)
        return f"  {self._label} [{bar}] {done}/{total}  {time.monotonic() - self._since:.0f} s"

    def _loop(self) -> None:
        last_plain = 0.0
        while not self._closed:
            self._wake.wait(0.5)
            self._wake.clear()
            with self._lock:
                text = self.line()
                if not text:
                    continue
                if self._tty:
                    self._stream.write("\r\033[K" + text)
                    self._stream.flush()
                elif time.monotonic() - last_plain >= 10:
                    last_plain = time.monotonic()
                    print(text, file=self._stream, flush=True)


# -- the mesh ---------------------------------------------------------------------------------


def edge_address(config: MeshConfig) -> str:
    return f"{config.envoy.host}:{config.envoy.port}"


def leading_scheduler(config: MeshConfig) -> str | None:
    """The Scheduler that serves (a standby answers NOT_SERVING)."""
    connect = to_component(functools.partial(MeshTls.load, config, PeerRole.ADMIN), PeerRole.SCHEDULER)
    return next(
        (a for a in config.scheduler_addresses if grpc_health(a, SCHEDULER_SERVICE, connect=connect) == "SERVING"),
        None,
    )


def answers(config: MeshConfig, direct: bool) -> bool:
    if direct:
        return leading_scheduler(config) is not None
    return grpc_health(config.edge_address, SCHEDULER_SERVICE, connect=to_edge(config.edge_ca_file)) == "SERVING"


@contextlib.contextmanager
def mesh_running(
    config: MeshConfig, env: Mapping[str, str], direct: bool, say: Callable[[str], None]
) -> Iterator[list[str]]:
    """A mesh that answers; if none does, start one (one worker node with
    2 slots) and on exit stop exactly the processes started here, newest
    first. Yields the names of the started processes."""
    if answers(config, direct):
        yield []
        return
    runs = mesh.run_dir(config)
    before = {name for name in procs.recorded(runs) if procs.alive(name, runs)}
    say("no mesh answers: starting one (gridmesh up --workers 1, 2 slots)")
    try:
        mesh.up(
            config,
            workers=1,
            env={**env, "GRIDMESH_WORKER_SLOTS": str(SLOTS)},
            progress=lambda component, what: say(f"  {component:<14} {what}"),
        )
        yield [name for name in procs.recorded(runs) if name not in before]
    finally:
        started = [name for name in procs.recorded(runs) if name not in before]
        timeouts = {s.name: s.stop_timeout_s for s in backing.backing_services(config)}
        for name in reversed(started):
            procs.stop(name, runs, timeouts.get(name, procs.DEFAULT_STOP_TIMEOUT_S))
        if started:
            say(f"stopped what the bench started: {', '.join(reversed(started))}")


def discover(config: MeshConfig, worker_addresses: list[str]) -> machine.ProcessMap:
    """gridmesh's processes (by the mesh's records, else by listening port),
    the backing services' (the analytics job's Spark among them) and the
    bench's ancestors."""
    runs = mesh.run_dir(config)
    ports = machine.listeners()
    services = backing.backing_services(config)
    backing_names = {s.name for s in services}
    ours: dict[str, list[int]] = {"client": [os.getpid()]}
    found: dict[str, list[int]] = {}
    for name in procs.recorded(runs):
        pid = procs.alive(name, runs)
        if pid and name in (machine.ANALYTICS, "prometheus"):
            found[name] = [pid]  # the Spark job and Prometheus: reported with the backing services
        elif pid and name not in backing_names:
            ours[name] = [pid]
    known = {pid for pids in [*ours.values(), *found.values()] for pid in pids}
    by_port = [
        ("scheduler", config.scheduler.port),
        ("scheduler-standby", config.scheduler.standby_port),
        ("storekeeper", config.storekeeper.port),
        ("eventmanager", config.eventmanager.port),
        ("envoy", config.envoy.port),
        *((f"worker@{a}", int(a.rpartition(":")[2])) for a in worker_addresses if a.rpartition(":")[2].isdigit()),
    ]
    for name, port in by_port:
        pid = ports.get(port) if port else None
        if pid and pid not in known:
            ours.setdefault(name, []).append(pid)
            known.add(pid)
    for svc in services:
        pid = procs.alive(svc.name, runs) or ports.get(getattr(svc, "port", 0))
        if pid:
            found[svc.name] = [pid]
    spark = machine.spark_pids(exclude=machine.tree(known))
    if spark:
        found["spark"] = spark
    return machine.ProcessMap(ours, found, machine.ancestors(os.getpid()))


async def _workers(target: str, tls: MeshTls | None, edge_ca: str | None) -> list[scheduler_pb2.WorkerInfo]:
    client = BenchClient(target, tls=tls, edge_ca=edge_ca)
    try:
        return await client.workers()
    finally:
        await client.close()


# -- one repetition --------------------------------------------------------------------------------


@dataclass
class Session:
    """What every repetition of one bench run shares."""

    options: BenchOptions
    target: str
    edge: str
    direct: str
    worker_addresses: list[str]
    conditions: dict[str, Any]
    versions: dict[str, Any]
    result_dir: str
    progress: ProgressLine
    records: list[dict[str, Any]] = field(default_factory=list)
    config: MeshConfig | None = None
    eventmanager: str = ""
    admin_tls: MeshTls | None = None
    """The admin certificate, for calls to the mesh's processes themselves
    (None: TLS is off)."""
    edge_ca: str | None = None
    """The CA the edge's certificate is checked against (None: a plaintext edge)."""
    via_scheduler: bool = False
    """Whether ``target`` is the Scheduler itself (else the edge)."""

    @property
    def target_tls(self) -> MeshTls | None:
        return self.admin_tls if self.via_scheduler else None


async def _measure(session: Session, workload: Workload, n: int, tally: Tally) -> tuple[dict[str, Any], str]:
    client = BenchClient(session.target, tls=session.target_tls, edge_ca=session.edge_ca)
    ctx = RunContext(
        client=client,
        n=n,
        result_dir=session.result_dir,
        deadline=time.monotonic() + workload.timeout_s,
        edge=session.edge,
        direct=session.direct,
        worker_addresses=session.worker_addresses,
        tally=tally,
        config=session.config,
        eventmanager=session.eventmanager,
        admin_tls=session.admin_tls,
        target_tls=session.target_tls,
        edge_ca=session.edge_ca,
        quick=session.options.quick,
    )
    try:
        return await asyncio.wait_for(RUNNERS[workload.id](ctx), workload.timeout_s)
    except TimeoutError:
        raise BenchError(f"{workload.id} did not finish within {workload.timeout_s:.0f} s") from None
    finally:
        await client.close()


def run_rep(
    session: Session, workload: Workload, rep: int, gate: Mapping[str, Any], processes: machine.ProcessMap
) -> dict[str, Any]:
    """Measure one repetition; answers its record (``ok`` false with the error if it failed)."""
    n = workload.size(session.options.quick)
    record = new_record(
        workload.id,
        session.options.profile,
        rep,
        conditions={
            **session.conditions,
            "n": n,
            **(replication.conditions(session.options.quick) if workload.id in REPLICATION else {}),
        },
        gate=gate,
        load1=machine.load1(),
    )
    tally = Tally(total=n)
    metrics: dict[str, Any] | None = None
    headline: str | None = None
    error: str | None = None
    messages_before = grpc_messages(session.config) if session.config else {}
    sampler = Sampler(processes)
    session.progress.begin(f"{workload.id} rep {rep}/{session.options.reps_of(workload.id)}", tally)
    try:
        metrics, headline = asyncio.run(_measure(session, workload, n, tally))
    except BenchError as e:
        error = str(e)
    except Exception as e:  # a failed repetition is a result: the run goes on
        error = f"{type(e).__name__}: {e}"
    finally:
        sample = sampler.stop()
        session.progress.end()
    if session.config is not None:
        record["grpc_messages"] = messages_between(messages_before, grpc_messages(session.config))
    return finish_record(
        record,
        metrics=metrics,
        headline=headline,
        error=error,
        sample=sample,
        load1=machine.load1(),
        versions_=session.versions,
    )


def grpc_messages(config: MeshConfig) -> dict[str, float]:
    """``"<method> in"`` / ``"<method> out"`` -> gRPC messages the mesh's
    servers received / sent so far, summed over every process that publishes
    its metrics (each message between two processes has one server end)."""
    scrapes = [prometheus.scrape(target) for target in prometheus.targets(config)]
    received = prometheus.summed(scrapes, "grpc_server_msg_received_total", by="grpc_method")
    sent = prometheus.summed(scrapes, "grpc_server_msg_sent_total", by="grpc_method")
    return {**{f"{m} in": n for m, n in received.items()}, **{f"{m} out": n for m, n in sent.items()}}


def messages_between(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, int]:
    """Messages counted between two :func:`grpc_messages` (a process that
    restarted in between counts from zero)."""
    deltas = {key: n - before.get(key, 0.0) for key, n in after.items()}
    return {key: int(n if n >= 0 else after[key]) for key, n in sorted(deltas.items()) if n}


def _summary(record: Mapping[str, Any]) -> str:
    head = record.get("headline")
    value = record.get("metrics", {}).get(head) if head else None
    state = "ok" if record.get("ok") else f"FAILED: {str(record.get('error'))[:200]}"
    return (
        f"  {record['workload']} rep {record['rep']}: {head}={value} {state} "
        f"(load1 {record.get('load1_start')}, foreign CPU {record.get('foreign_cpu_pct')}%, "
        f"peak RSS {record.get('rss_peak_mb')} MB)"
    )


# -- the whole run ------------------------------------------------------------------------------------


def run(
    config: MeshConfig,
    options: BenchOptions,
    env: Mapping[str, str],
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> list[dict[str, Any]]:
    """Run every selected workload; print RESULT lines and the tables; answers the records."""
    out = stdout or sys.stdout
    progress = ProgressLine(stderr)
    try:
        with mesh_running(config, env, options.direct, progress.note) as started:
            return _run(config, options, started, progress, out)
    finally:
        progress.close()


def _run(
    config: MeshConfig, options: BenchOptions, started: list[str], progress: ProgressLine, out: TextIO
) -> list[dict[str, Any]]:
    edge = edge_address(config)
    key = mesh.api_key(config)  # the local admin's, unless $GRIDMESH_API_KEY names one
    if key:
        os.environ.setdefault(API_KEY_VAR, key)  # BenchClient, EventClient and the bench's children present it
    direct = leading_scheduler(config)
    if direct is None:
        raise Unavailable(f"no Scheduler serves at {', '.join(config.scheduler_addresses)}")
    target = direct if options.direct else edge
    admin_tls = MeshTls.load(config, PeerRole.ADMIN)
    workers = [
        w
        for w in asyncio.run(_workers(target, admin_tls if options.direct else None, config.edge_ca_file))
        if w.state == scheduler_pb2.ACTIVE
    ]
    if not workers:
        raise Unavailable("no active worker node is registered with the Scheduler")
    slots = sum(w.slots for w in workers)
    if slots != SLOTS and any(w in options.workloads for w in ("W3", "W4")):
        progress.note(f"warning: W3/W4 assume {SLOTS} worker slots in all; this mesh has {slots}")
    unit = burn_unit_ms_today()
    progress.note(
        f"gridmesh bench {' '.join(options.workloads)}: {options.profile} ({target}), {len(workers)} worker "
        f"node(s), {slots} slots, burn unit today {unit} ms"
        + (", quick (numbers meaningless)" if options.quick else "")
    )

    def emit(record: dict[str, Any]) -> None:
        session.records.append(record)
        progress.note(_summary(record))
        print(result_line(record), file=out, flush=True)
        if options.out:
            append_jsonl(options.out, record)

    session = Session(
        options=options,
        target=target,
        edge=edge,
        direct=direct,
        worker_addresses=[w.address for w in workers],
        conditions={
            "target": target,
            "via": "Scheduler (direct gRPC)" if options.direct else "Envoy (gRPC)",
            "client": f"grpc.aio, {IN_FLIGHT} submits in flight, one WatchTasks(terminal_only) stream; "
            "W2: submit then WatchTask, one at a time",
            "workers": len(workers),
            "slots": slots,
            "payload_bytes": 100,
            "quick": options.quick,
            "mesh_started_by_bench": bool(started),
            "rss_scope": RSS_SCOPE,
        },
        versions=versions(),
        result_dir=f"bench/{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}",
        progress=progress,
        config=config,
        eventmanager=f"{config.eventmanager.host}:{config.eventmanager.port}" if options.direct else edge,
        admin_tls=admin_tls,
        edge_ca=config.edge_ca_file,
        via_scheduler=options.direct,
    )
    busy_gates = 0

    def gate_now(kind: str, processes: machine.ProcessMap) -> dict[str, Any]:
        nonlocal busy_gates
        if options.gate == "off":
            return {"gate": "off", "load1": round(machine.load1(), 2), "gate_ok": True}
        timeout = options.gate_timeout_s if busy_gates < 2 else min(options.gate_timeout_s, BUSY_GATE_TIMEOUT_S)
        gate = machine.wait_for_quiet(
            processes, threshold=options.gate_threshold, timeout=timeout, log=lambda s: progress.note(f"  gate: {s}")
        )
        gate["gate"] = kind
        if gate["gate_ok"]:
            busy_gates = 0
        else:
            busy_gates += 1
            progress.note(f"  warning: the gate was not met after {timeout:.0f} s; measuring anyway (flagged)")
        return gate

    for workload_id in options.workloads:
        workload = WORKLOADS[workload_id]
        processes = discover(config, session.worker_addresses)
        gate: dict[str, Any] = {}
        for rep in range(1, options.reps_of(workload_id) + 1):
            if options.gate in ("rep", "off") or rep == 1:
                gate = gate_now(options.gate, processes)
            for attempt in range(1 + options.retries):
                record = run_rep(session, workload, rep, gate, processes)
                foreign = record.get("foreign_cpu_pct") or 0.0
                retry = (
                    options.gate != "off"
                    and foreign > options.foreign_max_pct
                    and attempt < options.retries
                    and gate.get("gate_ok", True)
                )
                if retry:
                    record["discarded"] = f"foreign CPU {foreign}%"
                emit(record)
                if not retry:
                    break
                progress.note(f"  foreign CPU {foreign}% > {options.foreign_max_pct}%: re-running after the gate")
                gate = gate_now(options.gate + "+retry", processes)
    print("\n" + render(session.records), file=out, flush=True)
    return session.records
