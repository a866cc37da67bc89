"""The Grafana dashboard of the mesh, built as data: every panel a PromQL
query over the metrics of ``gridmesh.observability.metrics`` (and the gRPC
message counters), written to ``docs/grafana-dashboard.json`` for Grafana's
"Import dashboard" (it asks for the Prometheus data source).

    .venv/bin/python tools/dashboard.py            # rewrite docs/grafana-dashboard.json
    .venv/bin/python tools/dashboard.py --check    # exit 1 if it is out of date

tests/unit/test_dashboard.py checks that the file is current and that every
query names only metrics the mesh exports.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

PATH = Path(__file__).resolve().parent.parent / "docs" / "grafana-dashboard.json"
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}

# (title, unit, [(legend, PromQL)]) per panel, two panels a row.
PANELS: list[tuple[str, str, list[tuple[str, str]]]] = [
    (
        "Tasks finished per second, by type",
        "ops",
        [("{{task_type}}", 'sum by (task_type) (rate(gridmesh_task_events_total{kind="completed"}[1m]))')],
    ),
    (
        "Failures, retries and cancels per second",
        "ops",
        [
            ("{{kind}}", 'sum by (kind) (rate(gridmesh_task_events_total{kind=~"failed|retried"}[5m]))'),
            ("cancelled", "sum(rate(gridmesh_tasks_cancelled_total[5m]))"),
        ],
    ),
    (
        "Queue: tasks waiting, and the oldest one's age",
        "short",
        [
            ("queued", "sum(gridmesh_queue_tasks)"),
            ("oldest (s)", "max(gridmesh_queue_oldest_age_seconds)"),
        ],
    ),
    (
        "Worker slots: busy of all",
        "short",
        [("busy", "sum(gridmesh_worker_busy_slots)"), ("slots", "sum(gridmesh_worker_slots)")],
    ),
    (
        "Time in the queue and running (p50, p99)",
        "s",
        [
            ("queued p50", "histogram_quantile(0.5, sum by (le) (rate(gridmesh_task_queue_wait_seconds_bucket[5m])))"),
            ("queued p99", "histogram_quantile(0.99, sum by (le) (rate(gridmesh_task_queue_wait_seconds_bucket[5m])))"),
            ("running p50", "histogram_quantile(0.5, sum by (le) (rate(gridmesh_task_run_seconds_bucket[5m])))"),
            ("running p99", "histogram_quantile(0.99, sum by (le) (rate(gridmesh_task_run_seconds_bucket[5m])))"),
        ],
    ),
    (
        "Worker outcomes per second",
        "ops",
        [("{{outcome}}", "sum by (outcome) (rate(gridmesh_worker_tasks_total[1m]))")],
    ),
    (
        "Results: write latency (p99) and bytes per second",
        "s",
        [
            ("write p99", "histogram_quantile(0.99, sum by (le) (rate(gridmesh_result_write_seconds_bucket[5m])))"),
            ("errors/s {{reason}}", "sum by (reason) (rate(gridmesh_result_errors_total[5m]))"),
        ],
    ),
    (
        "Storage: free bytes and bytes written per second",
        "bytes",
        [
            ("free", "min(gridmesh_storage_free_bytes)"),
            ("written/s", "sum(rate(gridmesh_result_bytes_total[5m]))"),
        ],
    ),
    (
        "Scheduler: leader, watchers, lease expiries",
        "short",
        [
            ("leaders", "sum(gridmesh_scheduler_leader)"),
            ("watchers", "sum(gridmesh_watchers)"),
            ("lease expiries/min", "sum(rate(gridmesh_lease_expiries_total[5m])) * 60"),
        ],
    ),
    (
        "Retention: deleted per minute",
        "short",
        [("{{what}}", "sum by (what) (rate(gridmesh_retention_deleted_total[5m])) * 60")],
    ),
    (
        "Events published per second, by outcome",
        "ops",
        [("{{outcome}}", "sum by (outcome) (rate(gridmesh_events_published_total[1m]))")],
    ),
    (
        "Publish → confirm latency (p50, p99)",
        "s",
        [
            ("p50", "histogram_quantile(0.5, sum by (le) (rate(gridmesh_publish_confirm_seconds_bucket[5m])))"),
            ("p99", "histogram_quantile(0.99, sum by (le) (rate(gridmesh_publish_confirm_seconds_bucket[5m])))"),
        ],
    ),
    (
        "Subscribers: queued events and dead letters",
        "short",
        [
            ("queued {{subscriber}}", "sum by (subscriber) (gridmesh_subscriber_queue_messages)"),
            ("dead {{subscriber}}", "sum by (subscriber) (gridmesh_subscriber_dead_letters)"),
            ("consumers {{subscriber}}", "sum by (subscriber) (gridmesh_subscriber_consumers)"),
        ],
    ),
    (
        "gRPC messages received per second, by method",
        "ops",
        [
            (
                "{{grpc_service}}/{{grpc_method}}",
                "sum by (grpc_service, grpc_method) (rate(grpc_server_msg_received_total[1m]))",
            )
        ],
    ),
]


def _panel(index: int, title: str, unit: str, queries: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "id": index + 1,
        "type": "timeseries",
        "title": title,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": 12, "x": 12 * (index % 2), "y": 8 * (index // 2)},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr, "legendFormat": legend}
            for i, (legend, expr) in enumerate(queries)
        ],
    }


def dashboard() -> dict[str, Any]:
    return {
        "__inputs": [
            {
                "name": "DS_PROMETHEUS",
                "label": "Prometheus",
                "description": "The Prometheus that scrapes the mesh (gridmesh up runs one on :9190)",
                "type": "datasource",
                "pluginId": "prometheus",
                "pluginName": "Prometheus",
            }
        ],
        "title": "gridmesh",
        "uid": "gridmesh-overview",
        "tags": ["gridmesh"],
        "timezone": "utc",
        "schemaVersion": 39,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "panels": [_panel(i, *panel) for i, panel in enumerate(PANELS)],
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="exit 1 if the file is out of date")
    args = p.parse_args()
    if args.check:
        current = PATH.exists() and PATH.read_text() == render()
        print(f"{PATH}: {'current' if current else 'out of date: run tools/dashboard.py'}")
        return 0 if current else 1
    PATH.write_text(render())
    print(f"wrote {PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
