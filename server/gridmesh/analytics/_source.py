"""The life-cycle topics as a Spark streaming source (Python Data Source API).

pyspark 4 ships no Kafka connector, so this source reads Kafka itself with
confluent-kafka (:mod:`gridmesh.analytics._kafka`). Its offsets are the Kafka
offsets of every topic-partition (``{"<topic>/<partition>": next offset}``);
Spark keeps them in its checkpoint, and nothing is committed to Kafka, so a
micro-batch is read again exactly after a restart. Each partition with new
records is one Spark task; each record becomes one row of
:data:`~gridmesh.analytics._decode.SCHEMA` (malformed ones too, flagged).

Options: ``bootstrap_servers``, ``topics`` (comma-separated),
``max_records_per_batch``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any

from pyspark.sql.datasource import DataSource, DataSourceStreamReader, InputPartition
from pyspark.sql.streaming.datasource import ReadAllAvailable, ReadLimit, ReadMaxRows
from pyspark.sql.types import StructType

from gridmesh.analytics._decode import SCHEMA, decode
from gridmesh.analytics._kafka import KafkaLog, KafkaRange, Offsets, limit_offsets, plan_ranges
from gridmesh.core.errors import Unavailable

__all__ = ["SOURCE_NAME", "LifecycleSource"]

SOURCE_NAME = "gridmesh-lifecycle"
KAFKA_WARNING_INTERVAL_S = 60.0
"""How often an unreachable Kafka is logged."""

log = logging.getLogger(__name__)


class _Partition(InputPartition):
    def __init__(self, part: KafkaRange) -> None:
        super().__init__(part)
        self.part = part


class LifecycleStreamReader(DataSourceStreamReader):
    def __init__(self, options: dict[str, str]) -> None:
        self._bootstrap = options["bootstrap_servers"]
        self._topics = [t for t in options["topics"].split(",") if t]
        self._max_records = int(options.get("max_records_per_batch", "0")) or None
        self._log: KafkaLog | None = None
        self._latest: Offsets | None = None
        self._warned_at = -KAFKA_WARNING_INTERVAL_S

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_log"] = None  # a Kafka client is not sent to the executors
        return state

    def _kafka(self) -> KafkaLog:
        if self._log is None:
            self._log = KafkaLog(self._bootstrap, self._topics)
        return self._log

    def initialOffset(self) -> dict[str, int]:
        return {}  # every partition from its beginning

    def getDefaultReadLimit(self) -> ReadLimit:
        return ReadAllAvailable() if self._max_records is None else ReadMaxRows(self._max_records)

    def latestOffset(self, start: dict[str, int], limit: ReadLimit) -> dict[str, int]:
        try:
            latest = self._kafka().latest(start)
        except Unavailable as e:
            # No new micro-batch while Kafka is away; the query keeps running.
            now = time.monotonic()
            if now - self._warned_at > KAFKA_WARNING_INTERVAL_S:
                log.warning("no new micro-batch: %s", e.message)
                self._warned_at = now
            self.stop()
            return dict(start)
        self._latest = latest
        return limit_offsets(start, latest, limit.max_rows if isinstance(limit, ReadMaxRows) else None)

    def reportLatestOffset(self) -> dict[str, int] | None:
        return self._latest

    def partitions(self, start: dict[str, int], end: dict[str, int]) -> Sequence[InputPartition]:
        return [_Partition(part) for part in plan_ranges(start, end)]

    def read(self, partition: InputPartition) -> Iterator[tuple[Any, ...]]:
        part: KafkaRange = partition.part  # type: ignore[attr-defined]
        kafka = KafkaLog(self._bootstrap, self._topics)
        try:
            for raw in kafka.read(part):
                yield tuple(decode(raw.topic, raw.partition, raw.offset, raw.value, raw.timestamp_ms))
        finally:
            kafka.close()

    def commit(self, end: dict[str, int]) -> None:
        """Nothing to do: the offsets live in Spark's checkpoint only."""

    def stop(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


class LifecycleSource(DataSource):
    """``spark.readStream.format("gridmesh-lifecycle")``."""

    @classmethod
    def name(cls) -> str:
        return SOURCE_NAME

    def schema(self) -> str:
        return SCHEMA

    def streamReader(self, schema: StructType) -> DataSourceStreamReader:
        return LifecycleStreamReader(dict(self.options))
