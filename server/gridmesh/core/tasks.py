"""Tasks, their states and priorities, and the dispatch queue.

Enum values equal the protobuf enum numbers of ``gridmesh.v1`` so the
servicers convert by value.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import heapq
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from gridmesh.common.backoff import Backoff


class TaskState(enum.IntEnum):
    UNSPECIFIED = 0
    QUEUED = 1
    RUNNING = 2
    SUCCEEDED = 3
    FAILED = 4
    CANCELLED = 5

    @property
    def terminal(self) -> bool:
        return self in (TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED)


class FailureReason(enum.IntEnum):
    """Why a task ended FAILED (or CANCELLED), machine-readable."""

    UNSPECIFIED = 0
    ERROR = 1
    """The task raised an error (or its result could not be stored)."""
    TIMEOUT = 2
    """It ran longer than its run_timeout: its process was killed."""
    EXPIRED = 3
    """Its deadline passed before it started; it never ran."""
    CRASHED = 4
    """Its process or node died in each of its max_attempts attempts."""
    CANCELLED = 5
    """A client cancelled it."""


def never_ran(deadline: datetime) -> str:
    """The error of a task that ended EXPIRED."""
    return f"its deadline {deadline.isoformat()} passed before it started; it never ran"


class Priority(enum.IntEnum):
    UNSPECIFIED = 0
    LOW = 1
    NORMAL = 2
    HIGH = 3

    def effective(self) -> Priority:
        """UNSPECIFIED means NORMAL."""
        return Priority.NORMAL if self is Priority.UNSPECIFIED else self


@dataclass(frozen=True)
class RetryPolicy:
    """How a task that raises (or outlives its run_timeout) is tried again:
    up to ``max_attempts`` attempts in all, each retry waiting a backoff
    drawn between half and all of ``initial_backoff_s * multiplier ** (n - 1)``
    (capped at ``max_backoff_s``) as a delayed task; an error whose type is
    in ``non_retryable_errors`` (e.g. ``ValueError``) fails at once."""

    max_attempts: int = 1
    initial_backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    multiplier: float = 2.0
    non_retryable_errors: tuple[str, ...] = ()

    def retries(self, attempt: int, error: str) -> bool:
        """Whether a task whose attempt ``attempt`` failed with ``error``
        (``TypeName: message``) is tried again."""
        error_type = error.partition(":")[0].strip()
        return attempt < self.max_attempts and error_type not in self.non_retryable_errors

    def backoff_bounds(self, attempt: int) -> tuple[float, float]:
        """The range the wait before attempt ``attempt + 1`` is drawn from (seconds)."""
        ceiling = self._backoff.ceiling_s(attempt - 1)
        return ceiling / 2, ceiling

    def backoff_s(self, attempt: int, random: Callable[[], float]) -> float:
        """The wait before attempt ``attempt + 1`` (seconds)."""
        return self._backoff.pause_s(attempt - 1, random)

    @property
    def _backoff(self) -> Backoff:
        return Backoff(self.initial_backoff_s, self.max_backoff_s, self.multiplier)


@dataclass
class Task:
    """A task as the Scheduler keeps it. Mutated only by :class:`SchedulerCore`
    on the event loop; readers get copies (:meth:`snapshot`)."""

    task_id: str
    task_type: str
    params: dict[str, Any]
    result_dir: str
    state: TaskState
    priority: Priority
    """Dispatch priority: the submitted one (never UNSPECIFIED), HIGH after a silent retry."""
    attempt: int
    max_attempts: int
    created_at: datetime
    seq: int
    """Submission order; FIFO within a dispatch priority."""
    idempotency_key: str = ""
    worker_id: str = ""
    fencing_token: int = 0
    """Names the current lease; 0 when the task is not leased."""
    result_path: str = ""
    result_size_bytes: int = 0
    result_sha256: str = ""
    error: str = ""
    failure_reason: FailureReason = FailureReason.UNSPECIFIED
    run_timeout_s: float = 0.0
    """How long one attempt may run before its process is killed (0: no limit)."""
    deadline: datetime | None = None
    """The latest time an attempt may start; past it a QUEUED task ends EXPIRED."""
    not_before: datetime | None = None
    """A delayed task is QUEUED but not dispatched before this time."""
    retry: RetryPolicy | None = None
    """How a failed attempt is tried again (None: it is not)."""
    rerun_of: str = ""
    """The task this one runs again (``RerunTask``)."""
    result_ttl_s: float = 0.0
    """How long the task and its result are kept once it finished (retention)."""
    trace_parent: str = ""
    """The W3C trace context of the span that submitted it, which its
    dispatch, run, store and notice continue (``""``: not traced)."""

    @property
    def expires_at(self) -> datetime | None:
        """When retention deletes the finished task (None: not finished, or kept for ever)."""
        if self.finished_at is None or not self.result_ttl_s:
            return None
        return self.finished_at + timedelta(seconds=self.result_ttl_s)

    dispatched_at: datetime | None = None
    """When the current attempt was handed to ``worker_id``."""
    started_at: datetime | None = None
    """When the attempt began: its dispatch, then (once reported) the
    node's start of its task process."""
    finished_at: datetime | None = None
    revision: int = 0
    """Position of the task's last committed change in the order of every
    committed change (kept in the store, continued by a new leader; 0 = from
    before revisions were kept, or not committed yet)."""

    def snapshot(self) -> Task:
        return dataclasses.replace(self)


