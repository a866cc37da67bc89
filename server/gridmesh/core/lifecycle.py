"""Task life-cycle events (SPEC §3 "Life-cycle log") and the port they go to."""

from __future__ import annotations

import enum
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


class LifecycleLog(Protocol):
    """Where life-cycle events go. ``emit`` must never block or raise: an
    unreachable log may lose events (counted), never task processing."""

    def emit(self, event: LifecycleEvent) -> None: ...

    def close(self) -> None: ...


class NullLifecycleLog:
    """Drops every event (unit tests; meshes without Kafka)."""

    def emit(self, event: LifecycleEvent) -> None:
        pass

    def close(self) -> None:
        pass


class MemoryLifecycleLog:
    """Keeps events in a list (unit tests)."""

    def __init__(self) -> None:
        self.events: list[LifecycleEvent] = []

    def emit(self, event: LifecycleEvent) -> None:
        self.events.append(event)

    def close(self) -> None:
        pass
