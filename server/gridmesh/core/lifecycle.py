"""Task life-cycle events (SPEC §3 "Life-cycle log") and the port they go to."""

from __future__ import annotations

import enum
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


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
