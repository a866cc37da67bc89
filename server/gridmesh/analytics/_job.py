"""The Spark Structured Streaming query and its supervision.

One query: the life-cycle topics, read by Spark's own Kafka source
(``spark-sql-kafka-0-10``, its jars on ``spark.jars``) → ``foreachBatch`` →
:class:`LifecycleSink`, triggered every ``trigger_interval_s``. The Kafka
offsets live in the checkpoint (``checkpoint``); nothing is committed to
Kafka, so after a restart the job reads on exactly where its last stored
micro-batch ended. When the query fails (Kafka or MySQL
unreachable for longer than the adapters retry) it is started again from
its checkpoint after a backoff; after :data:`MAX_CONSECUTIVE_FAILURES`
failures without a stored batch in between the job gives up (exit 1).

Threads: pyspark's py4j callback thread runs ``foreachBatch`` (and so the
blocking sink); the main thread supervises the query and rewrites the
status file every second.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pyspark import SparkConf, SparkContext
from pyspark.java_gateway import launch_gateway
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery

from gridmesh.analytics._decode import decode
from gridmesh.analytics._sink import LifecycleSink
from gridmesh.analytics.status import JobStatus, write_status
from gridmesh.common.backoff import Backoff
from gridmesh.observability import metrics

__all__ = ["AnalyticsJob", "JobSettings"]

log = logging.getLogger(__name__)

STATUS_INTERVAL_S = 1
END_OFFSETS_EVERY_S = 5.0
"""How often the status asks Kafka where the topics end."""
MAX_CONSECUTIVE_FAILURES = 10
RESTART = Backoff(initial_s=1.0, max_s=30.0)
"""The pauses before restarting a failed query from its checkpoint."""
SHUFFLE_PARTITIONS = 2


@dataclass(frozen=True)
class JobSettings:
    bootstrap_servers: str
    topics: list[str]
    checkpoint: Path
    scratch: Path
    """Spark's local directory (shuffle files, warehouse)."""
    status_path: Path
    master: str = "local[1]"
    driver_memory: str = "512m"
    trigger_interval_s: float = 2.0
    max_batch_messages: int = 50_000
    app_name: str = "gridmesh-analytics"
    jars: tuple[Path, ...] = ()
    """Jars for Spark's classpath: the Kafka source and what it needs."""
    spark_conf: Mapping[str, str] = field(default_factory=dict)
    """Extra Spark settings (``spark.*``)."""
    kafka_options: Mapping[str, str] = field(default_factory=dict)
    """More options of the Kafka source (``kafka.*``: its TLS)."""
    stall_after_s: float = 300.0
    """Records waiting and no micro-batch stored for this long: stalled."""


def build_session(settings: JobSettings) -> SparkSession:
    """A Spark session whose JVM runs in a session of its own: SIGTERM to
    the job's process group reaches only this driver, which stops the query
    and then Spark in order. (The JVM still dies with the driver: it exits
    when its stdin, a pipe from the driver, closes.)"""
    conf = SparkConf().setAppName(settings.app_name).setMaster(settings.master)
    values = {
        "spark.driver.memory": settings.driver_memory,
        "spark.sql.shuffle.partitions": str(SHUFFLE_PARTITIONS),
        "spark.sql.session.timeZone": "UTC",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.local.dir": str(settings.scratch / "tmp"),
        "spark.sql.warehouse.dir": str(settings.scratch / "warehouse"),
        "spark.python.worker.reuse": "true",
        "spark.sql.streaming.metricsEnabled": "false",
        "spark.jars": ",".join(str(jar) for jar in settings.jars),
    }
    if settings.master.startswith("local"):
        values |= {"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1"}
    values |= dict(settings.spark_conf)
    conf.setAll(list(values.items()))
    gateway = launch_gateway(conf, popen_kwargs={"start_new_session": True})
    context = SparkContext(conf=conf, gateway=gateway)
    context.setLogLevel("WARN")
    return SparkSession(context)


