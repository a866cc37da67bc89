"""Issue 7: ``gridmesh bench`` measures W1-W4 against a running mesh through
the edge and reports them in the peers' record schema; W4's kill -9 of a
task process loses nothing. A ``--quick`` smoke run: the numbers mean nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gridmesh.bench.records import PEER_METRICS, REQUIRED_FIELDS, parse_result_lines

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

GRIDMESH = str(Path(sys.executable).parent / "gridmesh")


def test_quick_bench_of_w1_to_w4_through_the_edge_emits_peer_records_and_w4_loses_nothing(
    edge, mesh_environment, tmp_path
):
    out = tmp_path / "gridmesh.jsonl"
    args = ["bench", "W1", "W2", "W3", "W4", "--quick", "--reps", "1", "--gate", "off", "--out", str(out)]
    run = subprocess.run([GRIDMESH, *args], env=mesh_environment, capture_output=True, text=True, timeout=150)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    records = parse_result_lines(run.stdout.splitlines())
    assert [r["workload"] for r in records] == ["W1", "W2", "W3", "W4"]
    assert [json.loads(line) for line in out.read_text().splitlines()] == records
    for record in records:
        assert set(REQUIRED_FIELDS) <= set(record)
        assert (record["system"], record["profile"], record["ok"], record["error"]) == ("gridmesh", "edge", True, None)
        assert set(PEER_METRICS[record["workload"]]) <= set(record["metrics"])
        assert record["conditions"]["target"] == edge
        assert not record["conditions"]["mesh_started_by_bench"]  # it used the running mesh
        assert record["rss_peak_mb"] > 0 and "envoy" in record["rss_peak_parts_mb"]
        assert {"mysql", "rabbitmq", "zookeeper", "kafka"} <= set(record["services_rss_peak_mb"])

    w4 = records[3]["metrics"]
    assert (w4["lost"], w4["completed"], w4["never_executed_to_end"]) == (0, w4["n"], 0)
    assert w4["killed_pid"] and w4["victims"] >= 1 and w4["recovery_s"] is not None
    assert "### W4 crash" in run.stdout and "| edge |" in run.stdout
