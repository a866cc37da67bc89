"""The MySQL sink of the analytics job: one micro-batch, one transaction.

How a replayed micro-batch neither loses nor double-counts
----------------------------------------------------------
Spark re-runs a micro-batch after a crash with exactly the Kafka offsets it
had planned for it (they are in its checkpoint before the batch starts), so
the sink sees the same records again. It may already have committed them
(the crash came after the MySQL commit but before Spark recorded the batch
as done) or not (the crash, or a lost MySQL connection, came before).

1. Each batch is one MySQL transaction: the events, the figures and the
   progress row commit together or not at all. A lost connection rolls it
   back and the whole batch is retried (the MySQL adapter's writer retries
   with backoff; past that the batch fails and the job restarts the query
   from its checkpoint).
2. The progress row remembers the last batch id stored for the Spark query
   (its id survives restarts from the same checkpoint): a batch stored
   already is skipped.
3. Below that, every figure is idempotent by construction: events are stored
   once, keyed by ``(task_id, attempt, kind)`` (``INSERT IGNORE``), and the
   windows a batch touches are recomputed from the stored events and
   upserted with absolute values (``INSERT ... ON DUPLICATE KEY UPDATE``),
   keyed by (window, task type) and (window, worker). Applying the same
   records twice, in one batch or two, with a fresh checkpoint even, gives
   the same rows; no figure is ever incremented by a batch.

Recomputing from stored events (rather than merging per-batch partial
aggregates) is also what makes queue wait and run time exact: their two
ends come from different topics and usually from different micro-batches,
and late events (within the watermark) land in the right window. Percentiles
are exact for the same reason.

The watermark is kept in the same row (latest event time stored - allowed
lateness) and read at the start of a batch, so whether an event is late is
decided the same way when a batch is replayed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gridmesh.adapters.mysql import Cursor, GroupCommitter, MySQL
from gridmesh.analytics._decode import Record, occurred_at
from gridmesh.analytics.tables import JOB, MIGRATIONS
from gridmesh.core.stats import (
    Derived,
    Event,
    EventKey,
    Fact,
    TaskWindowStats,
    Window,
    WorkerWindowStats,
    aggregate,
    derive,
    kind_from_name,
    kind_name,
    prune_horizon,
    watermark,
    window_of,
)

__all__ = ["BatchOutcome", "LifecycleSink", "SinkSettings"]

log = logging.getLogger(__name__)

IN_CHUNK = 500
"""Task ids per ``IN (...)`` lookup."""
PRUNE_LIMIT = 10_000
"""Rows deleted per table and batch when old events are pruned."""


@dataclass(frozen=True, slots=True)
class SinkSettings:
    window_s: int = 60
    lateness_s: float = 600.0
    retention_s: float = 86_400.0


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    batch_id: int
    records: int
    skipped: bool = False
    """The batch had been stored already (a replay): nothing changed."""
    stored: int = 0
    duplicates: int = 0
    malformed: int = 0
    late: int = 0
    windows: int = 0


@dataclass(slots=True)
class _Progress:
    query_id: str
    last_batch_id: int
    max_event_time: datetime | None
    pruned_before: datetime | None
    offsets: dict[str, int]


def _to_db(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC).replace(tzinfo=None)


def _from_db(value: datetime | None) -> datetime | None:
    return None if value is None else value.replace(tzinfo=UTC)


def _at(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC)


class LifecycleSink:
    """Stores micro-batches of decoded records in the analytics tables."""

    def __init__(
        self, db: MySQL, settings: SinkSettings, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self._db = db
        self._settings = settings
        self._clock = clock
        self._writer: GroupCommitter | None = None

    def setup(self) -> None:
        """Create the database and tables if needed. Blocking."""
        self._db.ensure_schema(MIGRATIONS)
        self._writer = GroupCommitter(self._db)

    def close(self) -> None:
        """Idempotent."""
        if self._writer is not None:
            self._writer.close()
        self._db.close()

    def apply(self, records: Sequence[Record], batch_id: int, query_id: str) -> BatchOutcome:
        """Store one micro-batch (blocking). Safe to call again with the same
        batch, whether or not the first call committed. Raises
        :class:`~gridmesh.common.errors.Unavailable` if MySQL stays unreachable."""
        if self._writer is None:
            raise RuntimeError("LifecycleSink.setup() was not called")
        ordered = sorted(records, key=lambda r: (r.topic, r.kafka_partition, r.kafka_offset))
        outcome: BatchOutcome = self._writer.submit(lambda cur: self._store(cur, ordered, batch_id, query_id)).result()
        return outcome

    # -- the transaction ----------------------------------------------------------------

    def _store(self, cur: Cursor, records: Sequence[Record], batch_id: int, query_id: str) -> BatchOutcome:
        progress = _lock_progress(cur)
        if progress.query_id == query_id and batch_id <= progress.last_batch_id:
            log.info("batch %d of query %s was stored already: skipping its replay", batch_id, query_id)
            return BatchOutcome(batch_id, len(records), skipped=True)
        s = self._settings
        now = self._clock()
        mark = watermark(progress.max_event_time, s.lateness_s)

        valid = [r for r in records if r.valid]
        known = _load_tasks(cur, {r.task_id for r in valid})
        fresh: dict[EventKey, tuple[Event, Record]] = {}
        late: list[tuple[Record, str]] = []
        duplicates = 0
        for record in valid:
            event = _event(record)
            if event.key in known or event.key in fresh:
                duplicates += 1
            elif mark is not None and event.occurred_at < mark:
                late.append((record, f"occurred {event.occurred_at.isoformat()}, watermark {mark.isoformat()}"))
            elif progress.pruned_before is not None and event.occurred_at < progress.pruned_before:
                late.append((record, f"occurred before {progress.pruned_before.isoformat()} (pruned)"))
            else:
                fresh[event.key] = (event, record)

        derived = derive([e for e, _ in known.values()] + [e for e, _ in fresh.values()])
        stored = _insert_events(cur, [(e, r, derived.get(e.key, Derived())) for e, r in fresh.values()])
        changed = [(known[k][0], d) for k, d in derived.items() if k in known and known[k][1] != d]
        _update_derived(cur, changed)
        malformed = _reject(cur, [(r, "malformed", r.reason) for r in records if not r.valid], now)
        late_count = _reject(cur, [(r, "late", why) for r, why in late], now)

        windows = {window_of(e.occurred_at, s.window_s) for e, _ in fresh.values()}
        windows |= {window_of(e.occurred_at, s.window_s) for e, _ in changed}
        if progress.pruned_before is not None:
            windows = {w for w in windows if w.start >= progress.pruned_before}
        for window in sorted(windows):
            tasks, workers = aggregate(window, _facts(cur, window))
            _upsert_stats(cur, tasks, workers, now)

        newest = max((e.occurred_at for e, _ in fresh.values()), default=None)
        max_time = max((t for t in (progress.max_event_time, newest) if t is not None), default=None)
        new_mark = watermark(max_time, s.lateness_s)
        pruned_before = progress.pruned_before
        horizon = prune_horizon(new_mark, s.retention_s, s.window_s)
        if horizon is not None:
            _prune(cur, horizon)
            pruned_before = horizon if pruned_before is None else max(pruned_before, horizon)
        offsets = dict(progress.offsets)
        for r in records:
            key = f"{r.topic}/{r.kafka_partition}"
            offsets[key] = max(offsets.get(key, 0), r.kafka_offset + 1)
        cur.execute(
            "UPDATE job_progress SET query_id = %s, last_batch_id = %s, last_batch_at = %s, max_event_time = %s, "
            "watermark = %s, pruned_before = %s, events = events + %s, malformed = malformed + %s, "
            "late = late + %s, offsets = %s WHERE job = %s",
            (
                query_id,
                batch_id,
                _to_db(now),
                _to_db(max_time),
                _to_db(new_mark),
                _to_db(pruned_before),
                stored,
                malformed,
                late_count,
                json.dumps(offsets, sort_keys=True),
                JOB,
            ),
        )
        return BatchOutcome(batch_id, len(records), False, stored, duplicates, malformed, late_count, len(windows))


def _lock_progress(cur: Cursor) -> _Progress:
    cur.execute("INSERT IGNORE INTO job_progress (job, offsets) VALUES (%s, '{}')", (JOB,))
    cur.execute(
        "SELECT query_id, last_batch_id, max_event_time, pruned_before, offsets FROM job_progress "
        "WHERE job = %s FOR UPDATE",
        (JOB,),
    )
    row = cur.fetchone()
    assert row is not None
    return _Progress(row[0], int(row[1]), _from_db(row[2]), _from_db(row[3]), json.loads(row[4] or "{}"))


def _event(record: Record) -> Event:
    return Event(
        record.task_id,
        record.attempt,
        kind_from_name(record.kind),
        record.task_type,
        record.worker_id,
        occurred_at(record),
    )


def _derived(row: Sequence[Any]) -> Derived:
    wait, run, busy, busy_worker = row
    return Derived(
        None if wait is None else float(wait),
        None if run is None else float(run),
        None if busy is None else float(busy),
        busy_worker,
    )


def _load_tasks(cur: Cursor, task_ids: Iterable[str]) -> dict[EventKey, tuple[Event, Derived]]:
    """Every stored event of these tasks, with what it contributes now."""
    ids = sorted(task_ids)
    result: dict[EventKey, tuple[Event, Derived]] = {}
    for i in range(0, len(ids), IN_CHUNK):
        chunk = ids[i : i + IN_CHUNK]
        cur.execute(
            "SELECT task_id, attempt, kind, task_type, worker_id, occurred_at, wait_ms, run_ms, busy_ms, busy_worker "
            f"FROM lifecycle_events WHERE task_id IN ({', '.join(['%s'] * len(chunk))})",
            chunk,
        )
        for row in cur.fetchall():
            event = Event(row[0], int(row[1]), kind_from_name(row[2]), row[3], row[4], _at(row[5]))
            result[event.key] = (event, _derived(row[6:10]))
    return result


def _insert_events(cur: Cursor, rows: Sequence[tuple[Event, Record, Derived]]) -> int:
    if not rows:
        return 0
    cur.executemany(
        "INSERT IGNORE INTO lifecycle_events (task_id, attempt, kind, task_type, worker_id, priority, occurred_at, "
        "wait_ms, run_ms, busy_ms, busy_worker, topic, kafka_partition, kafka_offset) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        [
            (
                e.task_id,
                e.attempt,
                kind_name(e.kind),
                e.task_type,
                e.worker_id,
                r.priority,
                _to_db(e.occurred_at),
                d.wait_ms,
                d.run_ms,
                d.busy_ms,
                d.busy_worker,
                r.topic,
                r.kafka_partition,
                r.kafka_offset,
            )
            for e, r, d in rows
        ],
    )
    return int(cur.rowcount)


def _update_derived(cur: Cursor, changed: Sequence[tuple[Event, Derived]]) -> None:
    if not changed:
        return
    cur.executemany(
        "UPDATE lifecycle_events SET wait_ms = %s, run_ms = %s, busy_ms = %s, busy_worker = %s "
        "WHERE task_id = %s AND attempt = %s AND kind = %s",
        [(d.wait_ms, d.run_ms, d.busy_ms, d.busy_worker, e.task_id, e.attempt, kind_name(e.kind)) for e, d in changed],
    )


def _reject(cur: Cursor, rows: Sequence[tuple[Record, str, str]], now: datetime) -> int:
    """Record skipped records, each once; returns how many were new."""
    if not rows:
        return 0
    cur.executemany(
        "INSERT IGNORE INTO rejected_records (topic, kafka_partition, kafka_offset, reason, detail, recorded_at) "
        "VALUES (%s, %s, %s, %s, %s, %s)",
        [(r.topic, r.kafka_partition, r.kafka_offset, reason, detail[:255], _to_db(now)) for r, reason, detail in rows],
    )
    count = int(cur.rowcount)
    if count:
        log.warning("skipped %d %s record(s), e.g. %s/%d@%d: %s", count, rows[0][1], *_where(rows[0][0]), rows[0][2])
    return count


def _where(record: Record) -> tuple[str, int, int]:
    return record.topic, record.kafka_partition, record.kafka_offset


def _facts(cur: Cursor, window: Window) -> list[Fact]:
    cur.execute(
        "SELECT kind, task_type, worker_id, wait_ms, run_ms, busy_ms, busy_worker FROM lifecycle_events "
        "WHERE occurred_at >= %s AND occurred_at < %s",
        (_to_db(window.start), _to_db(window.end)),
    )
    return [Fact(kind_from_name(row[0]), row[1], row[2], _derived(row[3:7])) for row in cur.fetchall()]


def _upsert_stats(
    cur: Cursor, tasks: Sequence[TaskWindowStats], workers: Sequence[WorkerWindowStats], now: datetime
) -> None:
    if tasks:
        cur.executemany(
            "INSERT INTO task_stats (window_start, window_end, task_type, pending, started, completed, failed, "
            "retried, queue_wait_count, queue_wait_mean_ms, queue_wait_max_ms, queue_wait_p50_ms, queue_wait_p95_ms, "
            "run_time_count, run_time_mean_ms, run_time_max_ms, updated_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
            "ON DUPLICATE KEY UPDATE window_end = VALUES(window_end), pending = VALUES(pending), "
            "started = VALUES(started), completed = VALUES(completed), failed = VALUES(failed), "
            "retried = VALUES(retried), queue_wait_count = VALUES(queue_wait_count), "
            "queue_wait_mean_ms = VALUES(queue_wait_mean_ms), queue_wait_max_ms = VALUES(queue_wait_max_ms), "
            "queue_wait_p50_ms = VALUES(queue_wait_p50_ms), queue_wait_p95_ms = VALUES(queue_wait_p95_ms), "
            "run_time_count = VALUES(run_time_count), run_time_mean_ms = VALUES(run_time_mean_ms), "
            "run_time_max_ms = VALUES(run_time_max_ms), updated_at = VALUES(updated_at)",
            [
                (
                    _to_db(t.window.start),
                    _to_db(t.window.end),
                    t.task_type,
                    t.pending,
                    t.started,
                    t.completed,
                    t.failed,
                    t.retried,
                    t.queue_wait.count,
                    t.queue_wait.mean_ms,
                    t.queue_wait.max_ms,
                    t.queue_wait.p50_ms,
                    t.queue_wait.p95_ms,
                    t.run_time.count,
                    t.run_time.mean_ms,
                    t.run_time.max_ms,
                    _to_db(now),
                )
                for t in tasks
            ],
        )
    if workers:
        cur.executemany(
            "INSERT INTO worker_stats (window_start, window_end, worker_id, completed, busy_ms, updated_at) "
            "VALUES (%s, %s, %s, %s, %s, %s) ON DUPLICATE KEY UPDATE window_end = VALUES(window_end), "
            "completed = VALUES(completed), busy_ms = VALUES(busy_ms), updated_at = VALUES(updated_at)",
            [
                (_to_db(w.window.start), _to_db(w.window.end), w.worker_id, w.completed, w.busy_ms, _to_db(now))
                for w in workers
            ],
        )


def _prune(cur: Cursor, horizon: datetime) -> None:
    """Delete events older than ``horizon`` (their windows are final and
    stay as they are), a bounded number per batch."""
    cur.execute("DELETE FROM lifecycle_events WHERE occurred_at < %s LIMIT %s", (_to_db(horizon), PRUNE_LIMIT))
    pruned = int(cur.rowcount)
    cur.execute("DELETE FROM rejected_records WHERE recorded_at < %s LIMIT %s", (_to_db(horizon), PRUNE_LIMIT))
    if pruned:
        log.info("pruned %d events that occurred before %s", pruned, horizon.isoformat())