class DispatchQueue:
    """QUEUED tasks in dispatch order: HIGH before NORMAL before LOW, FIFO
    within a level. Removal is lazy: :meth:`discard` forgets the task and
    :meth:`pop` skips entries that are no longer current."""

    def __init__(self) -> None:
        self._levels: dict[Priority, deque[tuple[str, int]]] = {
            p: deque() for p in (Priority.HIGH, Priority.NORMAL, Priority.LOW)
        }
        self._current: dict[str, int] = {}
        self._pushes = 0

    def push(self, task: Task) -> None:
        """Append ``task`` at the end of its level (no-op if already queued)."""
        if task.task_id in self._current:
            return
        self._pushes += 1
        self._current[task.task_id] = self._pushes
        self._levels[task.priority.effective()].append((task.task_id, self._pushes))

    def push_front(self, task: Task) -> None:
        """Put ``task`` back at the head of its level (it was taken out but
        never handed over); no-op if already queued."""
        if task.task_id in self._current:
            return
        self._pushes += 1
        self._current[task.task_id] = self._pushes
        self._levels[task.priority.effective()].appendleft((task.task_id, self._pushes))

    def discard(self, task_id: str) -> None:
        self._current.pop(task_id, None)

    def pop(self) -> str | None:
        """The next task to dispatch, removed from the queue; None if empty."""
        for level in self._levels.values():
            while level:
                task_id, push = level.popleft()
                if self._current.get(task_id) == push:
                    del self._current[task_id]
                    return task_id
        return None

    def head_priority(self) -> Priority | None:
        """The level of the task :meth:`pop` would return; None if empty."""
        for priority, level in self._levels.items():
            while level and self._current.get(level[0][0]) != level[0][1]:
                level.popleft()  # no longer current: drop it now
            if level:
                return priority
        return None

    def heads(self) -> list[str]:
        """The task at the head of each level (the longest waiting there)."""
        found = []
        for level in self._levels.values():
            while level and self._current.get(level[0][0]) != level[0][1]:
                level.popleft()  # no longer current: drop it now
            if level:
                found.append(level[0][0])
        return found

    def __len__(self) -> int:
        return len(self._current)

    def __iter__(self) -> Iterator[str]:
        """The queued task ids (in no particular order)."""
        return iter(list(self._current))

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._current


class QueueTimers:
    """The two times of queued tasks the Scheduler must act on: when a
    delayed task becomes due, and the deadline by which a task must have
    started. Each is a heap of (time, task id). An entry may be stale (the
    task started, ended or waits for another time since): the Scheduler
    checks each it pops."""

    def __init__(self) -> None:
        self._due: list[tuple[datetime, str]] = []
        self._deadlines: list[tuple[datetime, str]] = []
        self.changed = asyncio.Event()
        """Set whenever a time is added (the timer loop may have to wake
        sooner than it planned)."""

    def add_due(self, at: datetime, task_id: str) -> None:
        heapq.heappush(self._due, (at, task_id))
        self.changed.set()

    def add_deadline(self, at: datetime, task_id: str) -> None:
        heapq.heappush(self._deadlines, (at, task_id))
        self.changed.set()

    def first(self) -> datetime | None:
        """The earliest time of either kind (None: none)."""
        return min((heap[0][0] for heap in (self._due, self._deadlines) if heap), default=None)

    def pop_due(self, now: datetime) -> Iterator[tuple[datetime, str]]:
        """(due time, task id) of every entry due by ``now``, earliest first."""
        while self._due and self._due[0][0] <= now:
            yield heapq.heappop(self._due)

    def pop_deadlines(self, now: datetime) -> Iterator[str]:
        """The task id of every deadline passed by ``now``, earliest first."""
        while self._deadlines and self._deadlines[0][0] <= now:
            yield heapq.heappop(self._deadlines)[1]

    def waiting(self) -> Iterator[str]:
        """The task ids waiting for their due time (stale ones too)."""
        return (task_id for _, task_id in self._due)
