"""The MySQL tables of the analytics job (database ``<namespace>_gridmesh_analytics``).

The job creates them (and ``GetStats`` reads them); each is meant to be
queried directly, e.g.::

    SELECT window_start, task_type, completed, queue_wait_p95_ms, run_time_mean_ms
      FROM task_stats WHERE window_start >= NOW() - INTERVAL 1 HOUR ORDER BY 1, 2;

All times are UTC, ``DATETIME(6)``; durations are milliseconds.

``lifecycle_events``
    One row per life-cycle event, keyed by ``(task_id, attempt, kind)``: the
    facts every figure is computed from, with what each event adds once its
    partner is known (``wait_ms`` on started rows, ``run_ms`` on completed
    rows, ``busy_ms``/``busy_worker`` on completed, failed and retried rows)
    and where it was read (topic, partition, offset). Kept ``retention_s``
    behind the watermark.
``task_stats``
    One row per window and task type: counts per event kind, queue wait
    (count, mean, max, p50, p95) and run time (count, mean, max).
``worker_stats``
    One row per window and worker: completed tasks and busy time.
``rejected_records``
    One row per skipped Kafka record (``reason`` = ``malformed`` or
    ``late``), keyed by (topic, partition, offset), with what was wrong.
``job_progress``
    One row per job: the last micro-batch stored (Spark query id, batch id,
    time), the event-time watermark, the Kafka offsets read so far, and
    running totals of stored, malformed and late records.
"""

from __future__ import annotations

__all__ = ["JOB", "MIGRATIONS"]

JOB = "lifecycle"
"""Name of the one job row in ``job_progress``."""

MIGRATIONS = [
    """CREATE TABLE IF NOT EXISTS lifecycle_events (
        task_id VARCHAR(64) NOT NULL,
        attempt INT NOT NULL,
        kind VARCHAR(16) NOT NULL,
        task_type VARCHAR(128) NOT NULL,
        worker_id VARCHAR(255) NOT NULL,
        priority SMALLINT NOT NULL,
        occurred_at DATETIME(6) NOT NULL,
        wait_ms DOUBLE NULL,
        run_ms DOUBLE NULL,
        busy_ms DOUBLE NULL,
        busy_worker VARCHAR(255) NOT NULL DEFAULT '',
        topic VARCHAR(255) NOT NULL,
        kafka_partition INT NOT NULL,
        kafka_offset BIGINT NOT NULL,
        PRIMARY KEY (task_id, attempt, kind),
        KEY by_time (occurred_at)
    ) ENGINE=InnoDB""",
    """CREATE TABLE IF NOT EXISTS task_stats (
        window_start DATETIME(6) NOT NULL,
        window_end DATETIME(6) NOT NULL,
        task_type VARCHAR(128) NOT NULL,
        pending BIGINT NOT NULL,
        started BIGINT NOT NULL,
        completed BIGINT NOT NULL,
        failed BIGINT NOT NULL,
        retried BIGINT NOT NULL,
        queue_wait_count BIGINT NOT NULL,
        queue_wait_mean_ms DOUBLE NOT NULL,
        queue_wait_max_ms DOUBLE NOT NULL,
        queue_wait_p50_ms DOUBLE NOT NULL,
        queue_wait_p95_ms DOUBLE NOT NULL,
        run_time_count BIGINT NOT NULL,
        run_time_mean_ms DOUBLE NOT NULL,
        run_time_max_ms DOUBLE NOT NULL,
        updated_at DATETIME(6) NOT NULL,
        PRIMARY KEY (window_start, task_type),
        KEY by_type (task_type, window_start)
    ) ENGINE=InnoDB""",
    """CREATE TABLE IF NOT EXISTS worker_stats (
        window_start DATETIME(6) NOT NULL,
        window_end DATETIME(6) NOT NULL,
        worker_id VARCHAR(255) NOT NULL,
        completed BIGINT NOT NULL,
        busy_ms DOUBLE NOT NULL,
        updated_at DATETIME(6) NOT NULL,
        PRIMARY KEY (window_start, worker_id)
    ) ENGINE=InnoDB""",
    """CREATE TABLE IF NOT EXISTS rejected_records (
        topic VARCHAR(255) NOT NULL,
        kafka_partition INT NOT NULL,
        kafka_offset BIGINT NOT NULL,
        reason VARCHAR(16) NOT NULL,
        detail VARCHAR(255) NOT NULL,
        recorded_at DATETIME(6) NOT NULL,
        PRIMARY KEY (topic, kafka_partition, kafka_offset),
        KEY by_time (recorded_at)
    ) ENGINE=InnoDB""",
    """CREATE TABLE IF NOT EXISTS job_progress (
        job VARCHAR(64) NOT NULL PRIMARY KEY,
        query_id VARCHAR(64) NOT NULL DEFAULT '',
        last_batch_id BIGINT NOT NULL DEFAULT -1,
        last_batch_at DATETIME(6) NULL,
        max_event_time DATETIME(6) NULL,
        watermark DATETIME(6) NULL,
        pruned_before DATETIME(6) NULL,
        events BIGINT NOT NULL DEFAULT 0,
        malformed BIGINT NOT NULL DEFAULT 0,
        late BIGINT NOT NULL DEFAULT 0,
        offsets TEXT NOT NULL
    ) ENGINE=InnoDB""",
]
"""Schema versions 1..n, applied in order by ``MySQL.ensure_schema``."""
