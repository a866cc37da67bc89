"""The analytics job (SPEC §3 "Life-cycle log and analytics").

A Spark Structured Streaming job reads the task life-cycle topics with
Spark's own Kafka source (``spark-sql-kafka-0-10``; Kafka offsets kept in
Spark's checkpoint) and stores, per micro-batch and in one MySQL transaction, the events and the
per-window statistics they imply; ``GetStats`` reads the tables back.
Run it with ``python -m gridmesh.analytics`` (``gridmesh up`` does).

Importing this package does not import pyspark; the Spark parts load when the
job runs.
"""

from gridmesh.analytics._decode import Record, decode
from gridmesh.analytics._sink import BatchOutcome, LifecycleSink, SinkSettings
from gridmesh.analytics.status import JobStatus, read_status, status_path
from gridmesh.analytics.tables import MIGRATIONS

__all__ = [
    "MIGRATIONS",
    "BatchOutcome",
    "JobStatus",
    "LifecycleSink",
    "Record",
    "SinkSettings",
    "decode",
    "read_status",
    "status_path",
]
