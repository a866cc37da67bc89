"""The result index port and its in-memory adapter.

The index records, per task, where its result file is and what it holds
(:class:`~gridmesh.core.results.StoredResult`); the file store holds the
bytes. The MySQL adapter is :mod:`gridmesh.storekeeper.mysql_index`.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Protocol

from gridmesh.core.results import ResultKey, StoredResult


class ResultIndex(Protocol):
    """Where each task's result is and what it holds."""

    async def get(self, task_id: str) -> StoredResult | None:
        """The entry of ``task_id`` (canonical UUID), or None."""
        ...

    async def put(self, result: StoredResult) -> None:
        """Insert or replace the entry of ``result.task_id``; durable when it
        returns. Must be idempotent (the same put twice = once)."""
        ...

    async def expire(self, task_ids: list[str], at: datetime) -> None:
        """Mark these entries expired (their files are deleted)."""

    async def list(self, result_dir: str, after: ResultKey | None, limit: int) -> list[StoredResult]:
        """At most ``limit`` entries in :class:`ResultKey` order, only of
        ``result_dir`` unless it is empty, strictly after ``after`` if given."""
        ...

    async def close(self) -> None:
        """Finish pending writes and release connections. Idempotent."""
        ...


class InMemoryResultIndex:
    """A :class:`ResultIndex` in a dict, for unit tests."""

    def __init__(self) -> None:
        self.entries: dict[str, StoredResult] = {}
        self.closed = False

    async def get(self, task_id: str) -> StoredResult | None:
        return self.entries.get(task_id)

    async def put(self, result: StoredResult) -> None:
        self.entries[result.task_id] = result

    async def expire(self, task_ids: list[str], at: datetime) -> None:
        for task_id in task_ids:
            if task_id in self.entries:
                self.entries[task_id] = dataclasses.replace(self.entries[task_id], expired_at=at)

    async def list(self, result_dir: str, after: ResultKey | None, limit: int) -> list[StoredResult]:
        rows = sorted(
            (
                r
                for r in self.entries.values()
                if (not result_dir or r.result_dir == result_dir) and r.expired_at is None
            ),
            key=lambda r: r.key,
        )
        if after is not None:
            rows = [r for r in rows if r.key > after]
        return rows[:limit]

    async def close(self) -> None:
        self.closed = True


__all__ = ["InMemoryResultIndex", "ResultIndex"]
