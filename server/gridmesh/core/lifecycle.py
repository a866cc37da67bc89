"""Task life-cycle events (SPEC §3 "Life-cycle log") and the port they go to."""

from __future__ import annotations

import enum
import threading
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol

from gridmesh.core.tasks import FailureReason, Task, TaskState


class LifecycleKind(enum.Enum):
    """The kind of a life-cycle event; each has its own topic."""

    PENDING = "task.pending"
    STARTED = "task.started"
    COMPLETED = "task.completed"
    FAILED = "task.failed"
    RETRIED = "task.retried"


@dataclass(frozen=True)
class LifecycleEvent:
    kind: LifecycleKind
    task_id: str
    task_type: str
    worker_id: str
    attempt: int
    priority: int
    occurred_at: datetime
    error: str = ""
    position: int = 0
    """The committed change it comes from (the task's revision); 0 when it
    does not come from the Scheduler's commits (a worker's ``started``)."""
    trace_parent: str = ""
    """The W3C trace context of the task (``""``: not traced)."""


def task_event(kind: LifecycleKind, task: Task, at: datetime, error: str = "") -> LifecycleEvent:
    """The event ``kind`` of ``task`` as it stands now (its attempt, its worker), at ``at``."""
    return LifecycleEvent(
        kind, task.task_id, task.task_type, task.worker_id, task.attempt, int(task.priority), at, error,
        trace_parent=task.trace_parent,
    )  # fmt: skip


def implied_events(task: Task) -> list[LifecycleEvent]:
    """The Scheduler's events a task's committed state implies, at the
    position of that state: accepted (pending), the start of its last attempt
    if that ran to a report, and, if it ended, how. Retries and earlier
    attempts' starts are not implied by a state alone."""
    pending = task_event(LifecycleKind.PENDING, task, task.created_at)
    events = [replace(pending, attempt=1)]
    end = task.finished_at or task.created_at
    ran = task.state is TaskState.SUCCEEDED or task.failure_reason in (FailureReason.ERROR, FailureReason.TIMEOUT)
    if ran and task.started_at is not None:  # the worker's start of the last attempt (see SchedulerCore.report)
        events.append(task_event(LifecycleKind.STARTED, task, task.started_at))
    if task.state is TaskState.SUCCEEDED:
        events.append(task_event(LifecycleKind.COMPLETED, task, end))
    elif task.state is TaskState.FAILED:
        events.append(task_event(LifecycleKind.FAILED, task, end, task.error))
    return [replace(e, position=task.revision) for e in events]


class LifecycleLog(Protocol):
    """Where life-cycle events go. ``emit`` must never block or raise: an
    unreachable log may lose events (counted), never task processing."""

    def emit(self, event: LifecycleEvent) -> None: ...

    def acknowledged(self) -> int:
        """The highest position through which every event emitted with a
        position has been delivered: a Scheduler that crashed may have lost
        the events after it, so its successor emits them again from there."""

    def close(self) -> None: ...


class Acknowledgements:
    """Positions of events handed to a log and not yet delivered (safe from
    any thread): :meth:`upto` is the highest position with nothing at or
    below it outstanding."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._outstanding: dict[int, int] = {}
        self._highest = 0

    def sent(self, position: int) -> None:
        if position:
            with self._lock:
                self._outstanding[position] = self._outstanding.get(position, 0) + 1
                self._highest = max(self._highest, position)

    def done(self, position: int) -> None:
        if position:
            with self._lock:
                left = self._outstanding.get(position, 0) - 1
                if left > 0:
                    self._outstanding[position] = left
                else:
                    self._outstanding.pop(position, None)

    def upto(self) -> int:
        with self._lock:
            return min(self._outstanding) - 1 if self._outstanding else self._highest


class NullLifecycleLog:
    """Drops every event (unit tests; meshes without Kafka)."""

    def __init__(self) -> None:
        self._acks = Acknowledgements()

    def emit(self, event: LifecycleEvent) -> None:
        self._acks.sent(event.position)
        self._acks.done(event.position)

    def acknowledged(self) -> int:
        return self._acks.upto()

    def close(self) -> None:
        pass


class MemoryLifecycleLog(NullLifecycleLog):
    """Keeps events in a list (unit tests); each is delivered at once."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[LifecycleEvent] = []

    def emit(self, event: LifecycleEvent) -> None:
        super().emit(event)
        self.events.append(event)
