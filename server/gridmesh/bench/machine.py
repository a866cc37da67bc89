"""What runs on this machine while the benchmark measures: gridmesh's own
processes, the backing services, and everybody else (foreign load).

Processes are only ever identified by pid (found through the mesh's process
records, listening ports or command lines), never signalled here.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

SPARK_MARKER = "org.apache.spark"
"""A JVM whose command line contains this is (part of) a Spark application."""
LOAD_THRESHOLD = 1.0
"""The gate waits until the 1-minute load average is below this ..."""
QUIET_PCT = 10.0
"""... and other processes used less than this % of one core over :data:`QUIET_WINDOW_S`."""
QUIET_WINDOW_S = 3.0
GATE_TIMEOUT_S = 600.0
GATE_POLL_S = 5.0
ANALYTICS = "analytics"
"""The mesh's analytics job (a Spark application reading the life-cycle
topics): a backing service in the reports, like MySQL or the Kafka broker."""
WORKING_SERVICES = frozenset({"mysql", "rabbitmq", "zookeeper", "kafka", ANALYTICS, "prometheus"})
"""Backing services the mesh itself keeps busy while it works: their CPU is
not foreign. (Another Spark application is: nothing of a bench run uses it.)"""


@dataclass(frozen=True)
class ProcessMap:
    """Whose processes are whose, as roots; descendants belong to their root."""

    ours: Mapping[str, list[int]] = field(default_factory=dict)
    """gridmesh's own parts: ``client`` (the bench), ``scheduler``,
    ``worker-1`` (with its task processes), ``envoy``, ... -> root pids."""
    services: Mapping[str, list[int]] = field(default_factory=dict)
    """Backing services: ``mysql``, ``rabbitmq``, ``zookeeper``, ``kafka``,
    ``analytics`` (the mesh's Spark job), ``spark`` (another Spark
    application) -> root pids."""
    neutral: list[int] = field(default_factory=list)
    """Neither ours nor foreign: the bench's ancestors (a shell, pytest)."""

    def to_json(self) -> str:
        return json.dumps({"ours": self.ours, "services": self.services, "neutral": self.neutral})

    @classmethod
    def from_json(cls, text: str) -> ProcessMap:
        data = json.loads(text)
        return cls(
            {k: list(v) for k, v in data["ours"].items()},
            {k: list(v) for k, v in data["services"].items()},
            list(data["neutral"]),
        )


# -- discovery --------------------------------------------------------------------------


def listeners() -> dict[int, int]:
    """TCP port -> pid of the process listening on it (empty without the rights to see)."""
    out: dict[int, int] = {}
    with contextlib.suppress(psutil.AccessDenied, OSError):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.pid:
                out.setdefault(conn.laddr.port, conn.pid)
    return out


def spark_pids(exclude: Iterable[int] = ()) -> list[int]:
    """Root pids of running Spark JVMs (not among ``exclude``)."""
    skip = set(exclude)
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if proc.info["pid"] not in skip and any(SPARK_MARKER in part for part in cmdline):
            found.append(proc.info["pid"])
    return found


def ancestors(pid: int) -> list[int]:
    try:
        return [p.pid for p in psutil.Process(pid).parents()]
    except psutil.Error:
        return []


def tree(pids: Iterable[int]) -> dict[int, psutil.Process]:
    """The running processes ``pids`` and all their descendants."""
    out: dict[int, psutil.Process] = {}
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            out[pid] = proc
            for child in proc.children(recursive=True):
                out.setdefault(child.pid, child)
        except psutil.Error:
            continue
    return out


def rss_bytes(procs: Iterable[psutil.Process]) -> int:
    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total


# -- CPU ---------------------------------------------------------------------------------

CpuSnapshot = dict[int, tuple[float, float, int, str]]
"""pid -> (create time, user+system CPU seconds, ppid, name)."""


def cpu_snapshot() -> CpuSnapshot:
    snap: CpuSnapshot = {}
    for proc in psutil.process_iter(["pid", "ppid", "create_time", "cpu_times", "name"]):
        info = proc.info
        if info["cpu_times"] is None or info["create_time"] is None:
            continue
        snap[info["pid"]] = (
            info["create_time"],
            info["cpu_times"].user + info["cpu_times"].system,
            info["ppid"],
            info["name"] or "?",
        )
    return snap


def is_kernel_thread(pid: int, ppid: int) -> bool:
    return pid == 2 or ppid in (0, 2)


def cpu_used(start: CpuSnapshot, end: CpuSnapshot, since: float, skip: Callable[[int], bool]) -> dict[str, float]:
    """``name[pid]`` -> CPU seconds used between the snapshots by processes
    not skipped (kernel threads always are). A process born after ``since``
    counts with all its CPU; one whose pid was reused counts from zero."""
    used: dict[str, float] = {}
    for pid, (created, cpu, ppid, name) in end.items():
        if skip(pid) or is_kernel_thread(pid, ppid):
            continue
        before = start.get(pid)
        same = before is not None and before[0] == created
        delta = cpu - before[1] if before is not None and same else cpu if created >= since - 1 else 0.0
        if delta > 0.005:
            used[f"{name}[{pid}]"] = delta
    return used


def others_cpu_pct(processes: ProcessMap, seconds: float = QUIET_WINDOW_S) -> float:
    """% of one core used over ``seconds`` by processes that are neither
    gridmesh's, nor its working backing services', nor this process's ancestors."""
    working = [pid for name, pids in processes.services.items() if name in WORKING_SERVICES for pid in pids]
    skip = set(tree([*_flat(processes.ours), *working])) | set(processes.neutral) | {os.getpid()}
    since = time.time()
    start = cpu_snapshot()
    time.sleep(seconds)
    used = cpu_used(start, cpu_snapshot(), since, lambda pid: pid in skip)
    return round(100.0 * sum(used.values()) / seconds, 1)


def _flat(groups: Mapping[str, list[int]]) -> list[int]:
    return [pid for pids in groups.values() for pid in pids]


# -- the load gate -------------------------------------------------------------------------


def load1() -> float:
    return os.getloadavg()[0]


def wait_for_quiet(
    processes: ProcessMap,
    *,
    threshold: float = LOAD_THRESHOLD,
    quiet_pct: float = QUIET_PCT,
    timeout: float = GATE_TIMEOUT_S,
    poll: float = GATE_POLL_S,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Block until load1 < ``threshold`` and others' CPU < ``quiet_pct`` (load1
    lags by a minute; a job that just started shows in the second test first),
    at most ``timeout`` seconds. Answers the gate's record."""
    started = time.monotonic()
    first = current = load1()
    busy: float | None = None
    while time.monotonic() - started < timeout:
        current = load1()
        if current < threshold:
            busy = others_cpu_pct(processes)
            if busy < quiet_pct:
                break
        if log:
            others = f", others' CPU {busy}% (gate < {quiet_pct}%)" if busy is not None else ""
            log(f"load1={current:.2f} (gate < {threshold}){others}, waiting ({time.monotonic() - started:.0f}s)")
        busy = None
        time.sleep(poll)
    ok = current < threshold and busy is not None and busy < quiet_pct
    return {
        "load1_before_wait": round(first, 2),
        "load1": round(current, 2),
        "others_cpu_pct": busy,
        "waited_s": round(time.monotonic() - started, 1),
        "gate_ok": ok,
    }


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)
