"""The watch hub: the open WatchTask/WatchTasks streams and what each wants.

The Scheduler offers every committed task snapshot to the hub, in commit
order; each watcher that wants it gets it on its own queue. A watcher that
falls :data:`WATCH_QUEUE_LIMIT` changes behind is marked overflowed (its
stream ends and the client resumes from its last position).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

from gridmesh.core.tasks import Task

WATCH_QUEUE_LIMIT = 100_000


@dataclass(frozen=True)
class WatchFilter:
    """Which committed changes a watch wants."""

    task_ids: frozenset[str] | None = None
    """None: every task."""
    terminal_only: bool = False
    task_type: str = ""

    def wants(self, task: Task) -> bool:
        if self.task_ids is not None and task.task_id not in self.task_ids:
            return False
        if self.task_type and task.task_type != self.task_type:
            return False
        return task.state.terminal or not self.terminal_only


class Watcher:
    """One WatchTask/WatchTasks stream: committed task snapshots, in order."""

    def __init__(self, watch: WatchFilter) -> None:
        self.filter = watch
        self.queue: asyncio.Queue[tuple[Task, datetime] | None] = asyncio.Queue()
        """Committed snapshots; None ends the watch (the Scheduler stepped down)."""
        self.overflowed = False

    def wants(self, task: Task) -> bool:
        return self.filter.wants(task)

    def offer(self, task: Task, at: datetime) -> None:
        if self.queue.qsize() >= WATCH_QUEUE_LIMIT:
            self.overflowed = True
            return
        self.queue.put_nowait((task, at))

    def close(self) -> None:
        self.queue.put_nowait(None)


class WatchHub:
    """Every open watch of one Scheduler."""

    def __init__(self) -> None:
        self._watchers: set[Watcher] = set()

    def add(self, watch: WatchFilter) -> Watcher:
        watcher = Watcher(watch)
        self._watchers.add(watcher)
        return watcher

    def remove(self, watcher: Watcher) -> None:
        self._watchers.discard(watcher)

    def publish(self, snapshot: Task, at: datetime) -> None:
        """Offer a committed snapshot to every watcher that wants it."""
        for watcher in self._watchers:
            if watcher.wants(snapshot):
                watcher.offer(snapshot, at)

    def __len__(self) -> int:
        return len(self._watchers)

    def close(self) -> None:
        """End every watch (the Scheduler stepped down)."""
        for watcher in self._watchers:
            watcher.close()
