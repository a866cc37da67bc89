"""Issue 7 / SPEC §5: the pure parts of ``gridmesh bench`` — statistics as the
peers define them, the W4 verdict from an execution log, the peers' record
schema, the summary table and the ``logged_burn`` task type."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

import pytest
from google.rpc import status_pb2

from gridmesh.bench import machine, records, table
from gridmesh.bench import workloads as wl
from gridmesh.bench.cli import add_bench_command
from gridmesh.bench.client import BenchClient, BenchError
from gridmesh.bench.runner import BenchOptions, ProgressLine
from gridmesh.bench.sampler import Sampler, sample
from gridmesh.bench.stats import latency_metrics, median, percentile, spread
from gridmesh.bench.task_types import LOGGED_BURN, exec_log_dir
from gridmesh.bench.workloads import ExecLogTail, Executions, crash_verdict, parse_exec_lines
from gridmesh.cli.main import build_parser
from gridmesh.common.errors import InvalidArgument
from gridmesh.core.builtin_tasks import BURN_ITERS_PER_UNIT, burn_units
from gridmesh.core.tasktypes import default_registry
from gridmesh.v1 import common_pb2, scheduler_pb2

# -- statistics ------------------------------------------------------------------------------


@pytest.mark.parametrize(("p", "expected"), [(0, 1), (10, 1), (50, 5), (90, 9), (99, 10), (100, 10)])
def test_percentile_is_nearest_rank_like_the_peers(p, expected):
    assert percentile([10, 9, 8, 7, 6, 5, 4, 3, 2, 1], p) == expected


def test_percentile_of_nothing_is_an_error():
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)


def test_latency_metrics_are_in_ms_with_the_peers_names():
    m = latency_metrics([0.001, 0.002, 0.003, 0.004])
    assert m == {"p50_ms": 2.0, "p90_ms": 4.0, "p99_ms": 4.0, "mean_ms": 2.5, "max_ms": 4.0, "n": 4}
    assert set(latency_metrics([0.001], "direct_grpc_")) == {f"direct_grpc_{k}" for k in m}


def test_median_and_spread_ignore_what_is_not_a_number():
    assert median([3, None, 1, "x", 2, True]) == 2
    assert spread([None, 4.0, 1.0, 2.0]) == (2.0, 1.0, 4.0)
    assert median([None]) is None and spread([]) is None


# -- the W4 execution log and verdict -----------------------------------------------------------

KILLED, OTHER, FRESH = 101, 102, 103


def exec_log(*lines: tuple[int, str, int, float]) -> dict[int, Executions]:
    return parse_exec_lines(f"{tag} {event} {pid} {at:.6f}" for tag, event, pid, at in lines)


def test_parse_exec_lines_keeps_starts_and_ends_per_task_and_skips_garbage():
    log = parse_exec_lines(
        ["0 start 7 1.5", "0 end 7 2.5", "garbage", "1 start x 3", "1 middle 7 3", "", "1 start 8 4"]
    )
    assert log[0].starts == [(7, 1.5)] and log[0].ends == [(7, 2.5)]
    assert log[1].starts == [(8, 4.0)] and log[1].ends == []


def test_a_task_killed_mid_run_and_run_again_is_neither_lost_nor_duplicated():
    # tasks 0-3; task 2 was running in KILLED when it was killed at t=10, and ran again in FRESH
    log = exec_log(
        (0, "start", KILLED, 1),
        (0, "end", KILLED, 2),
        (1, "start", OTHER, 1),
        (1, "end", OTHER, 2),
        (2, "start", KILLED, 9.99),
        (3, "start", OTHER, 9),
        (3, "end", OTHER, 11),
        (2, "start", FRESH, 10.02),
        (2, "end", FRESH, 10.05),
    )
    verdict = crash_verdict(log, 4, t_kill=10.0, killed_pid=KILLED, succeeded=[0, 1, 2, 3])
    assert verdict.metrics() == {
        "completed": 4,
        "lost": 0,
        "never_executed_to_end": 0,
        "duplicate_effects": 0,
        "reexecuted": 1,
        "victims": 1,
        "exactly_once": True,
        "at_least_once": True,
        "recovery_s": 0.05,
    }


def test_a_task_that_finished_but_ran_again_after_the_kill_is_a_duplicate_effect():
    log = exec_log(
        (0, "start", KILLED, 9.0),
        (0, "end", KILLED, 9.5),  # done, but its success was not recorded before the kill
        (0, "start", OTHER, 10.5),
        (0, "end", OTHER, 11.0),
    )
    verdict = crash_verdict(log, 1, t_kill=10.0, killed_pid=KILLED, succeeded=[0])
    assert (verdict.duplicate_effects, verdict.reexecuted, verdict.victims) == (1, 1, 1)
    assert verdict.recovery_s == pytest.approx(1.0)
    assert not verdict.exactly_once and verdict.at_least_once


def test_a_task_never_rerun_is_lost_and_has_no_recovery_time():
    log = exec_log((0, "start", OTHER, 1), (0, "end", OTHER, 2), (1, "start", KILLED, 9.99))
    verdict = crash_verdict(log, 3, t_kill=10.0, killed_pid=KILLED, succeeded=[0])
    assert (verdict.completed, verdict.lost, verdict.never_executed_to_end) == (1, 2, 2)
    assert verdict.recovery_s is None
    assert not verdict.at_least_once


def test_without_a_kill_nothing_is_a_victim():
    log = exec_log((0, "start", OTHER, 1), (0, "end", OTHER, 2))
    verdict = crash_verdict(log, 1, t_kill=None, killed_pid=None, succeeded=[0])
    assert verdict.victims == 0 and verdict.recovery_s is None and verdict.exactly_once


def test_the_log_tail_reads_only_complete_lines_as_the_file_grows(tmp_path):
    path = tmp_path / "exec.log"
    tail = ExecLogTail(path)
    assert tail.poll() == {}  # not there yet
    path.write_text("0 start 7 100.0\n0 end 7 100.02\n1 sta")
    tail.poll()
    assert tail.ended == 1 and 1 not in tail.log
    with path.open("a") as f:
        f.write("rt 8 100.03\n")
    tail.poll()
    assert tail.log[1].starts == [(8, 100.03)]
    assert tail.fresh_starts(now=100.035, max_age_s=0.008) == {8: (1, 100.03)}
    assert tail.fresh_starts(now=100.05, max_age_s=0.008) == {}
    assert tail.open_start(8) == (1, 100.03) and tail.open_start(7) is None


def test_the_killer_learns_a_typical_run_time_from_tasks_that_ended_where_they_started(tmp_path):
    path = tmp_path / "exec.log"
    tail = ExecLogTail(path)
    path.write_text("0 start 7 100.0\n0 end 7 100.004\n1 start 8 100.0\n1 end 9 100.5\n2 start 7 100.01\n")
    tail.poll()
    assert tail.typical_run_s() == pytest.approx(0.004)  # 1 ended elsewhere, 2 has not ended
    assert ExecLogTail(tmp_path / "none").typical_run_s() is None


def test_log_exec_appends_tag_event_pid_and_time(tmp_path):
    path = tmp_path / "exec.log"
    before = time.time()
    wl.log_exec(path, 5, "start")
    tag, event, pid, at = path.read_text().split()
    assert (tag, event, int(pid)) == ("5", "start", os.getpid())
    assert before <= float(at) <= time.time()


# -- the logged_burn task type --------------------------------------------------------------------


@pytest.fixture
def temp_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    exec_log_dir().mkdir()
    return tmp_path


def test_logged_burn_is_installed_as_a_plugin_and_logs_start_and_end(temp_dir):
    registry = default_registry()
    task_type = registry.validate("logged_burn", {"units": 1, "tag": 3, "log": "w4.log"}, 1 << 20)
    assert task_type is LOGGED_BURN or task_type.name == "logged_burn"
    assert task_type.run({"units": 1, "tag": 3, "log": "w4.log"}) == {"tag": 3}
    log = wl.read_exec_log(temp_dir / "gridmesh-bench" / "w4.log")
    assert list(log) == [3]
    assert [pid for pid, _ in log[3].starts] == [os.getpid()] == [pid for pid, _ in log[3].ends]
    assert log[3].starts[0][1] <= log[3].ends[0][1]


@pytest.mark.parametrize("name", ["../escape.log", "/etc/passwd", "", "a/b", ".hidden"])
def test_logged_burn_writes_only_into_its_own_directory(name):
    with pytest.raises(InvalidArgument) as info:
        LOGGED_BURN.check_params({"units": 1, "tag": 0, "log": name})
    assert info.value.field == "params.log"


def test_burn_units_is_the_peers_single_loop():
    x = 0
    for i in range(BURN_ITERS_PER_UNIT * 3):
        x += i * i
    assert burn_units(3) == x


# -- records -------------------------------------------------------------------------------------


def make_record(workload: str, metrics: dict | None, rep: int = 1, error: str | None = None, **extra) -> dict:
    record = records.new_record(
        workload, "edge", rep, conditions={"n": 5}, gate={"gate": "off", "load1": 0.5, "gate_ok": True}, load1=0.5
    )
    sample = {
        "rss_peak_mb": 400.0,
        "rss_peak_nproc": 9,
        "rss_peak_parts_mb": {"worker-1": 140.0, "envoy": 60.0, "client": 50.0},
        "services_rss_base_mb": {"mysql": 200.0, "rabbitmq": 480.0},
        "services_rss_peak_mb": {"mysql": 201.0, "rabbitmq": 481.0},
        "foreign_cpu_pct": 1.5,
        "foreign_top": [],
    }
    headline = wl.WORKLOADS[workload].headline
    record = records.finish_record(
        record, metrics=metrics, headline=headline, error=error, sample=sample, load1=0.7, versions_={"python": "3"}
    )
    record.update(extra)
    return record


def test_a_record_has_the_peers_schema_and_round_trips_through_its_result_line():
    record = make_record("W1", {"tasks_per_s": 900.0, "submit_per_s": 1200.0, "elapsed_s": 5.5, "n": 5000})
    assert set(records.REQUIRED_FIELDS) <= set(record)
    assert record["system"] == "gridmesh" and record["ok"] is True and record["headline"] == "tasks_per_s"
    line = records.result_line(record)
    assert line.startswith("RESULT {") and "\n" not in line
    assert records.parse_result_lines(["noise", line, "RESULT-not"]) == [record]
    json.dumps(record)  # plain JSON all the way down


def test_a_failed_run_is_a_record_that_is_not_ok():
    record = make_record("W2", None, error="BenchError: the WatchTasks stream broke")
    assert record["ok"] is False and record["metrics"] == {} and "broke" in record["error"]


def test_records_append_as_json_lines_and_discarded_ones_do_not_count(tmp_path):
    out = tmp_path / "gridmesh.jsonl"
    first = make_record("W1", {"tasks_per_s": 1.0}, discarded="foreign CPU 9%")
    second = make_record("W1", {"tasks_per_s": 2.0})
    records.append_jsonl(out, first)
    records.append_jsonl(out, second)
    back = [json.loads(line) for line in out.read_text().splitlines()]
    assert back == [first, second]
    assert records.kept(back) == [second]


# -- the table -------------------------------------------------------------------------------------


def w2(p50: float, rep: int) -> dict:
    return make_record("W2", {"p50_ms": p50, "p90_ms": p50 + 1, "p99_ms": p50 + 2, "n": 500}, rep)


def test_the_table_shows_medians_and_min_max_over_the_kept_reps():
    rs = [w2(2.0, 1), w2(4.0, 2), w2(3.0, 3), make_record("W2", {"p50_ms": 99.0}, 3, discarded="foreign CPU 40%")]
    text = table.render(rs)
    row = next(line for line in text.splitlines() if line.startswith("| edge"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:6] == ["edge", "3.00", "2.00..4.00", "4.00", "5.00", "4.00..6.00"]
    assert cells[6] == "3/3"
    assert "99" not in row
    assert "### W2 latency" in text and "### Memory" in text


def test_the_w4_table_sums_lost_and_duplicates_and_counts_exactly_once_reps():
    good = {"completed": 200, "lost": 0, "duplicate_effects": 0, "reexecuted": 1, "exactly_once": True}
    bad = {"completed": 199, "lost": 1, "duplicate_effects": 0, "reexecuted": 0, "exactly_once": False}
    rs = [
        make_record("W4", {**good, "recovery_s": 0.05, "makespan_s": 2.1}, 1),
        make_record("W4", {**bad, "recovery_s": None, "makespan_s": 2.3}, 2),
    ]
    row = next(line for line in table.render(rs).splitlines() if line.startswith("| edge"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:9] == ["0.050", "0.050..0.050", "0.050, -", "200, 199", "1", "0", "1", "1/2"]


def test_the_conditions_say_when_the_gate_was_not_met():
    record = make_record("W2", {"p50_ms": 1.0, "p90_ms": 1.0, "p99_ms": 1.0})
    record["gate"] = {"gate": "case", "load1": 1.8, "gate_ok": False}
    assert (
        table.conditions([record])
        == "gate load1 1.80..1.80; gate NOT met in 1/1; load1@start 0.50..0.50; foreign CPU ≤2%"
    )


def test_a_workload_whose_reps_all_failed_shows_the_error():
    text = table.render([make_record("W3", None, error="BenchError: no worker node\nmore")])
    assert "| edge | failed: BenchError: no worker node |" in text
    assert "0/1" in text


def test_fmt_keeps_three_significant_places_for_small_numbers():
    values = (None, 1234.5, 12.345, 1.2345, 0.12345, 0.0)
    assert [table.fmt(x) for x in values] == ["-", "1,234", "12.3", "1.23", "0.123", "0"]


def test_peer_metric_names_cover_what_the_peers_report_reads():
    assert records.PEER_METRICS["W4"][:6] == (
        "completed",
        "lost",
        "duplicate_effects",
        "reexecuted",
        "exactly_once",
        "recovery_s",
    )
    for workload, names in records.PEER_METRICS.items():
        assert wl.WORKLOADS[workload].headline in names


# -- options and the command line -------------------------------------------------------------------


def test_w4_gets_more_reps_unless_one_rep_was_asked_for():
    assert BenchOptions(workloads=("W4",), reps=3).reps_of("W4") == 5
    assert BenchOptions(workloads=("W4",), reps=1).reps_of("W4") == 1
    assert BenchOptions(workloads=("W1",), reps=3).reps_of("W1") == 3


def test_the_bench_command_parses_workloads_in_any_case_and_lists_every_workload(capsys):
    args = build_parser().parse_args(["bench", "w1", "E1", "--quick", "--reps", "1", "--gate", "off", "--direct"])
    assert (args.workloads, args.quick, args.reps, args.gate, args.direct) == (["W1", "E1"], True, 1, "off", True)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "--help"])
    assert "R1  replication throughput" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "W9"])
    assert callable(add_bench_command)


def test_the_progress_line_draws_a_bar():
    from gridmesh.bench.measure import Tally

    with open(os.devnull, "w") as devnull:
        progress = ProgressLine(stream=devnull)
        try:
            progress.begin("W1 rep 1/3", Tally(total=100, done_fn=lambda: 25))
            assert progress.line().startswith("  W1 rep 1/3 [######..................] 25/100")
        finally:
            progress.close()


# -- the machine -----------------------------------------------------------------------------------------


def test_cpu_used_counts_deltas_new_processes_and_reused_pids_but_not_kernel_threads():
    start = {10: (1.0, 5.0, 1, "a"), 11: (1.0, 5.0, 1, "b"), 12: (1.0, 9.0, 2, "kworker")}
    end = {
        10: (1.0, 6.0, 1, "a"),  # used 1 s
        11: (50.0, 0.5, 1, "b2"),  # pid reused by a process born during the window
        12: (1.0, 12.0, 2, "kworker"),  # kernel thread
        13: (60.0, 0.25, 1, "new"),
        14: (1.0, 3.0, 1, "mine"),
    }
    used = machine.cpu_used(start, end, since=49.5, skip=lambda pid: pid == 14)
    assert used == {"a[10]": 1.0, "b2[11]": 0.5, "new[13]": 0.25}


@pytest.fixture
def sleepers():
    procs = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) for _ in range(2)]
    yield procs
    for proc in procs:
        proc.kill()
        proc.wait()


def test_the_sampler_sums_our_rss_per_part_and_keeps_services_apart(sleepers):
    client, service = (p.pid for p in sleepers)
    ticks = []

    def stopped() -> bool:
        ticks.append(1)
        return len(ticks) > 3

    result = sample(machine.ProcessMap({"client": [client]}, {"mysql": [service]}, []), 0.01, stopped)
    assert result["rss_peak_mb"] > 1 and result["rss_peak_nproc"] == 1
    assert set(result["rss_peak_parts_mb"]) == {"client"}
    assert result["services_rss_peak_mb"]["mysql"] >= result["services_rss_base_mb"]["mysql"] > 1
    assert {"foreign_cpu_pct", "foreign_top", "ours_cpu_s", "services_cpu_s", "sample_wall_s"} <= set(result)


def test_the_sampler_stops_when_the_bench_is_gone(sleepers):
    client = sleepers[0]
    client.kill()
    client.wait()
    started = time.monotonic()
    result = sample(machine.ProcessMap({"client": [client.pid]}, {}, []), 0.01, lambda: time.monotonic() - started > 10)
    assert time.monotonic() - started < 5 and result["rss_peak_mb"] == 0


def test_process_map_survives_its_json_form():
    pm = machine.ProcessMap({"client": [1], "worker-1": [2, 3]}, {"mysql": [4]}, [5])
    assert machine.ProcessMap.from_json(pm.to_json()) == pm


def test_threads_are_not_left_behind_by_the_progress_line():
    before = threading.active_count()
    with open(os.devnull, "w") as devnull:
        ProgressLine(stream=devnull).close()
    deadline = time.monotonic() + 2
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() == before


def test_the_sampler_process_always_leaves_a_summary_even_when_stopped_at_once():
    sampler = Sampler(machine.ProcessMap({"client": [os.getpid()]}, {}, machine.ancestors(os.getpid())))
    assert sampler.ready
    result = sampler.stop()
    assert "sampler_error" not in result
    assert result["rss_peak_mb"] > 10 and result["rss_peak_parts_mb"]["client"] > 10
    assert sampler.stop() == {"sampler_error": "already stopped"}


def test_after_a_failed_submit_no_new_one_starts_and_none_in_flight_is_abandoned():
    started: list[int] = []
    finished: list[int] = []

    class FakeScheduler:
        async def SubmitTask(self, request, timeout, metadata=()):
            (result,) = (await self.SubmitTasks(scheduler_pb2.SubmitTasksRequest(requests=[request]), timeout)).results
            if result.HasField("error"):
                raise RuntimeError(result.error.message)
            return result.task

        async def SubmitTasks(self, batch, timeout, metadata=()):
            indexes = [int(request.result_dir) for request in batch.requests]
            started.extend(indexes)
            await asyncio.sleep(0.01 if 5 not in indexes else 0.001)
            response = scheduler_pb2.SubmitTasksResponse()
            for index in indexes:
                if index == 5:
                    response.results.add(error=status_pb2.Status(code=3, message="refused"))
                else:
                    finished.append(index)
                    response.results.add(task=common_pb2.Task(task_id=f"t{index}"))
            return response

    async def scenario() -> None:
        client = BenchClient("127.0.0.1:1")
        client.scheduler = FakeScheduler()  # type: ignore[assignment]
        answered: list[int] = []
        try:
            with pytest.raises((RuntimeError, BenchError), match="refused"):
                requests = (scheduler_pb2.SubmitTaskRequest(result_dir=str(i)) for i in range(100))
                await client.submit_all(requests, lambda i, _: answered.append(i), in_flight=8)
        finally:
            await client.close()
        assert sorted(finished) == sorted(answered) == sorted(set(started) - {5})
        assert len(started) < 20  # nothing new after the failure

    asyncio.run(scenario())