class AnalyticsJob:
    def __init__(
        self, settings: JobSettings, sink: LifecycleSink, end_offsets: Callable[[], dict[str, int] | None] | None = None
    ) -> None:
        """``end_offsets``: the topics' current ends (``{"topic/partition": end}``),
        to tell how far behind the job is even while no batch completes."""
        self._settings = settings
        self._sink = sink
        self._end_offsets = end_offsets
        self._lock = threading.Lock()
        self._batches = 0
        self._last_batch: tuple[int, str, int] = (-1, "", 0)
        self._progressed_at = time.monotonic()
        """When a batch was last stored, records began to wait, or the job
        started (monotonic)."""
        self._waiting = False
        self._ends: tuple[float, dict[str, int] | None] = (-END_OFFSETS_EVERY_S, None)
        self._query_id = ""
        self._error = ""
        self._started_at = _now()

    # -- foreachBatch ---------------------------------------------------------------------

    def _query_id_of_checkpoint(self) -> str:
        """The query's id, which survives restarts from the same checkpoint."""
        if not self._query_id:
            metadata = json.loads((self._settings.checkpoint / "metadata").read_text())
            self._query_id = str(metadata["id"])
        return self._query_id

    def store_batch(self, df: DataFrame, batch_id: int) -> None:
        started = time.perf_counter()
        rows = df.selectExpr("topic", "partition", "offset", "value", "unix_millis(timestamp) AS ms").collect()
        records = [
            decode(r.topic, r.partition, r.offset, None if r.value is None else bytes(r.value), r.ms) for r in rows
        ]
        if not records:
            return
        read = time.perf_counter()
        outcome = self._sink.apply(records, batch_id, self._query_id_of_checkpoint())
        metrics.ANALYTICS_BATCH.observe(time.perf_counter() - started)
        for what, count in (
            ("stored", outcome.stored),
            ("duplicate", outcome.duplicates),
            ("malformed", outcome.malformed),
            ("late", outcome.late),
        ):
            metrics.ANALYTICS_RECORDS.labels(what).inc(count)
        log.info(
            "batch %d: %d records (read in %.2f s), %d events stored, %d duplicates, %d malformed, %d late, "
            "%d windows (stored in %.2f s)%s",
            batch_id,
            outcome.records,
            read - started,
            outcome.stored,
            outcome.duplicates,
            outcome.malformed,
            outcome.late,
            outcome.windows,
            time.perf_counter() - read,
            " (stored before: skipped)" if outcome.skipped else "",
        )
        with self._lock:
            self._batches += 1
            self._last_batch = (batch_id, _now(), len(records))
            self._progressed_at = time.monotonic()
        metrics.ANALYTICS_BATCHES.inc()
        metrics.ANALYTICS_LAST_BATCH.set(time.time())

    def _lag(self, progress: Mapping[str, Any] | None) -> int | None:
        """The lag, from the topics' ends read at most every few seconds."""
        read_at, ends = self._ends
        if self._end_offsets is not None and time.monotonic() - read_at >= END_OFFSETS_EVERY_S:
            ends = self._end_offsets()
            self._ends = (time.monotonic(), ends)
        return _lag(progress, ends)

    # -- supervision ----------------------------------------------------------------------

    def start_query(self, spark: SparkSession) -> StreamingQuery:
        s = self._settings
        stream = (
            spark.readStream.format("kafka")
            .option("kafka.bootstrap.servers", s.bootstrap_servers)
            .option("subscribe", ",".join(s.topics))
            .option("startingOffsets", "earliest")
            .option("maxOffsetsPerTrigger", str(s.max_batch_messages))
            .options(**s.kafka_options)
            .load()
        )
        return (
            stream.writeStream.queryName("lifecycle")
            .foreachBatch(self.store_batch)
            .option("checkpointLocation", str(s.checkpoint))
            .trigger(processingTime=f"{s.trigger_interval_s} seconds")
            .start()
        )

    def run(self, stop: threading.Event) -> int:
        """Run until ``stop`` is set (exit code 0) or the query keeps failing (1)."""
        s = self._settings
        self._write("starting")
        spark = build_session(s)
        failures = 0
        try:
            while not stop.is_set():
                batches_before = self._batches
                query = self.start_query(spark)
                self._query_id = str(query.id)
                log.info("streaming query %s started (checkpoint %s)", query.id, s.checkpoint)
                while query.isActive and not stop.is_set():
                    query.awaitTermination(STATUS_INTERVAL_S)
                    self._write("running", query)
                if stop.is_set():
                    _quietly(query.stop)
                    break
                error = query.exception()
                self._error = str(error).splitlines()[0] if error else "the query stopped"
                log.error("streaming query failed: %s", error)
                failures = 1 if self._batches > batches_before else failures + 1
                if failures >= MAX_CONSECUTIVE_FAILURES:
                    self._write("failed")
                    return 1
                pause = RESTART.pause_s(failures - 1)
                log.warning("restarting the query from its checkpoint in %.1f s (failure %d)", pause, failures)
                self._write("restarting")
                stop.wait(pause)
            return 0
        finally:
            self._write("stopped")
            _quietly(spark.stop)

    def _write(self, state: str, query: StreamingQuery | None = None) -> None:
        with self._lock:
            batch_id, batch_at, records = self._last_batch
            batches = self._batches
        lag = self._lag(query.lastProgress if query is not None else None)
        with self._lock:
            if bool(lag) and not self._waiting:  # records begin to wait now (after an idle spell, say)
                self._progressed_at = time.monotonic()
            self._waiting = bool(lag)
            idle_s = time.monotonic() - self._progressed_at
        stalled = state == "running" and bool(lag) and idle_s >= self._settings.stall_after_s
        metrics.ANALYTICS_LAG.set(lag or 0)
        metrics.ANALYTICS_STALLED.set(1 if stalled else 0)
        status = JobStatus(
            state=state,
            pid=os.getpid(),
            master=self._settings.master,
            updated_at=_now(),
            query_id=self._query_id,
            batches=batches,
            last_batch_id=batch_id,
            last_batch_at=batch_at,
            last_batch_records=records,
            lag_records=lag,
            stalled_s=round(idle_s, 1) if stalled else 0.0,
            error=self._error,
        )
        try:
            write_status(self._settings.status_path, status)
        except OSError as e:
            log.warning("cannot write %s: %s", self._settings.status_path, e)


def _lag(progress: Mapping[str, Any] | None, ends: Mapping[str, int] | None = None) -> int | None:
    """Records between what the last micro-batch read and the topics' ends:
    ``ends`` as Kafka tells them now, else as Spark saw them at that batch."""
    if not progress or not progress.get("sources"):
        return None
    source = progress["sources"][0]
    latest, end = ends or _offsets(source.get("latestOffset")), _offsets(source.get("endOffset"))
    if latest is None or end is None:
        return None
    return sum(max(0, high - end.get(key, 0)) for key, high in latest.items())


def _offsets(value: Any) -> dict[str, int] | None:
    """Spark's Kafka offsets (``{"topic": {"partition": offset}}``) as
    ``{"topic/partition": offset}``."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if not isinstance(value, dict):
        return None
    return {
        f"{topic}/{partition}": int(offset)
        for topic, partitions in value.items()
        if isinstance(partitions, dict)
        for partition, offset in partitions.items()
        if isinstance(offset, int)
    }


def _quietly(action: Any) -> None:
    try:
        action()
    except Exception as e:  # the JVM may already be gone (SIGTERM reaches the whole process group)
        log.debug("ignored during shutdown: %s", e)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
