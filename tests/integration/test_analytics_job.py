"""SPEC §3 "Life-cycle log and analytics", end to end below the services:
life-cycle events produced to the Kafka topics (by the mesh's own producer)
are read by the real Spark job (``python -m gridmesh.analytics``, local
master) and stored in real MariaDB; a malformed record is counted and
skipped; ``kill -9`` of the whole job mid-stream and a restart from its
checkpoint, and ``kill -9`` of the broker mid-stream and its restart, leave
counts exactly equal to what was produced.

The module runs its own Apache Kafka broker, namespace and state
directory, so stopping things disturbs no other test.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import pymysql
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from gridmesh.adapters import kafka as kafka_adapter
from gridmesh.adapters.kafka import KafkaLifecycleLog
from gridmesh.adapters.mysql import MySQL
from gridmesh.analytics import status as analytics_status
from gridmesh.analytics.app import topics
from gridmesh.cli import backing, mesh, procs
from gridmesh.config import MeshConfig, load_config
from gridmesh.core.access import PeerRole
from gridmesh.core.lifecycle import LifecycleEvent, LifecycleKind
from tests.conftest import free_port, mesh_env, provision_mysql
from tests.helpers import wait_for

log = logging.getLogger("tests.analytics")

JOB_START_TIMEOUT_S = 150
K = LifecycleKind


@dataclass
class Rig:
    config: MeshConfig
    env: dict[str, str]

    @property
    def runs(self) -> Path:
        return mesh.run_dir(self.config)

    def start_job(self) -> None:
        spec = procs.ProcessSpec("analytics", [sys.executable, "-m", "gridmesh.analytics"], env=self.env)
        procs.start(spec, self.runs, mesh.log_dir(self.config))
        procs.wait_until(
            lambda: mesh.analytics_health(self.config) == "healthy",
            JOB_START_TIMEOUT_S,
            "the analytics job",
            mesh.log_dir(self.config) / "analytics.log",
        )

    def job_tree(self) -> list[psutil.Process]:
        pid = procs.alive("analytics", self.runs)
        assert pid, "the analytics job is not running"
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]

    def kill_job(self) -> None:
        """kill -9 of every process of the job at once: driver, JVM, Python workers."""
        tree = self.job_tree()
        for proc in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(signal.SIGKILL)
        psutil.wait_procs(tree, timeout=10)
        assert procs.alive("analytics", self.runs) is None

    def db(self) -> pymysql.Connection[Any]:
        login = self.config.mysql_login("analytics")
        return pymysql.connect(**dataclasses.asdict(login), database=self.config.database("analytics"), autocommit=True)


def query(rig: Rig, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with rig.db() as conn, conn.cursor() as cur:
        cur.execute(sql, args)
        return list(cur.fetchall())


def totals(rig: Rig, task_type: str) -> tuple[int, ...]:
    """pending, started, completed, failed, retried, queue waits, run times over every window."""
    (row,) = query(
        rig,
        "SELECT COALESCE(SUM(pending), 0), COALESCE(SUM(started), 0), COALESCE(SUM(completed), 0), "
        "COALESCE(SUM(failed), 0), COALESCE(SUM(retried), 0), COALESCE(SUM(queue_wait_count), 0), "
        "COALESCE(SUM(run_time_count), 0) FROM task_stats WHERE task_type = %s",
        task_type,
    )
    return tuple(int(v) for v in row)


def progress(rig: Rig) -> dict[str, Any]:
    rows = query(rig, "SELECT last_batch_id, events, malformed, late FROM job_progress")
    if not rows:
        return {"last_batch_id": -1, "events": 0, "malformed": 0, "late": 0}
    return dict(zip(("last_batch_id", "events", "malformed", "late"), rows[0], strict=True))


def job_memory_mb(rig: Rig) -> tuple[float, float]:
    """RSS and PSS (shared pages split) of every process of the job, in MB."""
    rss = pss = 0
    for proc in rig.job_tree():
        try:
            info = proc.memory_full_info()
        except psutil.Error:
            continue
        rss += info.rss
        pss += info.pss
    return rss / 2**20, pss / 2**20


@pytest.fixture(scope="module")
def rig(backing_services: MeshConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    env = mesh_env(
        tmp_path_factory.mktemp("analytics"),
        GRIDMESH_KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}",
        GRIDMESH_ANALYTICS_TRIGGER_INTERVAL_S="0.5",
        GRIDMESH_ANALYTICS_MAX_BATCH_MESSAGES="900",  # a backlog takes several micro-batches
    )
    config = load_config(env)
    provision_mysql(config)
    rig = Rig(config, env)
    try:
        backing.ensure_spark_kafka(config, lambda *_: None)
        kafka = backing.Kafka.from_config(config)
        procs.start(kafka.spec(config), rig.runs, mesh.log_dir(config))
        procs.wait_until(kafka.probe, 30, "kafka")
        admin = AdminClient(kafka_adapter.client_settings(config, PeerRole.ADMIN))
        created = admin.create_topics([NewTopic(t, num_partitions=2, replication_factor=1) for t in topics(config)])
        for future in created.values():
            future.result(timeout=30)
        rig.start_job()
        yield rig
    finally:
        for name in reversed(procs.recorded(rig.runs)):
            procs.stop(name, rig.runs)
        MySQL(config.mysql_login("analytics"), config.database("analytics")).drop_database()


class Emitter:
    """Produces life-cycle events the way the Scheduler and workers do."""

    def __init__(self, config: MeshConfig, task_type: str, t0: datetime) -> None:
        self.log = KafkaLifecycleLog(
            config.kafka, kafka_adapter.client_settings(config, PeerRole.ADMIN), lambda kind: config.topic(kind.value)
        )
        self.task_type = task_type
        self.t0 = t0

    def emit(self, task_id: str, kind: LifecycleKind, ms: float, attempt: int = 1, worker: str = "w1") -> None:
        at = self.t0 + timedelta(milliseconds=ms)
        self.log.emit(LifecycleEvent(kind, task_id, self.task_type, worker, attempt, 2, at))

    def task(self, start_ms: float, wait_ms: float, run_ms: float, end: LifecycleKind = K.COMPLETED) -> None:
        task_id = str(uuid.uuid4())
        self.emit(task_id, K.PENDING, start_ms)
        self.emit(task_id, K.STARTED, start_ms + wait_ms)
        self.emit(task_id, end, start_ms + wait_ms + run_ms)

    def flush(self) -> None:
        self.log.close(timeout=30)
        assert self.log.delivered == self.log.produced, "the broker did not take every event"

    def stream(self, tasks: int, done: threading.Event) -> threading.Thread:
        """Emit ``tasks`` tasks at ~500 tasks/s (so the stream spans several
        micro-batches) on a thread of its own; ``done`` is set after the last."""

        def produce() -> None:
            for i in range(tasks):
                self.task(i, wait_ms=3, run_ms=5)
                if i % 10 == 9:
                    time.sleep(0.02)
            done.set()

        thread = threading.Thread(target=produce, daemon=True)
        thread.start()
        return thread


def test_produced_life_cycle_events_are_counted_exactly_and_a_malformed_record_is_skipped(rig):
    t0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=3)
    before = progress(rig)
    emitter = Emitter(rig.config, "it-exact", t0)
    for i in range(10):
        emitter.task(i * 1000, wait_ms=100 + i, run_ms=500)  # waits 100..109, runs 500
    emitter.task(20_000, wait_ms=50, run_ms=250, end=K.FAILED)
    task_id = str(uuid.uuid4())  # a task whose first attempt died and was retried
    emitter.emit(task_id, K.PENDING, 30_000)
    emitter.emit(task_id, K.STARTED, 30_010)
    emitter.emit(task_id, K.RETRIED, 30_510)
    emitter.emit(task_id, K.STARTED, 30_530, attempt=2, worker="w2")
    emitter.emit(task_id, K.COMPLETED, 31_530, attempt=2, worker="w2")
    garbage = Producer(kafka_adapter.client_settings(rig.config, PeerRole.ADMIN))
    garbage.produce(rig.config.topic("task.started"), key=b"x", value=b"\x00\x01not a protobuf")
    garbage.produce(rig.config.topic("task.completed"), key=b"y", value=b'{"task_id": "foreign"}')
    assert garbage.flush(30) == 0
    del garbage  # its client thread goes with it
    emitter.flush()
    produced_at = time.monotonic()

    expected = (12, 13, 11, 1, 1, 13, 11)  # pending, started, completed, failed, retried, waits, runs
    wait_for("the events in MySQL", lambda: totals(rig, "it-exact") == expected, timeout=60, interval=0.02)
    delay = time.monotonic() - produced_at
    log.warning("end-to-end delay, event produced -> in the stats tables: %.2f s", delay)
    after = wait_for("the malformed records counted", lambda: (p := progress(rig))["malformed"] >= 2 and p)
    assert after["malformed"] - before["malformed"] == 2
    assert after["events"] - before["events"] == 38
    rejected = query(rig, "SELECT reason, detail FROM rejected_records WHERE reason = 'malformed'")
    assert len(rejected) == 2 and all("TaskLifecycleEvent" in d or "event_type" in d for _, d in rejected), rejected
    ((wait_mean, wait_max, run_mean, run_max),) = query(
        rig,
        "SELECT queue_wait_mean_ms, queue_wait_max_ms, run_time_mean_ms, run_time_max_ms FROM task_stats "
        "WHERE task_type = 'it-exact' AND window_start = %s",
        t0.replace(tzinfo=None),
    )
    # waits: 100..109, 50, 10 and 20 (retry -> second start); runs: ten of 500 and one of 1000
    assert (wait_mean, wait_max) == (pytest.approx((sum(range(100, 110)) + 50 + 10 + 20) / 13), 109.0)
    assert (run_mean, run_max) == (pytest.approx(6000 / 11), 1000.0)
    window = t0.replace(tzinfo=None)
    assert query(rig, "SELECT worker_id, completed FROM worker_stats WHERE window_start = %s ORDER BY 1", window) == [
        ("w1", 10),
        ("w2", 1),
    ]


def _batches(checkpoint: Path, log: str) -> list[int]:
    folder = checkpoint / log
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []


def _in_flight(checkpoint: Path) -> int | None:
    """A micro-batch Spark has planned (offsets written) but not finished (no commit)."""
    planned, committed = _batches(checkpoint, "offsets"), _batches(checkpoint, "commits")
    return planned[-1] if planned and (not committed or planned[-1] > committed[-1]) else None


def test_kill_9_of_the_job_mid_stream_and_a_restart_from_its_checkpoint_count_exactly(rig):
    """Two crashes: one while a micro-batch is read but not yet in MySQL (its
    replay must store it: no loss), one after the batch is in MySQL but before
    Spark recorded it as done (its replay must change nothing: no double count).
    The second needs the kill to land in a gap of a few milliseconds; the
    test tries every batch of the stream and says if it never managed."""
    tasks = 2000
    emitter = Emitter(rig.config, "it-kill", datetime.now(UTC))
    done = threading.Event()

    checkpoint = rig.config.analytics_checkpoint
    kills = []

    def kill_when(case: str, condition: Any, timeout: float) -> bool:
        """kill -9 as soon as a batch in flight meets ``condition``; whether
        the batch was still in flight when the job died."""

        def ready() -> int | None:
            batch = _in_flight(checkpoint)
            return batch if batch is not None and condition(batch, progress(rig)["last_batch_id"]) else None

        victim = wait_for(f"a micro-batch {case}", ready, timeout=timeout, interval=0.002)
        rig.kill_job()
        stored = progress(rig)["last_batch_id"]
        hit = _in_flight(checkpoint) == victim
        kills.append((case, victim, stored, totals(rig, "it-kill")[2], hit))
        log.warning("kill -9 %s: batch %d; MySQL at %d; still in flight: %s", case, victim, stored, hit)
        return hit

    producer = emitter.stream(tasks, done)
    wait_for("the stream to reach MySQL", lambda: totals(rig, "it-kill")[0] > 0, timeout=60, interval=0.01)
    log.warning("memory of the job (every process): RSS %.0f MB, PSS %.0f MB", *job_memory_mb(rig))
    assert kill_when("read but not stored", lambda batch, stored: batch > stored, timeout=30)
    assert kills[0][2] < kills[0][1]  # MySQL had not stored the batch: its replay must
    assert kills[0][3] < tasks, "the stream ended before the kill; produce more or slower"

    rig.start_job()  # from the checkpoint: the killed batch runs again first
    for _ in range(3):
        if kill_when("stored but not committed by Spark", lambda batch, stored: batch == stored, timeout=30):
            assert kills[-1][2] == kills[-1][1]  # its replay must change nothing
            rig.start_job()
            break
        rig.start_job()  # Spark won the race: the kill came after its commit
    else:
        log.warning("the kill never landed between a MySQL commit and Spark's; test_analytics_sink covers that")
    producer.join(timeout=60)
    assert done.is_set()
    emitter.flush()  # every event acknowledged by the broker

    expected = (tasks, tasks, tasks, 0, 0, tasks, tasks)
    wait_for("every event counted once", lambda: totals(rig, "it-kill") == expected, timeout=90, interval=0.05)
    assert all(victim in _batches(checkpoint, "commits") for _, victim, *_ in kills)
    (stored,) = query(rig, "SELECT COUNT(*) FROM lifecycle_events WHERE task_type = 'it-kill'")
    assert stored == (3 * tasks,)
    # Once the job has caught up with the topics, the figures are still exact.
    status = analytics_status.status_path(rig.config)
    wait_for("the job to catch up", lambda: (s := analytics_status.read_status(status)) and s.lag_records == 0)
    assert totals(rig, "it-kill") == expected


def test_a_broker_killed_and_restarted_mid_stream_loses_no_event_and_counts_exactly(rig):
    """kill -9 of the Apache Kafka broker while events flow and the job reads:
    the producer holds what the broker has not acknowledged, the broker keeps
    what it has (its log is on disk), and Spark's Kafka source reads on from
    its checkpoint once the broker is back."""
    tasks = 1500
    emitter = Emitter(rig.config, "it-broker", datetime.now(UTC))
    produced = threading.Event()
    producer = emitter.stream(tasks, produced)
    wait_for("the stream to reach MySQL", lambda: totals(rig, "it-broker")[0] > 0, timeout=60, interval=0.01)
    broker = procs.alive("kafka", rig.runs)
    assert broker is not None
    os.kill(broker, signal.SIGKILL)
    wait_for("the broker to die", lambda: procs.alive("kafka", rig.runs) is None)
    assert totals(rig, "it-broker")[2] < tasks, "the stream ended before the kill; produce more or slower"
    kafka = backing.Kafka.from_config(rig.config)
    procs.start(kafka.spec(rig.config), rig.runs, mesh.log_dir(rig.config))
    procs.wait_until(kafka.probe, 60, "kafka")

    producer.join(timeout=120)
    assert produced.is_set()
    emitter.flush()  # every event acknowledged by the broker
    expected = (tasks, tasks, tasks, 0, 0, tasks, tasks)
    wait_for("every event counted once", lambda: totals(rig, "it-broker") == expected, timeout=120, interval=0.05)
    (stored,) = query(rig, "SELECT COUNT(*) FROM lifecycle_events WHERE task_type = 'it-broker'")
    assert stored == (3 * tasks,)
