"""SPEC §3 "Life-cycle log and analytics": how the analytics source decodes
records (malformed and foreign ones are flagged, never fatal), measures its
lag, fetches the Kafka source built for its Spark, reports its status, and how GetStats converts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from xml.etree import ElementTree

import pytest
from google.protobuf import timestamp_pb2

from gridmesh.analytics._decode import Record, decode, kind_of_topic, occurred_at
from gridmesh.analytics._job import _lag
from gridmesh.analytics.app import _artifact
from gridmesh.analytics.status import JobStatus, describe, health
from gridmesh.common.errors import InvalidArgument
from gridmesh.core.lifecycle import LifecycleKind
from gridmesh.core.stats import JobProgress, StatsReport, Summary, TaskWindowStats, Window
from gridmesh.jvm import SPARK_KAFKA
from gridmesh.scheduler.stats import query_from_proto, report_to_proto
from gridmesh.v1 import common_pb2, scheduler_pb2

AT = datetime(2026, 3, 1, 12, 0, 0, 123_456, tzinfo=UTC)
TOPIC = "ns.gridmesh.task.started"


def event(**fields: Any) -> bytes:
    values: dict[str, Any] = {
        "task_id": "3f2c0d1e-0000-4000-8000-000000000001",
        "task_type": "noop",
        "worker_id": "node-1",
        "attempt": 1,
        "priority": common_pb2.NORMAL,
        "event_type": common_pb2.TASK_STARTED,
    } | fields
    msg = common_pb2.TaskLifecycleEvent(**values)
    if "occurred_at" not in fields:
        msg.occurred_at.FromDatetime(AT)
    return msg.SerializeToString()


def test_a_lifecycle_event_decodes_into_one_row_with_its_fields():
    record = decode(TOPIC, 2, 41, event(), int(AT.timestamp() * 1000))
    assert record == Record(
        TOPIC, 2, 41, True, "", "3f2c0d1e-0000-4000-8000-000000000001", "noop", "node-1", 1, 2, "started",
        int((AT - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1)),
    )  # fmt: skip
    assert occurred_at(record) == AT


def test_topics_tell_the_event_kind_under_any_namespace():
    assert kind_of_topic("gridmesh.task.pending") is LifecycleKind.PENDING
    assert kind_of_topic("t1234.gridmesh.task.retried") is LifecycleKind.RETRIED
    assert kind_of_topic("gridmesh.task.pendingx") is None


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "empty value"),
        (b"", "empty value"),
        (b'{"task_id": "x"}', "not a TaskLifecycleEvent"),
        (b"\xff\xff\xff", "not a TaskLifecycleEvent"),
        (event(event_type=common_pb2.TASK_COMPLETED), "a completed event on the started topic"),
        (event(event_type=0), "not a life-cycle event type"),
        (event(task_id=""), "task_id"),
        (event(task_type=""), "task_type"),
        (event(attempt=0), "attempt 0"),
        (event(priority=9), "priority 9"),
        (event(occurred_at=timestamp_pb2.Timestamp(seconds=5)), "years 2000-2100"),
        (event(occurred_at=timestamp_pb2.Timestamp(seconds=10**12)), "years 2000-2100"),
    ],
)
def test_a_malformed_or_foreign_record_is_flagged_with_its_reason_not_raised(value, reason):
    record = decode(TOPIC, 0, 7, value, None)
    assert not record.valid
    assert reason in record.reason
    assert (record.topic, record.kafka_partition, record.kafka_offset) == (TOPIC, 0, 7)


def test_an_event_claiming_to_occur_long_after_kafka_received_it_is_flagged():
    received_ms = int((AT - timedelta(hours=2)).timestamp() * 1000)
    assert "after Kafka received it" in decode(TOPIC, 0, 0, event(), received_ms).reason


def test_the_lag_adds_up_what_spark_s_kafka_source_has_not_read_yet():
    progress = {
        "sources": [
            {
                "endOffset": {"t.a": {"0": 5, "1": 7}},
                "latestOffset": {"t.a": {"0": 9, "1": 7}, "t.b": {"0": 3}},
            }
        ]
    }
    assert _lag(progress) == 4 + 0 + 3
    assert _lag({"sources": []}) is None


def test_the_spark_kafka_jars_match_pyspark_and_skip_what_pyspark_ships():
    import pyspark

    pom = ElementTree.parse(SPARK_KAFKA.pom_path).getroot()
    versions = {el.text for el in pom.iter("{http://maven.apache.org/POM/4.0.0}version")}
    assert pyspark.__version__ in versions  # the connector is built for this Spark
    assert [_artifact(n) for n in ("zstd-jni-1.5.7-7.jar", "spark-sql-kafka-0-10_2.13-4.2.0.jar")] == [
        "zstd-jni",
        "spark-sql-kafka-0-10_2.13",
    ]


def test_status_is_healthy_only_while_the_job_runs_and_keeps_its_file_fresh():
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    fresh = JobStatus("running", 1, "local[1]", (now - timedelta(seconds=1)).isoformat(), lag_records=0)
    assert health(fresh, alive=True, now=now) == "healthy"
    assert health(fresh, alive=False, now=now) == "DOWN"
    assert health(None, alive=True, now=now) == "starting"
    stale = JobStatus("running", 1, "local[1]", (now - timedelta(minutes=5)).isoformat())
    assert health(stale, alive=True, now=now) == "not responding"
    three_s_ago = (now - timedelta(seconds=3)).isoformat()
    batch = JobStatus(
        "running", 1, "local[1]", now.isoformat(), last_batch_id=17, last_batch_at=three_s_ago,
        last_batch_records=42, lag_records=0,
    )  # fmt: skip
    assert describe(batch, now) == "last micro-batch 3 s ago (batch 17, 42 records), lag 0 records"


def test_get_stats_request_times_are_checked_before_use():
    bad = scheduler_pb2.GetStatsRequest(start_time=timestamp_pb2.Timestamp(seconds=10**15))
    with pytest.raises(InvalidArgument, match="start_time"):
        query_from_proto(bad, AT)
    start, end = timestamp_pb2.Timestamp(), timestamp_pb2.Timestamp()
    start.FromDatetime(AT)
    end.FromDatetime(AT - timedelta(minutes=1))
    with pytest.raises(InvalidArgument, match="must be before"):
        query_from_proto(scheduler_pb2.GetStatsRequest(start_time=start, end_time=end), AT)


def test_a_window_behind_the_watermark_is_reported_final():
    w1 = Window(AT - timedelta(minutes=20), AT - timedelta(minutes=19))
    w2 = Window(AT - timedelta(minutes=1), AT)
    report = StatsReport(
        [TaskWindowStats(w1, "noop", completed=3, run_time=Summary(3, 2.0, 3.0)), TaskWindowStats(w2, "noop")],
        [],
        JobProgress(watermark=AT - timedelta(minutes=10), malformed=2),
    )
    answer = report_to_proto(report)
    assert [w.final for w in answer.windows] == [True, False]
    assert (answer.windows[0].completed, answer.windows[0].run_time_count) == (3, 3)
    assert answer.malformed_records == 2
    assert not answer.HasField("last_batch_at")


def test_a_job_whose_records_wait_past_the_stall_allowance_is_not_healthy_and_says_why():
    now = datetime.now(UTC)
    stalled = JobStatus(
        state="running", pid=1, master="local[1]", updated_at=now.isoformat(), lag_records=42, stalled_s=301.0
    )
    assert health(stalled, True, now) == "stalled: 42 records wait, no micro-batch stored for 301 s"


def test_the_lag_counts_from_the_topics_ends_now_when_known():
    from gridmesh.analytics._job import _lag

    progress = {"sources": [{"latestOffset": {"t": {"0": 10}}, "endOffset": {"t": {"0": 10, "1": 3}}}]}
    assert _lag(progress) == 0  # what Spark saw at that batch
    assert _lag(progress, {"t/0": 25, "t/1": 3}) == 15  # what Kafka holds now
