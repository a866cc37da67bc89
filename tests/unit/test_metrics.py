"""Prometheus metrics of a gridmesh process: every gRPC server counts its
calls and messages (go-grpc-prometheus names), and a process publishes its
``/metrics`` endpoint as a file_sd target while it serves."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from gridmesh.adapters import prometheus
from gridmesh.bench.runner import grpc_messages, messages_between
from gridmesh.config import load_config
from gridmesh.core.lifecycle import LifecycleEvent, LifecycleKind, MemoryLifecycleLog
from gridmesh.grpc_support.server import build_grpc_server, export_metrics, serve_until_signal
from gridmesh.observability import server as prometheus_server
from gridmesh.observability.metrics import LIFECYCLE_EVENTS, MeteredLifecycleLog, serve

HEALTH = {"grpc_service": "grpc.health.v1.Health", "grpc_method": "Check", "grpc_type": "unary"}
WATCH = {**HEALTH, "grpc_method": "Watch", "grpc_type": "server_stream"}


def _config(tmp_path: Path):
    return load_config({"GRIDMESH_STATE_DIR": str(tmp_path)})


def _value(samples, name: str, labels: dict[str, str]) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_a_process_counts_calls_and_messages_and_publishes_its_endpoint_while_it_serves(tmp_path):
    config = _config(tmp_path)

    async def scenario() -> None:
        host = build_grpc_server("127.0.0.1:0", [], (), tls=None)
        export_metrics(host, config, "scheduler")
        stop = asyncio.Event()
        serving = asyncio.create_task(serve_until_signal(host, stop=stop, grace_s=0))
        targets: list[prometheus.Target] = []
        while not targets:  # the file is written before the server starts; poll the loop once
            targets = prometheus.targets(config)
            await asyncio.sleep(0.01)
        (target,) = targets
        assert target.name == f"scheduler-{host.port}"
        assert target.labels == {"component": "scheduler", "gridmesh_instance": target.name}
        assert json.loads((config.metrics_targets / f"{target.name}.json").read_text())[0]["targets"] == [
            target.address
        ]

        before = await asyncio.to_thread(prometheus.scrape, target)
        counted_before = await asyncio.to_thread(grpc_messages, config)
        async with aio.insecure_channel(f"127.0.0.1:{host.port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for _ in range(3):
                await stub.Check(health_pb2.HealthCheckRequest())
            watch = stub.Watch(health_pb2.HealthCheckRequest())
            await watch.read()
            watch.cancel()
        after = await asyncio.to_thread(prometheus.scrape, target)
        counted_after = await asyncio.to_thread(grpc_messages, config)

        def grew(name: str, labels: dict[str, str]) -> float:
            return _value(after, name, labels) - _value(before, name, labels)

        assert grew("grpc_server_started_total", HEALTH) == 3
        assert grew("grpc_server_msg_received_total", HEALTH) == 3
        assert grew("grpc_server_msg_sent_total", HEALTH) == 3
        assert grew("grpc_server_started_total", WATCH) == 1
        assert grew("grpc_server_msg_received_total", WATCH) == 1
        assert grew("grpc_server_msg_sent_total", WATCH) == 1
        assert messages_between(counted_before, counted_after) == {
            "Check in": 3,
            "Check out": 3,
            "Watch in": 1,
            "Watch out": 1,
        }

        stop.set()
        await asyncio.wait_for(serving, 5)
        assert prometheus.targets(config) == []  # a clean stop takes the target away
        assert await asyncio.to_thread(prometheus.scrape, target) is None

    asyncio.run(scenario())


def test_metrics_can_be_turned_off(tmp_path):
    config = load_config({"GRIDMESH_STATE_DIR": str(tmp_path), "GRIDMESH_METRICS_ENABLED": "false"})
    assert prometheus.start(config, "worker", 1) is None
    assert prometheus.targets(config) == []


def test_unreadable_target_files_are_skipped_and_a_restarted_process_counts_from_zero(tmp_path):
    config = _config(tmp_path)
    config.metrics_targets.mkdir(parents=True)
    (config.metrics_targets / "broken.json").write_text("{not json")
    (config.metrics_targets / "worker-1.json").write_text(
        json.dumps([{"targets": ["127.0.0.1:1"], "labels": {"component": "worker"}}])
    )
    assert [t.name for t in prometheus.targets(config)] == ["worker-1"]
    assert messages_between({"PullTasks in": 10.0}, {"PullTasks in": 4.0, "StoreResults in": 2.0}) == {
        "PullTasks in": 4,
        "StoreResults in": 2,
    }


def test_the_metered_lifecycle_log_counts_each_event_by_kind_and_type_and_passes_it_on():
    serve((LIFECYCLE_EVENTS,))  # as a Scheduler's composition root does
    inner = MemoryLifecycleLog()
    log = MeteredLifecycleLog(inner)
    labels = {"kind": "completed", "task_type": "metered-test"}
    before = REGISTRY.get_sample_value("gridmesh_task_events_total", labels) or 0.0
    event = LifecycleEvent(LifecycleKind.COMPLETED, "t-1", "metered-test", "w-1", 1, 0, datetime.now(UTC))
    log.emit(event)
    log.emit(event)
    assert REGISTRY.get_sample_value("gridmesh_task_events_total", labels) == before + 2
    assert inner.events == [event, event]


def test_the_prometheus_server_scrapes_the_file_sd_targets_and_envoy_and_loads_the_shipped_rules(tmp_path):
    config = _config(tmp_path)
    built = prometheus_server.build_config(config)
    assert built["rule_files"] == [str(prometheus_server.alert_rules_path())]
    assert prometheus_server.alert_rules_path().is_file()
    (gridmesh, envoy) = built["scrape_configs"]
    assert gridmesh["file_sd_configs"][0]["files"] == [str(config.metrics_targets / "*.json")]
    assert envoy["metrics_path"] == "/stats/prometheus"
    assert f"--web.listen-address=127.0.0.1:{config.metrics.prometheus_port}" in prometheus_server.argv(config)


def test_a_process_exports_only_the_metrics_it_serves():
    # A Scheduler must not export a StoreKeeper's gauge as 0: min() in an alert would pick it up.
    assert REGISTRY.get_sample_value("gridmesh_storage_free_bytes") is None


def test_the_queue_by_kind_and_the_lifecycle_producer_are_collected_at_each_scrape():
    from prometheus_client import CollectorRegistry, generate_latest

    from gridmesh.observability.metrics import LifecycleProducer, QueueByKind

    queued = {("high", "echo"): (3, datetime(2026, 1, 1, tzinfo=UTC))}
    registry = CollectorRegistry()
    registry.register(QueueByKind(lambda: queued))
    registry.register(LifecycleProducer(lambda: (7, 1, 2)))
    text = generate_latest(registry).decode()
    assert 'gridmesh_queue_depth{priority="high",task_type="echo"} 3.0' in text
    assert 'gridmesh_queue_depth_oldest_age_seconds{priority="high",task_type="echo"}' in text
    assert "gridmesh_lifecycle_buffered_events 7.0" in text
    assert "gridmesh_lifecycle_delivery_failures_total 1.0" in text
    assert "gridmesh_lifecycle_dropped_events_total 2.0" in text
    queued.clear()  # nothing queued (or a standby): no series
    assert "gridmesh_queue_depth{" not in generate_latest(registry).decode()
