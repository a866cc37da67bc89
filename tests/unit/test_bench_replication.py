"""The pure parts of R1/R2 (gridmesh.bench.replication): which entity and
version each event carries, pacing, the appliers' reports, completion, lag
and the replica check; and that the command, options and table know R1/R2."""

from __future__ import annotations

import pytest

from gridmesh.bench import replication as rp
from gridmesh.bench import workloads as wl
from gridmesh.bench.client import BenchError
from gridmesh.bench.measure import RUNNERS
from gridmesh.bench.runner import BenchOptions
from gridmesh.bench.table import render
from gridmesh.cli.main import build_parser


def test_the_event_plan_gives_every_entity_ten_versions_in_order():
    plan = rp.EventPlan.of(10_000)
    assert (plan.entities, plan.final_version) == (1000, 10)
    keys = [plan.key(i) for i in range(plan.n)]
    assert len(set(keys)) == plan.n
    assert keys[0] == ("e-000000", 1) and keys[999] == ("e-000999", 1) and keys[1000] == ("e-000000", 2)
    assert all(plan.seq(k) == i for i, k in enumerate(keys))
    # versions of one entity come in publishing order
    versions = [v for e, v in keys if e == "e-000007"]
    assert versions == list(range(1, 11))
    final = plan.final_rows()
    assert len(final) == 1000 and final["e-000007"] == (10, 9007)


def test_an_event_count_not_divisible_by_ten_gives_one_version_per_entity():
    plan = rp.EventPlan.of(7)
    assert (plan.entities, plan.final_version) == (7, 1)
    assert rp.EventPlan.of(300).entities == 30
    with pytest.raises(ValueError):
        rp.EventPlan.of(0)


def test_pacing_makes_event_i_due_at_i_over_rate():
    assert rp.due(-0.1, 500, 10_000) == 0
    assert rp.due(0.0, 500, 10_000) == 1
    assert rp.due(0.0019, 500, 10_000) == 1
    assert rp.due(0.002, 500, 10_000) == 2
    assert rp.due(1.0, 500, 10_000) == 501
    assert rp.due(25.0, 500, 10_000) == 10_000
    assert (rp.r2_rate(False), rp.r2_rate(True)) == (500, 100)
    assert wl.WORKLOADS["R2"].n == rp.R2_RATE * rp.R2_SECONDS
    assert wl.WORKLOADS["R2"].quick_n == rp.R2_QUICK_RATE * rp.R2_QUICK_SECONDS


def test_applied_lines_are_parsed_keeping_the_first_time_and_skipping_junk():
    lines = ["READY 123", "e-000001 1 100.5", "e-000001 1 101.0", "bad line", "e-000002 x 1.0", "e-000002 3 102.25"]
    assert rp.parse_applied(lines) == {("e-000001", 1): 100.5, ("e-000002", 3): 102.25}


def test_completion_is_when_the_slowest_replica_held_the_last_version_of_every_entity():
    plan = rp.EventPlan.of(20)  # 2 entities x 10 versions
    a = {("e-000000", 10): 5.0, ("e-000001", 10): 6.0, ("e-000000", 9): 9.0}
    b = {("e-000000", 10): 7.5, ("e-000001", 10): 5.5}
    assert rp.completion_time(plan, [a, b]) == 7.5
    assert rp.completion_time(plan, [a, {("e-000000", 10): 1.0}]) is None


def test_lag_is_publish_to_applied_in_both_replicas_with_per_replica_figures():
    plan = rp.EventPlan.of(3)
    published = [10.0, 10.0, 11.0]
    a = {("e-000000", 1): 10.010, ("e-000001", 1): 10.020, ("e-000002", 1): 11.001}
    b = {("e-000000", 1): 10.030, ("e-000001", 1): 10.005}
    m = rp.lag_metrics(plan, published, [a, b])
    assert m["n"] == 2 and m["not_applied"] == 1
    assert m["p50_ms"] == pytest.approx(20.0) and m["p99_ms"] == pytest.approx(30.0)
    assert m["replica_p50_ms"] == pytest.approx(10.0) and m["replica_max_ms"] == pytest.approx(30.0)
    with pytest.raises(BenchError):
        rp.lag_metrics(plan, published, [a, {}])


def test_a_replica_matches_only_with_the_last_version_and_payload_of_every_entity():
    plan = rp.EventPlan.of(20)
    good = [("e-000000", 10, 18, wl.PAYLOAD), ("e-000001", 10, 19, wl.PAYLOAD)]
    assert rp.check_rows(plan, good) == []
    assert rp.check_rows(plan, good[:1]) == ["missing e-000001"]
    stale = [good[0], ("e-000001", 9, 17, wl.PAYLOAD)]
    assert rp.check_rows(plan, stale) == ["e-000001: version/seq (9, 17) instead of (10, 19)"]
    assert rp.check_rows(plan, [*good, ("e-000009", 1, 9, wl.PAYLOAD)]) == ["unexpected e-000009"]


def test_the_payload_carries_the_publish_stamp_and_100_bytes():
    assert rp.payload(("e-000003", 2), 13, 1.5) == {
        "id": "e-000003",
        "seq": 13,
        "data": wl.PAYLOAD,
        "published_at": 1.5,
    }


def test_r1_and_r2_are_measured_by_default_and_listed_by_the_command(capsys):
    assert {"R1", "R2"} <= set(RUNNERS) and {"R1", "R2"} <= set(wl.DEFAULT_WORKLOADS)
    assert BenchOptions(workloads=("R1", "R2")).workloads == ("R1", "R2")
    args = build_parser().parse_args(["bench", "r1", "R2", "--quick"])
    assert args.workloads == ["R1", "R2"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "--help"])
    out = capsys.readouterr().out
    assert "R1  replication throughput" in out and "R2  replication lag" in out


def test_the_table_has_rows_for_r1_and_r2():
    def record(workload, rep, metrics):
        return {"workload": workload, "profile": "edge", "rep": rep, "ok": True, "metrics": metrics}

    records = [
        record("R1", 1, {"events_per_s": 2000.0, "publish_per_s": 5000.0, "elapsed_s": 5.0, "replicas_match": True}),
        record("R1", 2, {"events_per_s": 3000.0, "publish_per_s": 6000.0, "elapsed_s": 3.3, "replicas_match": True}),
        record("R2", 1, {"p50_ms": 4.0, "p99_ms": 12.5, "achieved_rate_per_s": 499.9, "replicas_match": True}),
    ]
    text = render(records)
    assert "### R1 replication throughput" in text and "### R2 replication lag" in text
    r1_row = next(line for line in text.splitlines() if line.startswith("| edge | 2,500"))
    assert "2,000..3,000" in r1_row and "| 2/2 |" in r1_row
    r2_row = next(line for line in text.splitlines() if line.startswith("| edge | 4.00"))
    assert "12.50" in r2_row and "| 1/1 |" in r2_row
