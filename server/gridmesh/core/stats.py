"""Statistics of the task life-cycle (SPEC §3 "Life-cycle log and analytics").

Pure definitions, shared by the analytics job that computes the figures and
the Scheduler that serves them (``GetStats``); nothing here does I/O.

Definitions
-----------
- An *event* is one ``TaskLifecycleEvent``. ``(task_id, attempt, kind)``
  identifies it: a re-delivered or re-read copy is the same event and counts
  once.
- *Windows* are tumbling, ``window_s`` long and aligned to the Unix epoch; an
  event belongs to the window that contains its ``occurred_at``.
- *Queue wait* of attempt n = ``started(n) - enqueued(n)``, where
  ``enqueued(1)`` is the task's pending event and ``enqueued(n > 1)`` the
  retried event of attempt n - 1 (a retried task waits in the queue again).
  It belongs to the window of the started event.
- *Run time* of attempt n = ``completed(n) - started(n)``, in the window of
  the completed event.
- *Busy time* of a worker: for every attempt it started that ended
  (completed, failed or retried), ``ended - started``, in the window of the
  end. A worker's *completed* count is the completed events naming it.
- A duration below zero (clocks of two machines disagree) counts as 0.
- Percentiles interpolate linearly between the closest ranks (numpy's
  default); they are exact, computed from every value of the window.
- *Watermark* = the latest event time seen so far - the allowed lateness.
  An event that occurred before the watermark of the micro-batch it arrives
  in is *late*: it is counted apart and changes no window. A window whose end
  is at or before the watermark is *final*.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import NamedTuple, Protocol

from gridmesh.common.errors import InvalidArgument
from gridmesh.core.lifecycle import LifecycleKind

__all__ = [
    "ENDED_KINDS",
    "MAX_RANGE",
    "Derived",
    "Event",
    "EventKey",
    "Fact",
    "JobProgress",
    "StatsQuery",
    "StatsReader",
    "StatsReport",
    "Summary",
    "TaskWindowStats",
    "Window",
    "WorkerWindowStats",
    "aggregate",
    "derive",
    "kind_from_name",
    "kind_name",
    "percentile",
    "prune_horizon",
    "stats_query",
    "summarize",
    "watermark",
    "window_of",
]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
"""No statistics exist before this; an earlier range bound is a mistake."""
LATEST = datetime(2100, 1, 1, tzinfo=UTC)
"""Nor after this."""
MAX_RANGE = timedelta(days=31)
"""Longest range one ``GetStats`` call may ask for."""
DEFAULT_SPAN = timedelta(hours=1)
"""Range of a ``GetStats`` call that gives no start time."""
MAX_TASK_TYPE_CHARS = 128

ENDED_KINDS = frozenset({LifecycleKind.COMPLETED, LifecycleKind.FAILED, LifecycleKind.RETRIED})
"""Events that end an attempt (and so a worker's busy time)."""

EventKey = tuple[str, int, LifecycleKind]
"""``(task_id, attempt, kind)``: what identifies an event."""


def kind_name(kind: LifecycleKind) -> str:
    """``pending``, ``started``, ``completed``, ``failed`` or ``retried``."""
    return kind.name.lower()


def kind_from_name(name: str) -> LifecycleKind:
    try:
        return LifecycleKind[name.upper()]
    except KeyError:
        raise ValueError(f"{name!r} is not a life-cycle event kind") from None


# -- windows --------------------------------------------------------------------


@dataclass(frozen=True, order=True, slots=True)
class Window:
    start: datetime
    end: datetime


def window_of(at: datetime, window_s: int) -> Window:
    """The tumbling window of length ``window_s`` that contains ``at``."""
    if window_s <= 0:
        raise ValueError("window_s must be positive")
    micros = (at - EPOCH) // timedelta(microseconds=1)
    length = window_s * 1_000_000
    start = EPOCH + timedelta(microseconds=micros - micros % length)
    return Window(start, start + timedelta(seconds=window_s))


def watermark(max_event_time: datetime | None, lateness_s: float) -> datetime | None:
    """Events that occurred before the result are late (None: nothing seen yet)."""
    return None if max_event_time is None else max_event_time - timedelta(seconds=lateness_s)


def prune_horizon(mark: datetime | None, retention_s: float, window_s: int) -> datetime | None:
    """Events before the result may be deleted: the start of the window that
    is ``retention_s`` behind the watermark, so no window is ever partly
    deleted. None while there is no watermark."""
    if mark is None:
        return None
    return window_of(mark - timedelta(seconds=retention_s), window_s).start


# -- events and what they contribute ---------------------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    task_id: str
    attempt: int
    kind: LifecycleKind
    task_type: str
    worker_id: str
    occurred_at: datetime

    @property
    def key(self) -> EventKey:
        return (self.task_id, self.attempt, self.kind)


@dataclass(frozen=True, slots=True)
class Derived:
    """What an event adds to its window besides its count, once the event it
    pairs with is known. Every field is None (or empty) until then."""

    wait_ms: float | None = None
    """Started events: the queue wait of the attempt."""
    run_ms: float | None = None
    """Completed events: the run time of the attempt."""
    busy_ms: float | None = None
    """Completed, failed and retried events: how long the attempt ran."""
    busy_worker: str = ""
    """The worker ``busy_ms`` belongs to (the one that started the attempt)."""


def _ms(later: datetime, earlier: datetime) -> float:
    return max(0.0, (later - earlier) / timedelta(milliseconds=1))


def derive(events: Iterable[Event]) -> dict[EventKey, Derived]:
    """The :class:`Derived` figures of ``events`` (all known events of some
    tasks), for every event of them. A pure function of the set of events:
    the order does not matter and duplicates change nothing."""
    by_key: dict[EventKey, Event] = {}
    pending: dict[str, Event] = {}
    for e in events:
        by_key.setdefault(e.key, e)
        if e.kind is LifecycleKind.PENDING:
            first = pending.get(e.task_id)
            if first is None or (e.attempt, e.occurred_at) < (first.attempt, first.occurred_at):
                pending[e.task_id] = e
    result: dict[EventKey, Derived] = {}
    for key, e in by_key.items():
        if e.kind is LifecycleKind.STARTED:
            enqueued = (
                pending.get(e.task_id)
                if e.attempt <= 1
                else by_key.get((e.task_id, e.attempt - 1, LifecycleKind.RETRIED))
            )
            result[key] = Derived(wait_ms=_ms(e.occurred_at, enqueued.occurred_at) if enqueued else None)
        elif e.kind in ENDED_KINDS:
            started = by_key.get((e.task_id, e.attempt, LifecycleKind.STARTED))
            if started is None:
                result[key] = Derived()
                continue
            took = _ms(e.occurred_at, started.occurred_at)
            result[key] = Derived(
                run_ms=took if e.kind is LifecycleKind.COMPLETED else None,
                busy_ms=took,
                busy_worker=started.worker_id or e.worker_id,
            )
        else:
            result[key] = Derived()
    return result


# -- per-window figures -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Summary:
    """Count, mean, max and percentiles of some durations (ms); 0 when empty."""

    count: int = 0
    mean_ms: float = 0.0
    max_ms: float = 0.0
    p50_ms: float = 0.0
    p95_ms: float = 0.0


def percentile(ordered: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ascending ``ordered``, interpolated linearly."""
    if not ordered:
        return 0.0
    rank = q * (len(ordered) - 1)
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(values: Iterable[float]) -> Summary:
    ordered = sorted(values)
    if not ordered:
        return Summary()
    return Summary(
        count=len(ordered),
        mean_ms=math.fsum(ordered) / len(ordered),
        max_ms=ordered[-1],
        p50_ms=percentile(ordered, 0.50),
        p95_ms=percentile(ordered, 0.95),
    )


class Fact(NamedTuple):
    """What the aggregation needs of one stored event."""

    kind: LifecycleKind
    task_type: str
    worker_id: str
    derived: Derived


@dataclass(frozen=True, slots=True)
class TaskWindowStats:
    window: Window
    task_type: str
    pending: int = 0
    started: int = 0
    completed: int = 0
    failed: int = 0
    retried: int = 0
    queue_wait: Summary = field(default_factory=Summary)
    run_time: Summary = field(default_factory=Summary)


@dataclass(frozen=True, slots=True)
class WorkerWindowStats:
    window: Window
    worker_id: str
    completed: int = 0
    busy_ms: float = 0.0


def aggregate(window: Window, facts: Iterable[Fact]) -> tuple[list[TaskWindowStats], list[WorkerWindowStats]]:
    """The figures of ``window`` from every event that belongs to it: one row
    per task type and one per worker, sorted by name."""
    counts: dict[str, dict[LifecycleKind, int]] = defaultdict(lambda: dict.fromkeys(LifecycleKind, 0))
    waits: dict[str, list[float]] = defaultdict(list)
    runs: dict[str, list[float]] = defaultdict(list)
    completed_by: dict[str, int] = defaultdict(int)
    busy_by: dict[str, list[float]] = defaultdict(list)
    for fact in facts:
        counts[fact.task_type][fact.kind] += 1
        d = fact.derived
        if fact.kind is LifecycleKind.STARTED and d.wait_ms is not None:
            waits[fact.task_type].append(d.wait_ms)
        if fact.kind is LifecycleKind.COMPLETED:
            if d.run_ms is not None:
                runs[fact.task_type].append(d.run_ms)
            if fact.worker_id:
                completed_by[fact.worker_id] += 1
        if d.busy_ms is not None and d.busy_worker:
            busy_by[d.busy_worker].append(d.busy_ms)
    tasks = [
        TaskWindowStats(
            window=window,
            task_type=task_type,
            pending=c[LifecycleKind.PENDING],
            started=c[LifecycleKind.STARTED],
            completed=c[LifecycleKind.COMPLETED],
            failed=c[LifecycleKind.FAILED],
            retried=c[LifecycleKind.RETRIED],
            queue_wait=summarize(waits[task_type]),
            run_time=summarize(runs[task_type]),
        )
        for task_type, c in sorted(counts.items())
    ]
    workers = [
        WorkerWindowStats(
            window=window,
            worker_id=worker,
            completed=completed_by.get(worker, 0),
            busy_ms=math.fsum(busy_by.get(worker, ())),
        )
        for worker in sorted(set(completed_by) | set(busy_by))
    ]
    return tasks, workers


# -- reading them back (GetStats) -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StatsQuery:
    """Windows that overlap ``[start, end)``, of one task type or all (``""``)."""

    start: datetime
    end: datetime
    task_type: str = ""


def stats_query(start: datetime | None, end: datetime | None, task_type: str, now: datetime) -> StatsQuery:
    """A checked :class:`StatsQuery`: ``end`` defaults to ``now`` and ``start``
    to one hour before ``end``. Raises :class:`InvalidArgument` for an
    inverted or empty range, one longer than :data:`MAX_RANGE`, or a bound
    outside the years 2000-2100."""
    end = end if end is not None else now
    start = start if start is not None else end - DEFAULT_SPAN
    for name, value in (("start_time", start), ("end_time", end)):
        if not EARLIEST <= value <= LATEST:
            raise InvalidArgument(
                f"{name} {value.isoformat()} is outside the years 2000-2100; give a time in RFC 3339, "
                "e.g. 2026-03-01T12:00:00Z",
                field=name,
            )
    if start >= end:
        raise InvalidArgument(
            f"start_time {start.isoformat()} must be before end_time {end.isoformat()}", field="start_time"
        )
    if end - start > MAX_RANGE:
        raise InvalidArgument(
            f"the range {start.isoformat()} .. {end.isoformat()} is longer than {MAX_RANGE.days} days; "
            "ask for a shorter one",
            field="start_time",
        )
    if len(task_type) > MAX_TASK_TYPE_CHARS:
        raise InvalidArgument(
            f"task_type is {len(task_type)} characters long; the limit is {MAX_TASK_TYPE_CHARS}", field="task_type"
        )
    return StatsQuery(start, end, task_type)


@dataclass(frozen=True, slots=True)
class JobProgress:
    """Where the analytics job is."""

    last_batch_id: int = -1
    last_batch_at: datetime | None = None
    watermark: datetime | None = None
    events: int = 0
    """Events stored so far (each once)."""
    malformed: int = 0
    """Records that were not life-cycle events (skipped)."""
    late: int = 0
    """Events that arrived behind the watermark (skipped)."""


@dataclass(frozen=True, slots=True)
class StatsReport:
    windows: list[TaskWindowStats]
    workers: list[WorkerWindowStats]
    progress: JobProgress

    def final(self, window: Window) -> bool:
        """Whether late events can no longer change ``window``."""
        mark = self.progress.watermark
        return mark is not None and window.end <= mark


class StatsReader(Protocol):
    """Where ``GetStats`` reads the figures the analytics job stored."""

    async def read(self, query: StatsQuery) -> StatsReport: ...

    def close(self) -> None: ...
