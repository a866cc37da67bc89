"""SPEC §3 "Life-cycle log and analytics" and §4 (``gridmesh stats``,
``gridmesh up`` starting the analytics job), tried as a new user would:
20 ``noop`` tasks through Envoy, then ``GET /v1/stats`` shows their window(s)
with completed = 20 and plausible wait and run times.

This module runs its own mesh (with its own Kafka broker) with the
analytics job enabled and a short trigger interval.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pymysql
import pytest

from gridmesh.adapters import prometheus
from gridmesh.cli import mesh, procs
from gridmesh.config import MeshConfig
from tests.conftest import mesh_with_analytics
from tests.helpers import http_json, wait_for

log = logging.getLogger("tests.analytics")

TASKS = 20


@pytest.fixture(scope="module")
def stats_mesh(backing_services: MeshConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, ...]]:
    with mesh_with_analytics(tmp_path_factory.mktemp("stats-mesh")) as running:
        yield running.config, running.env, running.edge


def stats(edge: str, start: datetime, end: datetime, task_type: str = "") -> tuple[int, Any]:
    query = {"start_time": start.isoformat().replace("+00:00", "Z"), "end_time": end.isoformat().replace("+00:00", "Z")}
    if task_type:
        query["task_type"] = task_type
    return http_json(edge, "GET", "/v1/stats?" + urllib.parse.urlencode(query))


def gridmesh(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).parent / "gridmesh"), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_twenty_noop_tasks_through_the_edge_show_up_in_get_stats_with_plausible_times(stats_mesh):
    config, _, edge = stats_mesh
    start = datetime.now(UTC) - timedelta(minutes=1)
    ids = []
    for _ in range(TASKS):
        status, task = http_json(edge, "POST", "/v1/tasks", {"task_type": "noop", "params": {}, "result_dir": "stats"})
        assert status == 200, task
        ids.append(task["task_id"])

    def all_done() -> bool:
        return all(http_json(edge, "GET", f"/v1/tasks/{t}")[1]["state"] == "SUCCEEDED" for t in ids)

    wait_for("the 20 tasks to succeed", all_done, timeout=60, interval=0.1)
    done_at = time.monotonic()

    def windows() -> list[dict[str, Any]] | None:
        status, body = stats(edge, start, datetime.now(UTC) + timedelta(minutes=1), "noop")
        assert status == 200, body
        found = body.get("windows", [])
        return found if sum(int(w.get("completed", 0)) for w in found) == TASKS else None

    found = wait_for("GetStats to show completed = 20", windows, timeout=120, interval=0.1)
    log.warning("end-to-end delay, last task succeeded -> visible in GetStats: %.2f s", time.monotonic() - done_at)
    total = {k: sum(int(w.get(k, 0)) for w in found) for k in ("pending", "started", "completed", "failed")}
    assert total == {"pending": TASKS, "started": TASKS, "completed": TASKS, "failed": 0}
    for w in found:
        assert w["task_type"] == "noop"
        assert int(w["queue_wait_count"]) == int(w["started"]) and int(w["run_time_count"]) == int(w["completed"])
        assert 0 <= w.get("queue_wait_mean_ms", 0) <= w.get("queue_wait_max_ms", 0) < 30_000
        assert 0 <= w.get("run_time_mean_ms", 0) <= w.get("run_time_max_ms", 0) < 30_000
        assert w.get("queue_wait_p50_ms", 0) <= w.get("queue_wait_p95_ms", 0) <= w.get("queue_wait_max_ms", 0)
        end = datetime.fromisoformat(w["window_end"].replace("Z", "+00:00"))
        begin = datetime.fromisoformat(w["window_start"].replace("Z", "+00:00"))
        assert end - begin == timedelta(seconds=config.analytics.window_s)

    status, body = stats(edge, start, datetime.now(UTC) + timedelta(minutes=1))
    assert status == 200
    assert sum(int(w.get("completed", 0)) for w in body["workers"]) == TASKS
    assert "last_batch_at" in body and "watermark" in body


@pytest.mark.parametrize(
    ("start", "end", "says"),
    [
        (datetime(2026, 3, 1, 12, tzinfo=UTC), datetime(2026, 3, 1, 11, tzinfo=UTC), "must be before"),
        (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 6, 1, tzinfo=UTC), "longer than 31 days"),
        (datetime(1971, 1, 1, tzinfo=UTC), datetime(1971, 1, 2, tzinfo=UTC), "outside the years 2000-2100"),
    ],
)
def test_get_stats_with_an_inverted_or_absurd_range_is_400(stats_mesh, start, end, says):
    _, _, edge = stats_mesh
    status, body = stats(edge, start, end)
    assert status == 400, body
    assert says in body["message"]


def test_gridmesh_stats_prints_a_table_and_status_shows_the_job(stats_mesh):
    config, env, _ = stats_mesh
    wait_for("a stored micro-batch", lambda: "micro-batch" in mesh.analytics_address(config) and "ago" in
             mesh.analytics_address(config))  # fmt: skip
    table = gridmesh(env, "stats", "--since", "10m", "--type", "noop")
    assert table.returncode == 0, table.stderr
    header, first = table.stdout.splitlines()[:2]
    assert header.split()[:6] == ["window_start", "end", "type", "pending", "started", "completed"]
    assert " noop " in first
    assert "analytics job: last micro-batch" in table.stdout
    bad = gridmesh(env, "stats", "--start", "2026-03-01T12:00:00Z", "--end", "2026-03-01T11:00:00Z")
    assert bad.returncode == 2 and "INVALID_ARGUMENT" in bad.stderr
    status = gridmesh(env, "status")
    (row,) = [line for line in status.stdout.splitlines() if line.startswith("analytics")]
    assert row.endswith("healthy") and "last micro-batch" in row and "lag" in row
    assert procs.alive("analytics", mesh.run_dir(config))


def test_get_stats_counts_exactly_the_succeeded_tasks_across_a_kill_9_of_the_scheduler(stats_mesh):
    """Issue 16: with tasks finishing continuously, kill -9 the Scheduler and
    restart it (``gridmesh up``): every event of changes it committed but had
    not yet seen acknowledged is emitted again by the restarted one, and the
    sink counts a repeated event once, so the statistics count exactly the
    tasks that SUCCEEDED. Also reports how long submits were refused."""
    config, env, edge = stats_mesh
    start = datetime.now(UTC) - timedelta(minutes=1)
    accepted: list[str] = []
    refused: list[float] = []  # when submits were refused, then when one was accepted again
    halt = threading.Event()

    def submitter() -> None:
        body = {"task_type": "echo", "params": {"i": 1}, "result_dir": "s"}
        while not halt.is_set():
            try:
                status, answer = http_json(edge, "POST", "/v1/tasks", body)
            except OSError:  # the edge's upstream is gone for a moment
                status, answer = 503, None
            if status == 200:
                accepted.append(answer["task_id"])
                if len(refused) == 1:
                    refused.append(time.monotonic())
            elif not refused:
                refused.append(time.monotonic())
            halt.wait(0.01)

    thread = threading.Thread(target=submitter, daemon=True)
    thread.start()
    try:
        wait_for("tasks to flow", lambda: len(accepted) >= 50, timeout=60)
        pid = procs.alive("scheduler", mesh.run_dir(config))
        assert pid
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        mesh.up(config, workers=1, env=env, progress=lambda *_: None)
        back = len(accepted)
        wait_for("submits to be accepted again", lambda: len(accepted) > back + 50, timeout=120)
    finally:
        halt.set()
        thread.join()
    if len(refused) == 2:
        print(f"kill -9 of the Scheduler, then gridmesh up: submits refused {refused[0] - killed_at:+.2f} s "
              f"to {refused[1] - killed_at:+.2f} s after the kill")  # fmt: skip

    def ended(task_id: str) -> str | None:
        status, task = http_json(edge, "GET", f"/v1/tasks/{task_id}")
        return str(task["state"]) if status == 200 and task["state"] in ("SUCCEEDED", "FAILED") else None

    finals = [wait_for("a task to end", functools.partial(ended, t), timeout=120) for t in accepted]
    assert finals.count("SUCCEEDED") == len(accepted)

    # The statistics count what the mesh accepted, which may be more than the
    # submitter heard of: a submit committed just before the kill whose answer
    # was lost (without an idempotency key the retry is a new task).
    def all_ended() -> list[dict[str, Any]] | None:
        tasks = _list_tasks(edge, "echo")
        return tasks if all(t["state"] in ("SUCCEEDED", "FAILED") for t in tasks) else None

    echo = wait_for("every echo task to end", all_ended, timeout=120)
    assert set(accepted) <= {t["task_id"] for t in echo}
    assert all(t["state"] == "SUCCEEDED" for t in echo), [t["state"] for t in echo]
    succeeded = len(echo)
    accepted = [t["task_id"] for t in echo]

    last: list[dict[str, int]] = []

    def counted() -> dict[str, int] | None:
        status, body = stats(edge, start, datetime.now(UTC) + timedelta(minutes=1), "echo")
        assert status == 200, body
        total = {k: sum(int(w.get(k, 0)) for w in body.get("windows", [])) for k in ("pending", "completed")}
        last[:] = [total]
        return total if total == {"pending": len(accepted), "completed": succeeded} else None

    try:
        wait_for(f"GetStats to count {succeeded} echo tasks exactly", counted, timeout=90, interval=0.5)
    except AssertionError:
        raise AssertionError(f"GetStats counts {last} for {len(accepted)} accepted, {succeeded} succeeded") from None


def test_the_job_exports_its_metrics_and_says_it_is_stalled_while_its_database_is_held(stats_mesh):
    """Issue 14: the job's /metrics (batches, records, lag, last batch); and a
    job held by its database (a table lock: every micro-batch waits) while
    events keep coming reports itself stalled past analytics.stall_after_s
    (3 s here) — in gridmesh status and as gridmesh_analytics_stalled — and
    healthy again once released, having lost nothing."""
    config, _, edge = stats_mesh

    def job_metrics() -> dict[str, float] | None:
        found = [t for t in prometheus.targets(config) if t.name.startswith("analytics-")]
        scraped = prometheus.scrape(found[0]) if found else None
        return {name: value for (name, _), value in scraped.items()} if scraped else None

    def stored_a_batch() -> dict[str, float] | None:
        found = job_metrics()
        return found if found and found.get("gridmesh_analytics_batches_total") else None

    metrics = wait_for("the job's metrics", stored_a_batch)
    assert metrics["gridmesh_analytics_last_batch_timestamp_seconds"] > time.time() - 600
    assert "gridmesh_analytics_lag_records" in metrics and metrics["gridmesh_analytics_stalled"] == 0
    start = datetime.now(UTC) - timedelta(minutes=1)
    held = pymysql.connect(**dataclasses.asdict(config.mysql_login("analytics")), database=config.database("analytics"))
    try:
        with held.cursor() as cur:
            cur.execute("LOCK TABLES lifecycle_events WRITE")
        ids = []
        for _ in range(5):
            status, task = http_json(edge, "POST", "/v1/tasks", {"task_type": "noop", "result_dir": "held"})
            assert status == 200, task
            ids.append(task["task_id"])

        def stalled() -> str | None:
            health = mesh.analytics_health(config)
            return health if "stalled" in health else None

        said = wait_for("the job to say it is stalled", stalled)
        assert "records wait" in said, said
        wait_for("gridmesh_analytics_stalled = 1", lambda: (job_metrics() or {}).get("gridmesh_analytics_stalled") == 1)
    finally:
        with held.cursor() as cur:
            cur.execute("UNLOCK TABLES")
        held.close()
    wait_for("the job to be healthy again", lambda: mesh.analytics_health(config) == "healthy", timeout=60)

    def counted() -> bool:
        status, body = stats(edge, start, datetime.now(UTC) + timedelta(minutes=1), "noop")
        return status == 200 and sum(int(w.get("completed", 0)) for w in body.get("windows", [])) >= len(ids)

    wait_for("the held tasks to be counted", counted, timeout=60)


def _list_tasks(edge: str, task_type: str) -> list[dict[str, Any]]:
    """Every task of ``task_type`` in the mesh, page by page."""
    found: list[dict[str, Any]] = []
    token = ""
    while True:
        query = urllib.parse.urlencode({"task_type": task_type, "page_size": 500, "page_token": token})
        status, page = http_json(edge, "GET", f"/v1/tasks?{query}")
        assert status == 200, page
        found += page.get("tasks", [])
        token = page.get("next_page_token", "")
        if not token:
            return found
