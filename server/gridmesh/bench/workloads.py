"""The SPEC §5 workloads, defined exactly as the peers define them
(``../shared/peers/workloads.py``), and the W4 execution log and its verdict.

Pure: no gRPC, no processes. The execution log is a text file of lines
``<tag> start|end <pid> <unix time>`` that the ``logged_burn`` task appends to
(see :mod:`gridmesh.bench.task_types`); its verdict counts what a crash did.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PAYLOAD = "x" * 100
"""The W1/W2 parameter: a 100-byte (ASCII) string."""
SLOTS = 2
"""Worker slots (task processes) the peers get and W3/W4 assume."""
BURN_UNIT_MS = 10.0
"""What one unit of burn took on the reference machine."""
N_W1, N_W2, N_W3, N_W4, N_E1 = 5000, 500, 200, 200, 2000
N_R1 = 10_000
N_R2 = 500 * 20
"""R2: 500 events/s for 20 s (``--quick``: 100 events/s for 3 s)."""
IDEAL_W3_S = N_W3 * BURN_UNIT_MS / 1000.0 / SLOTS
"""200 x 10 ms on 2 slots: 1.0 s."""
W4_UNITS = 2
"""Burn units of one W4 task (~20 ms on the reference machine)."""
IDEAL_W4_S = N_W4 * W4_UNITS * BURN_UNIT_MS / 1000.0 / SLOTS
KILL_AFTER_W4 = 50
"""W4 kills a task process once this many tasks have finished."""
KILL_FRESH_S = 0.008
"""W4 prefers a task process whose task started less than this long ago..."""
KILL_FRESH_FRACTION = 0.4
"""... and less than this fraction of a typical task's run time ago (a W4
task runs ~5 ms on a fast machine), so the kill lands mid-task."""
WARMUP_ROUND_TRIPS = 20
"""No-op round trips before the clock starts (the peers do 20-50)."""


@dataclass(frozen=True)
class Workload:
    """One benchmark workload and how it is reported."""

    id: str
    """``W1`` ... as SPEC §5 names it."""
    title: str
    """One line saying what is measured."""
    n: int
    """Tasks (or calls) of a full run."""
    quick_n: int
    """Tasks of a ``--quick`` smoke run (numbers meaningless)."""
    headline: str
    """The metric a table row leads with."""
    timeout_s: float
    """Longest one repetition may take."""
    implemented: bool = True
    """``False``: named in SPEC §5 but not measured yet."""

    def size(self, quick: bool) -> int:
        return self.quick_n if quick else self.n


WORKLOADS: dict[str, Workload] = {
    w.id: w
    for w in (
        Workload(
            "W1", "throughput: N no-op tasks submitted at once, every completion awaited", N_W1, 500, "tasks_per_s", 300
        ),
        Workload("W2", "latency: N no-op tasks one at a time, submit -> completion notice", N_W2, 100, "p50_ms", 200),
        Workload("W3", "CPU: N burn(1) tasks on 2 slots; makespan / ideal", N_W3, 100, "ratio_vs_ideal", 200),
        Workload(
            "W4", "crash: N burn(2) tasks, kill -9 one task process after 50 finished", N_W4, 100, "recovery_s", 200
        ),
        Workload(
            "R1",
            "replication throughput: N events to 2 replica appliers, until both hold every last version",
            N_R1,
            1000,
            "events_per_s",
            300,
        ),
        Workload(
            "R2",
            "replication lag: 500 events/s for 20 s, publish -> applied in both replicas",
            N_R2,
            300,
            "p50_ms",
            300,
        ),
        Workload(
            "E1",
            "edge overhead: GetTask direct gRPC vs Envoy gRPC vs Envoy HTTP/JSON",
            N_E1,
            200,
            "envoy_json_overhead_p50_ms",
            150,
        ),
    )
}
"""Every SPEC §5 workload, in the order they run."""

DEFAULT_WORKLOADS = tuple(w.id for w in WORKLOADS.values() if w.implemented)


# -- the W4 execution log ----------------------------------------------------------------


def log_exec(path: str | os.PathLike[str], tag: int, event: str) -> None:
    """Append ``tag event pid time`` to the execution log (``O_APPEND``: a
    small write is atomic, so processes never interleave a line)."""
    line = f"{tag} {event} {os.getpid()} {time.time():.6f}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


@dataclass
class Executions:
    """What the execution log says about one task: ``(pid, time)`` pairs."""

    starts: list[tuple[int, float]] = field(default_factory=list)
    ends: list[tuple[int, float]] = field(default_factory=list)


ExecLog = dict[int, Executions]


def parse_exec_lines(lines: Iterable[str], into: ExecLog | None = None) -> ExecLog:
    """Add the well-formed lines to ``into`` (a new log if ``None``); skip the rest."""
    log: ExecLog = {} if into is None else into
    for line in lines:
        parts = line.split()
        if len(parts) != 4 or parts[1] not in ("start", "end"):
            continue
        try:
            tag, pid, at = int(parts[0]), int(parts[2]), float(parts[3])
        except ValueError:
            continue
        entry = log.setdefault(tag, Executions())
        (entry.starts if parts[1] == "start" else entry.ends).append((pid, at))
    return log


def read_exec_log(path: str | os.PathLike[str]) -> ExecLog:
    """The whole log (empty if the file does not exist)."""
    try:
        with open(path) as f:
            return parse_exec_lines(f)
    except FileNotFoundError:
        return {}


class ExecLogTail:
    """Reads an execution log as it grows (for the W4 killer's polling)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.log: ExecLog = {}
        self.ended = 0
        """End lines read so far."""
        self._offset = 0
        self._partial = ""

    def poll(self) -> ExecLog:
        """Read what was appended since the last call; answers the whole log."""
        try:
            with self.path.open() as f:
                f.seek(self._offset)
                chunk = f.read()
                self._offset = f.tell()
        except FileNotFoundError:
            return self.log
        text = self._partial + chunk
        lines = text.split("\n")
        self._partial = lines.pop()
        parse_exec_lines(lines, self.log)
        self.ended = sum(len(e.ends) for e in self.log.values())
        return self.log

    def fresh_starts(self, now: float, max_age_s: float) -> dict[int, tuple[int, float]]:
        """pid -> (tag, start time) of tasks started less than ``max_age_s``
        before ``now`` that have not ended in that process."""
        return {
            pid: (tag, at)
            for tag, ex in self.log.items()
            for pid, at in ex.starts
            if 0 <= now - at < max_age_s and pid not in {p for p, _ in ex.ends}
        }

    def typical_run_s(self) -> float | None:
        """Median start-to-end time of the tasks that ended where they started."""
        runs = sorted(
            end - start
            for ex in self.log.values()
            for pid, start in ex.starts
            for end_pid, end in ex.ends
            if end_pid == pid and end >= start
        )
        return runs[len(runs) // 2] if runs else None

    def open_start(self, pid: int) -> tuple[int, float] | None:
        """(tag, start time) of the task running in ``pid`` (latest start without an end there)."""
        found = None
        for tag, ex in self.log.items():
            if any(p == pid for p, _ in ex.ends):
                continue
            for p, at in ex.starts:
                if p == pid and (found is None or at > found[1]):
                    found = (tag, at)
        return found


@dataclass(frozen=True)
class CrashVerdict:
    """W4: what killing one task process did to N tasks (the peers' verdict)."""

    completed: int
    """Tasks whose success notice the client received."""
    lost: int
    """Tasks the client never saw succeed."""
    never_executed_to_end: int
    """Tasks with no ``end`` line at all."""
    duplicate_effects: int
    """Tasks with more than one ``end`` line (the effect happened twice)."""
    reexecuted: int
    """Tasks started more than once."""
    victims: int
    """Tasks the kill forced to run again."""
    recovery_s: float | None
    """Kill -> the last victim's re-run has ended; ``None`` if one never did
    (or nothing was killed)."""

    @property
    def exactly_once(self) -> bool:
        return not self.lost and not self.never_executed_to_end and not self.duplicate_effects

    @property
    def at_least_once(self) -> bool:
        return not self.lost and not self.never_executed_to_end

    def metrics(self) -> dict[str, Any]:
        return {
            "completed": self.completed,
            "lost": self.lost,
            "never_executed_to_end": self.never_executed_to_end,
            "duplicate_effects": self.duplicate_effects,
            "reexecuted": self.reexecuted,
            "victims": self.victims,
            "exactly_once": self.exactly_once,
            "at_least_once": self.at_least_once,
            "recovery_s": None if self.recovery_s is None else round(self.recovery_s, 3),
        }


def crash_verdict(
    log: Mapping[int, Executions], n: int, t_kill: float | None, killed_pid: int | None, succeeded: Iterable[int]
) -> CrashVerdict:
    """The verdict on tags ``0 .. n-1`` from the execution log.

    ``succeeded``: tags whose success the client was told of. A victim is a
    task that started in the killed process and either never ended there
    (interrupted) or was started again after the kill.
    """
    ok = set(succeeded)
    ends = {tag: len(ex.ends) for tag, ex in log.items()}
    starts = {tag: len(ex.starts) for tag, ex in log.items()}
    victims = []
    for tag, ex in log.items():
        if killed_pid is None or not any(pid == killed_pid for pid, _ in ex.starts):
            continue
        ended_there = any(pid == killed_pid for pid, _ in ex.ends)
        rerun = t_kill is not None and any(at >= t_kill for _, at in ex.starts)
        if not ended_there or rerun:
            victims.append(tag)
    recovery = None
    if victims and t_kill:
        finished = [min((at for _, at in log[tag].ends if at >= t_kill), default=None) for tag in victims]
        if all(at is not None for at in finished):
            recovery = max(at for at in finished if at is not None) - t_kill
    return CrashVerdict(
        completed=sum(1 for tag in range(n) if tag in ok),
        lost=sum(1 for tag in range(n) if tag not in ok),
        never_executed_to_end=sum(1 for tag in range(n) if ends.get(tag, 0) == 0),
        duplicate_effects=sum(1 for tag in range(n) if ends.get(tag, 0) > 1),
        reexecuted=sum(1 for tag in range(n) if starts.get(tag, 0) > 1),
        victims=len(victims),
        recovery_s=recovery,
    )
