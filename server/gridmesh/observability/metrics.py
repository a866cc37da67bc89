"""The mesh's own Prometheus metrics (beside the gRPC ones of
:mod:`gridmesh.grpc_support.metrics`): what they are called, measured in
base units, with bounded labels only (a task type, an event kind, an
outcome; never a task id).

The metrics are created unregistered; each composition root exports those
of its process (:func:`serve`) and wires them: the Scheduler's life-cycle log
is wrapped in :class:`MeteredLifecycleLog`, its gauges read the leading
core at scrape time; a worker node and the StoreKeeper observe their own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from gridmesh.core.lifecycle import LifecycleEvent, LifecycleKind, LifecycleLog

LATENCY_BUCKETS_S = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
)  # fmt: skip
"""From the ~1 ms a result takes to store to the hour a long task runs (W2's
whole submit→notice is ~8 ms)."""

# -- the Scheduler ---------------------------------------------------------------------

LIFECYCLE_EVENTS = Counter(
    "gridmesh_task_events_total",
    "Task life-cycle events, by kind (pending = submitted, started, completed = succeeded, failed, retried) "
    "and task type. The Scheduler counts all but started, worker nodes count started.",
    ("kind", "task_type"),
    registry=None,
)
CANCELLED = Counter("gridmesh_tasks_cancelled_total", "Tasks cancelled by a client.", ("task_type",), registry=None)
LEASE_EXPIRIES = Counter(
    "gridmesh_lease_expiries_total",
    "Leases not renewed in time (the task was retried or failed).",
    registry=None,
)
QUEUED = Gauge("gridmesh_queue_tasks", "Tasks QUEUED in the leading Scheduler (0 on a standby).", registry=None)
OLDEST_QUEUED_AGE = Gauge(
    "gridmesh_queue_oldest_age_seconds",
    "How long the longest-waiting queued task has waited (0 if none).",
    registry=None,
)
LEADER = Gauge("gridmesh_scheduler_leader", "1 while this Scheduler leads, 0 while it stands by.", registry=None)
WATCHERS = Gauge("gridmesh_watchers", "Open WatchTask/WatchTasks streams on this Scheduler.", registry=None)


class QueueByKind:
    """``gridmesh_queue_depth`` and ``gridmesh_queue_depth_oldest_age_seconds``
    by ``priority`` and ``task_type``, read from the leading core at each
    scrape (no series while nothing is queued, or on a standby)."""

    def __init__(self, read: Callable[[], Mapping[tuple[str, str], tuple[int, datetime]]]) -> None:
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily(
            "gridmesh_queue_depth", "Tasks QUEUED in the leading Scheduler.", labels=("priority", "task_type")
        )
        age = GaugeMetricFamily(
            "gridmesh_queue_depth_oldest_age_seconds",
            "How long the longest-waiting queued task of this priority and type has waited.",
            labels=("priority", "task_type"),
        )
        now = datetime.now(UTC)
        try:
            kinds = self._read()
        except Exception:
            kinds = {}
        for (priority, task_type), (count, oldest) in sorted(kinds.items()):
            depth.add_metric((priority, task_type), count)
            age.add_metric((priority, task_type), max(0.0, (now - oldest).total_seconds()))
        yield depth
        yield age


class LifecycleProducer:
    """The life-cycle log's producer of this process: events waiting in its
    buffer for the broker, delivery failures and events dropped (buffer full)."""

    def __init__(self, read: Callable[[], tuple[int, int, int]]) -> None:
        """``read()`` → (buffered, failed, dropped)."""
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        buffered, failed, dropped = self._read()
        yield GaugeMetricFamily(
            "gridmesh_lifecycle_buffered_events", "Life-cycle events produced but not yet acknowledged.", buffered
        )
        yield CounterMetricFamily(
            "gridmesh_lifecycle_delivery_failures", "Life-cycle events the broker did not take.", failed
        )
        yield CounterMetricFamily(
            "gridmesh_lifecycle_dropped_events", "Life-cycle events dropped: the local buffer was full.", dropped
        )


def register(collector: QueueByKind | LifecycleProducer) -> None:
    """Export ``collector`` from this process (once)."""
    with contextlib.suppress(ValueError):
        REGISTRY.register(collector)


# -- worker nodes -------------------------------------------------------------------------

SLOTS = Gauge("gridmesh_worker_slots", "Task processes of this node.", registry=None)
BUSY_SLOTS = Gauge("gridmesh_worker_busy_slots", "Slots running a task now.", registry=None)
HELD = Gauge("gridmesh_worker_held_tasks", "Prefetched tasks waiting here for a slot.", registry=None)
STALLED = Gauge(
    "gridmesh_worker_stalled",
    "1 while prefetched tasks have waited worker.stall_after_s for a slot with no task starting or finishing here.",
    registry=None,
)
TASKS_RUN = Counter(
    "gridmesh_worker_tasks_total",
    "Tasks this node ran, by type and outcome (succeeded, failed, crashed, cancelled, lost).",
    ("task_type", "outcome"),
    registry=None,
)
QUEUE_WAIT = Histogram(
    "gridmesh_task_queue_wait_seconds",
    "From submit to the start of the attempt, by task type.",
    ("task_type",),
    buckets=LATENCY_BUCKETS_S,
    registry=None,
)
RUN_TIME = Histogram(
    "gridmesh_task_run_seconds",
    "From the start of an attempt to its end on the node, by task type.",
    ("task_type",),
    buckets=LATENCY_BUCKETS_S,
    registry=None,
)

# -- the StoreKeeper ------------------------------------------------------------------------

RESULT_WRITE = Histogram(
    "gridmesh_result_write_seconds",
    "Writing one result file durably (temporary file, fsync, rename, directory fsync).",
    buckets=LATENCY_BUCKETS_S,
    registry=None,
)
RESULT_BYTES = Counter("gridmesh_result_bytes_total", "Bytes of results written.", registry=None)
RESULT_ERRORS = Counter(
    "gridmesh_result_errors_total", "Result stores that failed, by reason.", ("reason",), registry=None
)
STORAGE_FREE = Gauge(
    "gridmesh_storage_free_bytes", "Free bytes of the file system under the storage root.", registry=None
)


# -- the EventManager ------------------------------------------------------------------------

EVENTS_PUBLISHED = Counter(
    "gridmesh_events_published_total",
    "Entity events by publisher and outcome: routed (to at least one subscriber), unroutable (confirmed, "
    "no subscriber), refused (invalid), failed (not confirmed).",
    ("publisher", "outcome"),
    registry=None,
)
PUBLISH_CONFIRM = Histogram(
    "gridmesh_publish_confirm_seconds",
    "From a publish call's start to RabbitMQ's confirms of all its events.",
    buckets=LATENCY_BUCKETS_S,
    registry=None,
)
SUBSCRIBER_MESSAGES = Gauge(
    "gridmesh_subscriber_queue_messages", "Events waiting in a subscriber's queue.", ("subscriber",), registry=None
)
SUBSCRIBER_CONSUMERS = Gauge(
    "gridmesh_subscriber_consumers", "Consumers attached to a subscriber's queue.", ("subscriber",), registry=None
)
SUBSCRIBER_DEAD_LETTERS = Gauge(
    "gridmesh_subscriber_dead_letters",
    "Events in a subscriber's dead-letter queue (redelivered too often or refused).",
    ("subscriber",),
    registry=None,
)

SWEPT = Counter(
    "gridmesh_retention_deleted_total",
    "Finished tasks, and their results and result bytes, deleted by retention.",
    ("what",),
    registry=None,
)
# -- the analytics job ----------------------------------------------------------------------

ANALYTICS_BATCHES = Counter("gridmesh_analytics_batches_total", "Micro-batches stored.", registry=None)
ANALYTICS_RECORDS = Counter(
    "gridmesh_analytics_records_total",
    "Life-cycle records read, by what became of them.",
    ("outcome",),  # stored, duplicate, malformed, late
    registry=None,
)
ANALYTICS_BATCH = Histogram(
    "gridmesh_analytics_batch_seconds",
    "Time to read and store one micro-batch.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
    registry=None,
)
ANALYTICS_LAG = Gauge(
    "gridmesh_analytics_lag_records", "Records on the life-cycle topics past what the job has stored.", registry=None
)
ANALYTICS_LAST_BATCH = Gauge(
    "gridmesh_analytics_last_batch_timestamp_seconds",
    "When the job last stored a micro-batch (Unix time).",
    registry=None,
)
ANALYTICS_STALLED = Gauge(
    "gridmesh_analytics_stalled",
    "1 while records wait and no micro-batch was stored for analytics.stall_after_s.",
    registry=None,
)

SCHEDULER = (LIFECYCLE_EVENTS, CANCELLED, LEASE_EXPIRIES, QUEUED, OLDEST_QUEUED_AGE, LEADER, WATCHERS, SWEPT)
WORKER = (LIFECYCLE_EVENTS, SLOTS, BUSY_SLOTS, HELD, STALLED, TASKS_RUN, QUEUE_WAIT, RUN_TIME)
STOREKEEPER = (RESULT_WRITE, RESULT_BYTES, RESULT_ERRORS, STORAGE_FREE)
ANALYTICS = (
    ANALYTICS_BATCHES,
    ANALYTICS_RECORDS,
    ANALYTICS_BATCH,
    ANALYTICS_LAG,
    ANALYTICS_LAST_BATCH,
    ANALYTICS_STALLED,
)
EVENTMANAGER = (EVENTS_PUBLISHED, PUBLISH_CONFIRM, SUBSCRIBER_MESSAGES, SUBSCRIBER_CONSUMERS, SUBSCRIBER_DEAD_LETTERS)


def serve(metrics: tuple[Counter | Gauge | Histogram, ...]) -> None:
    """Export ``metrics`` from this process (each process exports only its
    own: a Scheduler's ``gridmesh_storage_free_bytes`` would be a 0 that
    ``min()`` in an alert picks up). Idempotent."""
    for metric in metrics:
        with contextlib.suppress(ValueError):  # registered already
            REGISTRY.register(metric)


class MeteredLifecycleLog:
    """A :class:`LifecycleLog` that counts what passes through it, but the
    kinds another process counts (``uncounted``)."""

    def __init__(self, inner: LifecycleLog, uncounted: frozenset[LifecycleKind] = frozenset()) -> None:
        self._inner = inner
        self._uncounted = uncounted

    def emit(self, event: LifecycleEvent) -> None:
        if event.kind not in self._uncounted:
            LIFECYCLE_EVENTS.labels(event.kind.name.lower(), event.task_type).inc()
        self._inner.emit(event)

    def acknowledged(self) -> int:
        return self._inner.acknowledged()

    def close(self) -> None:
        self._inner.close()


def gauge_from(gauge: Gauge, read: Callable[[], float]) -> None:
    """``gauge`` is ``read()`` at each scrape (0 if it fails)."""

    def safe() -> float:
        try:
            return float(read())
        except Exception:
            return 0.0

    gauge.set_function(safe)
