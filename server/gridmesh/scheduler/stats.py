"""``GetStats``: the figures the analytics job stored, read back from MySQL.

:class:`MySQLStatsReader` implements :class:`~gridmesh.core.stats.StatsReader`
over the tables of :mod:`gridmesh.analytics.tables`; :func:`query_from_proto`
and :func:`report_to_proto` convert between the API and the core.
"""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import timestamp_pb2

from gridmesh.adapters.mysql import Cursor, MySQL
from gridmesh.analytics.tables import JOB, MIGRATIONS
from gridmesh.common.convert import from_timestamp, to_timestamp
from gridmesh.common.errors import InvalidArgument
from gridmesh.core.stats import (
    JobProgress,
    StatsQuery,
    StatsReport,
    Summary,
    TaskWindowStats,
    Window,
    WorkerWindowStats,
    stats_query,
)
from gridmesh.v1 import scheduler_pb2

__all__ = ["MAX_ROWS", "MySQLStatsReader", "query_from_proto", "report_to_proto"]

MAX_ROWS = 50_000
"""Most windows (and worker windows) one answer carries, oldest first."""


class MySQLStatsReader:
    """Reads ``task_stats``, ``worker_stats`` and ``job_progress`` of the
    analytics database, over ``db``: the Scheduler's own database, whose
    account may only read the job's. Before the job made its tables, the
    report is empty."""

    def __init__(self, db: MySQL, analytics_database: str) -> None:
        self._db = db
        self._analytics = analytics_database
        self._tables_made = False

    async def read(self, query: StatsQuery) -> StatsReport:
        if not self._tables_made:
            self._tables_made = await self._db.read(self._made)
            if not self._tables_made:
                return StatsReport([], [], JobProgress())
        return await self._db.read(lambda cur: _read(cur, query, self._analytics))

    def _made(self, cur: Cursor) -> bool:
        """Whether the job's migrations have all run."""
        cur.execute(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = %s AND table_name = 'schema_version'",
            (self._analytics,),
        )
        row = cur.fetchone()
        if not row or not row[0]:
            return False
        cur.execute(f"SELECT COALESCE(MAX(version), 0) FROM `{self._analytics}`.schema_version")
        row = cur.fetchone()
        return row is not None and int(row[0]) >= len(MIGRATIONS)

    def close(self) -> None:
        self._db.close()


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.replace(tzinfo=UTC)


def _db(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None)


def _read(cur: Cursor, query: StatsQuery, database: str) -> StatsReport:
    overlap = "window_start < %s AND window_end > %s"
    bounds: list[object] = [_db(query.end), _db(query.start)]
    type_filter = ""
    if query.task_type:
        type_filter = " AND task_type = %s"
        bounds.append(query.task_type)
    cur.execute(
        "SELECT window_start, window_end, task_type, pending, started, completed, failed, retried, "
        "queue_wait_count, queue_wait_mean_ms, queue_wait_max_ms, queue_wait_p50_ms, queue_wait_p95_ms, "
        "run_time_count, run_time_mean_ms, run_time_max_ms "
        f"FROM `{database}`.task_stats WHERE {overlap}{type_filter} "
        f"ORDER BY window_start, task_type LIMIT {MAX_ROWS}",
        bounds,
    )
    windows = [
        TaskWindowStats(
            window=Window(row[0].replace(tzinfo=UTC), row[1].replace(tzinfo=UTC)),
            task_type=row[2],
            pending=int(row[3]),
            started=int(row[4]),
            completed=int(row[5]),
            failed=int(row[6]),
            retried=int(row[7]),
            queue_wait=Summary(int(row[8]), float(row[9]), float(row[10]), float(row[11]), float(row[12])),
            run_time=Summary(int(row[13]), float(row[14]), float(row[15])),
        )
        for row in cur.fetchall()
    ]
    cur.execute(
        "SELECT window_start, window_end, worker_id, completed, busy_ms "
        f"FROM `{database}`.worker_stats WHERE {overlap} ORDER BY window_start, worker_id LIMIT {MAX_ROWS}",
        bounds[:2],
    )
    workers = [
        WorkerWindowStats(
            window=Window(row[0].replace(tzinfo=UTC), row[1].replace(tzinfo=UTC)),
            worker_id=row[2],
            completed=int(row[3]),
            busy_ms=float(row[4]),
        )
        for row in cur.fetchall()
    ]
    cur.execute(
        "SELECT last_batch_id, last_batch_at, watermark, events, malformed, late "
        f"FROM `{database}`.job_progress WHERE job = %s",
        (JOB,),
    )
    row = cur.fetchone()
    progress = (
        JobProgress()
        if row is None
        else JobProgress(int(row[0]), _utc(row[1]), _utc(row[2]), int(row[3]), int(row[4]), int(row[5]))
    )
    return StatsReport(windows, workers, progress)


# -- protobuf -------------------------------------------------------------------------


def _time(ts: timestamp_pb2.Timestamp, field: str) -> datetime:
    try:
        return from_timestamp(ts)
    except (ValueError, OverflowError):
        raise InvalidArgument(f"{field} ({ts.seconds} s, {ts.nanos} ns) is not a valid time", field=field) from None


def query_from_proto(request: scheduler_pb2.GetStatsRequest, now: datetime) -> StatsQuery:
    """The checked query of ``request`` (see :func:`~gridmesh.core.stats.stats_query`)."""
    return stats_query(
        _time(request.start_time, "start_time") if request.HasField("start_time") else None,
        _time(request.end_time, "end_time") if request.HasField("end_time") else None,
        request.task_type,
        now,
    )


def report_to_proto(report: StatsReport) -> scheduler_pb2.GetStatsResponse:
    p = report.progress
    return scheduler_pb2.GetStatsResponse(
        windows=[
            scheduler_pb2.StatsWindow(
                window_start=to_timestamp(w.window.start),
                window_end=to_timestamp(w.window.end),
                task_type=w.task_type,
                pending=w.pending,
                started=w.started,
                completed=w.completed,
                failed=w.failed,
                retried=w.retried,
                queue_wait_mean_ms=w.queue_wait.mean_ms,
                queue_wait_max_ms=w.queue_wait.max_ms,
                queue_wait_p50_ms=w.queue_wait.p50_ms,
                queue_wait_p95_ms=w.queue_wait.p95_ms,
                run_time_mean_ms=w.run_time.mean_ms,
                run_time_max_ms=w.run_time.max_ms,
                queue_wait_count=w.queue_wait.count,
                run_time_count=w.run_time.count,
                final=report.final(w.window),
            )
            for w in report.windows
        ],
        workers=[
            scheduler_pb2.WorkerStatsWindow(
                window_start=to_timestamp(w.window.start),
                window_end=to_timestamp(w.window.end),
                worker_id=w.worker_id,
                completed=w.completed,
                busy_ms=w.busy_ms,
            )
            for w in report.workers
        ],
        last_batch_at=to_timestamp(p.last_batch_at),
        watermark=to_timestamp(p.watermark),
        malformed_records=p.malformed,
        late_events=p.late,
    )
