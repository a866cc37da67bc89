"""RSS and foreign-CPU sampling in a separate process (so the bench client's
GIL stays free), as the peers' ``common.py sample`` does.

Every 0.1 s it sums the RSS of gridmesh's own processes (the bench client,
the services, worker nodes with their task processes, Envoy; descendants are
re-enumerated every 0.5 s, so a task process started after a kill counts)
and keeps the peak of that sum and of each part; the backing services' RSS
is kept apart (base and peak). At the end it measures the CPU each part
used during the window (a worker node's task processes apart from the
node), the backing services' too, and what foreign processes used, in % of
one core.

    python -m gridmesh.bench.sampler --spec SPEC.json --out OUT.json
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psutil

from gridmesh.bench.machine import WORKING_SERVICES, ProcessMap, cpu_snapshot, cpu_used, rss_bytes, tree, write_json

INTERVAL_S = 0.1
"""How often RSS is summed."""
ENUMERATE_S = 0.5
"""How often descendants of our processes are looked for again."""
STOP_TIMEOUT_S = 15.0
READY_TIMEOUT_S = 15.0
"""Longest the bench waits for the sampler to begin (it starts a Python interpreter)."""
READY = "READY"
MB = 2**20


def sample(
    processes: ProcessMap, interval: float, stopped: Callable[[], bool], ready: Callable[[], None] = lambda: None
) -> dict[str, Any]:
    """Sample until ``stopped()`` or the bench client is gone; answers the
    summary. ``ready()`` is called once the window has begun."""
    me = os.getpid()
    since = time.time()
    start_cpu = cpu_snapshot()
    ready()
    services = {name: list(tree(pids).values()) for name, pids in processes.services.items()}
    service_pids = {p.pid for members in services.values() for p in members}
    base_svc = {name: rss_bytes(members) for name, members in services.items()}
    peak_svc = dict(base_svc)
    # The client comes last: when the bench started the mesh, the mesh's
    # processes are its descendants too, but they count as their own parts.
    order = sorted(processes.ours, key=lambda name: name == "client")
    parts: dict[str, dict[int, psutil.Process]] = {name: {} for name in order}
    owner: dict[int, str] = {}
    ever: set[int] = set()
    client = processes.ours.get("client", [])
    peak = peak_nproc = 0
    peak_parts = dict.fromkeys(parts, 0)
    last_enumeration = 0.0
    while True:  # one sample at least, even when stopped at once
        now = time.monotonic()
        if now - last_enumeration >= ENUMERATE_S:
            last_enumeration = now
            for name in order:
                for pid, proc in tree(processes.ours[name]).items():
                    if pid == me or pid in service_pids or owner.setdefault(pid, name) != name:
                        continue
                    parts[name].setdefault(pid, proc)
                    ever.add(pid)
        total = nproc = 0
        for name, members_by_pid in parts.items():
            part = 0
            for pid, proc in list(members_by_pid.items()):
                try:
                    part += proc.memory_info().rss
                    nproc += 1
                except psutil.Error:
                    del members_by_pid[pid]
            peak_parts[name] = max(peak_parts[name], part)
            total += part
        if client and not any(pid in parts.get("client", {}) for pid in client):
            break  # the bench is gone
        peak, peak_nproc = max(peak, total), max(peak_nproc, nproc)
        for name, members in services.items():
            peak_svc[name] = max(peak_svc[name], rss_bytes(members))
        if stopped():
            break
        time.sleep(interval)
    wall = time.time() - since
    end_cpu = cpu_snapshot()
    neutral = set(processes.neutral) | {me}
    working = {p.pid for name, members in services.items() if name in WORKING_SERVICES for p in members}
    foreign = cpu_used(start_cpu, end_cpu, since, lambda pid: pid in ever or pid in working or pid in neutral)
    ours_cpu = cpu_used(start_cpu, end_cpu, since, lambda pid: pid not in ever)
    services_cpu = {}
    roots = {pid for pids in processes.ours.values() for pid in pids}
    ours_parts: dict[str, float] = {}
    for label, seconds in ours_cpu.items():
        pid = int(label.rsplit("[", 1)[1].rstrip("]"))
        owned_by = owner.get(pid)
        if owned_by is None:
            continue
        if owned_by.startswith("worker") and pid not in roots:
            owned_by = f"{owned_by} tasks"  # the node's task processes, apart from the node
        ours_parts[owned_by] = ours_parts.get(owned_by, 0.0) + seconds
    for name, members in services.items():
        pids = {p.pid for p in members}
        used = cpu_used(start_cpu, end_cpu, since, lambda pid, pids=pids: pid not in pids)  # type: ignore[misc]
        services_cpu[name] = round(sum(used.values()), 2)
    top = sorted(foreign.items(), key=lambda kv: -kv[1])[:3]
    return {
        "rss_peak_mb": round(peak / MB, 1),
        "rss_peak_nproc": peak_nproc,
        "rss_peak_parts_mb": {name: round(v / MB, 1) for name, v in peak_parts.items()},
        "services_rss_base_mb": {name: round(v / MB, 1) for name, v in base_svc.items()},
        "services_rss_peak_mb": {name: round(v / MB, 1) for name, v in peak_svc.items()},
        "foreign_cpu_pct": round(100.0 * sum(foreign.values()) / max(wall, 1e-6), 1),
        "foreign_top": [f"{k}:{v:.2f}s" for k, v in top],
        "ours_cpu_s": round(sum(ours_cpu.values()), 2),
        "ours_cpu_parts_s": {name: round(v, 3) for name, v in sorted(ours_parts.items())},
        "services_cpu_s": services_cpu,
        "sample_wall_s": round(wall, 2),
    }


class Sampler:
    """Runs :func:`sample` in a child process for the length of one
    repetition; returns once the sampler's window has begun."""

    def __init__(self, processes: ProcessMap, interval: float = INTERVAL_S) -> None:
        fd, spec = tempfile.mkstemp(prefix="gridmesh-bench-sampler-", suffix=".json")
        os.close(fd)
        self._spec = Path(spec)
        self._spec.write_text(processes.to_json())
        self._out = self._spec.with_name(self._spec.stem + ".out.json")
        self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gridmesh.bench.sampler",
                "--spec",
                str(self._spec),
                "--out",
                str(self._out),
                "--interval",
                str(interval),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
        )
        # Wait for READY: a SIGTERM that came before the handler would leave no summary.
        assert self._proc.stdout is not None
        ready, _, _ = select.select([self._proc.stdout], [], [], READY_TIMEOUT_S)
        self.ready = bool(ready) and self._proc.stdout.readline().decode().strip() == READY

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def stop(self) -> dict[str, Any]:
        """Stop sampling and answer the summary (``sampler_error`` if there is none). Idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return {"sampler_error": "already stopped"}
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()
        try:
            result: dict[str, Any] = json.loads(self._out.read_text())
        except (OSError, ValueError):
            result = {"sampler_error": f"no output (exit status {proc.returncode}, ready {self.ready})"}
        finally:
            for path in (self._spec, self._out):
                path.unlink(missing_ok=True)
        return result


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gridmesh.bench.sampler")
    parser.add_argument("--spec", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--interval", type=float, default=INTERVAL_S)
    args = parser.parse_args(argv)
    stop: list[int] = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the bench, which stops us

    def ready() -> None:
        print(READY, flush=True)

    result = sample(ProcessMap.from_json(args.spec.read_text()), args.interval, lambda: bool(stop), ready)
    write_json(args.out, result)


if __name__ == "__main__":
    main()
