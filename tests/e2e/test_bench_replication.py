"""Issue 7 item 2: ``gridmesh bench R1 R2`` against the session mesh through
the edge: two replica applier processes get every event, the records parse in
the peers' schema, both replicas end equal to what was published, and the
bench leaves no applier process, database, queue or subscription behind.
A ``--quick`` smoke run: the numbers mean nothing."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import psutil
import pymysql
import pytest

from gridmesh.bench.records import REQUIRED_FIELDS, parse_result_lines
from gridmesh.clients import EventClient

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

GRIDMESH = str(Path(sys.executable).parent / "gridmesh")


def _bench_databases(config) -> list[str]:
    conn = pymysql.connect(**dataclasses.asdict(config.mysql_login("bench")))
    with contextlib.closing(conn), conn.cursor() as cur:
        cur.execute("SHOW DATABASES LIKE %s", (config.database("bench") + "\\_%",))
        return [row[0] for row in cur.fetchall()]


def _appliers() -> list[psutil.Process]:
    out = []
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if "gridmesh.bench.replica_proc" in " ".join(proc.info["cmdline"] or []):
                out.append(proc)
    return out


def test_quick_r1_r2_through_the_edge_replicate_everything_and_clean_up(edge, mesh_config, mesh_environment, tmp_path):
    before = {p.pid for p in _appliers()}
    out = tmp_path / "gridmesh.jsonl"
    args = ["bench", "R1", "R2", "--quick", "--reps", "1", "--gate", "off", "--out", str(out)]
    run = subprocess.run([GRIDMESH, *args], env=mesh_environment, capture_output=True, text=True, timeout=100)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    records = parse_result_lines(run.stdout.splitlines())
    assert [r["workload"] for r in records] == ["R1", "R2"]
    assert [json.loads(line) for line in out.read_text().splitlines()] == records
    for record in records:
        assert set(REQUIRED_FIELDS) <= set(record)
        assert (record["system"], record["profile"], record["ok"], record["error"]) == ("gridmesh", "edge", True, None)
        assert record["conditions"]["target"] == edge
        assert record["metrics"]["replicas_match"] is True and record["metrics"]["subscribers"] == 2

    r1, r2 = records[0]["metrics"], records[1]["metrics"]
    assert records[0]["headline"] == "events_per_s" and r1["n"] == 1000 and r1["events_per_s"] > 0
    assert r1["elapsed_s"] <= r1["observed_elapsed_s"] + 0.05  # the appliers' commit times precede the poll
    assert records[1]["headline"] == "p50_ms" and r2["n"] == 300 and r2["rate_per_s"] == 100
    assert r2["not_applied"] == 0 and 0 < r2["p50_ms"] <= r2["p99_ms"] and r2["replica_p99_ms"] <= r2["p99_ms"]
    assert 80 <= r2["achieved_rate_per_s"] <= 110
    assert "### R1 replication throughput" in run.stdout and "### R2 replication lag" in run.stdout

    # Nothing is left behind: processes, databases, subscriptions.
    assert {p.pid for p in _appliers()} == before
    assert _bench_databases(mesh_config) == []
    with EventClient(edge) as events:
        assert [s for s in events.list() if s.publisher.startswith("bench-")] == []
