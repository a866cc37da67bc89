"""SPEC §3 "Life-cycle log and analytics": the statistics definitions
(windows, queue wait, run time, busy time, percentiles, watermark) and the
checks of a GetStats range."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gridmesh.common.errors import InvalidArgument
from gridmesh.core.lifecycle import LifecycleKind as K
from gridmesh.core.stats import (
    Derived,
    Event,
    Fact,
    Summary,
    Window,
    aggregate,
    derive,
    percentile,
    prune_horizon,
    stats_query,
    summarize,
    watermark,
    window_of,
)

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def at(ms: float) -> datetime:
    return T0 + timedelta(milliseconds=ms)


def ev(task: str, attempt: int, kind: K, ms: float, worker: str = "w1", task_type: str = "noop") -> Event:
    return Event(task, attempt, kind, task_type, worker, at(ms))


def facts(events: list[Event]) -> list[Fact]:
    derived = derive(events)
    return [Fact(e.kind, e.task_type, e.worker_id, derived[e.key]) for e in events]


def test_windows_are_tumbling_and_aligned_to_the_epoch():
    w = window_of(datetime(2026, 3, 1, 12, 0, 59, 999_999, tzinfo=UTC), 60)
    assert w == Window(datetime(2026, 3, 1, 12, 0, tzinfo=UTC), datetime(2026, 3, 1, 12, 1, tzinfo=UTC))
    assert window_of(w.end, 60).start == w.end
    assert window_of(datetime(2026, 3, 1, 12, 7, 30, tzinfo=UTC), 300).start == datetime(2026, 3, 1, 12, 5, tzinfo=UTC)


def test_queue_wait_is_pending_to_started_and_run_time_started_to_completed():
    events = [ev("a", 1, K.PENDING, 0), ev("a", 1, K.STARTED, 250), ev("a", 1, K.COMPLETED, 1250)]
    derived = derive(events)
    assert derived[("a", 1, K.STARTED)].wait_ms == 250
    assert derived[("a", 1, K.COMPLETED)] == Derived(run_ms=1000, busy_ms=1000, busy_worker="w1")
    assert derived[("a", 1, K.PENDING)] == Derived()


def test_a_retried_attempt_waits_from_its_retry_and_the_crashed_attempt_counts_as_busy_time():
    events = [
        ev("a", 1, K.PENDING, 0),
        ev("a", 1, K.STARTED, 100, worker="w1"),
        ev("a", 1, K.RETRIED, 600, worker="w1"),
        ev("a", 2, K.STARTED, 700, worker="w2"),
        ev("a", 2, K.COMPLETED, 1700, worker="w2"),
    ]
    derived = derive(events)
    assert derived[("a", 1, K.STARTED)].wait_ms == 100
    assert derived[("a", 2, K.STARTED)].wait_ms == 100  # 600 -> 700, not from pending
    assert derived[("a", 1, K.RETRIED)] == Derived(busy_ms=500, busy_worker="w1")
    assert derived[("a", 2, K.COMPLETED)] == Derived(run_ms=1000, busy_ms=1000, busy_worker="w2")


def test_derived_figures_do_not_depend_on_arrival_order_or_duplicates():
    events = [ev("a", 1, K.PENDING, 0), ev("a", 1, K.STARTED, 40), ev("a", 1, K.COMPLETED, 90)]
    assert derive(events) == derive(list(reversed(events)) + events)


def test_an_event_whose_partner_is_missing_contributes_only_its_count():
    derived = derive([ev("a", 1, K.STARTED, 40), ev("b", 1, K.COMPLETED, 90)])
    assert derived[("a", 1, K.STARTED)] == Derived()
    assert derived[("b", 1, K.COMPLETED)] == Derived()


def test_clock_skew_never_gives_a_negative_duration():
    derived = derive([ev("a", 1, K.PENDING, 500), ev("a", 1, K.STARTED, 400)])
    assert derived[("a", 1, K.STARTED)].wait_ms == 0


def test_percentiles_interpolate_between_ranks():
    ordered = [float(v) for v in range(1, 101)]
    assert percentile(ordered, 0.5) == 50.5
    assert percentile(ordered, 0.95) == pytest.approx(95.05)
    assert percentile([7.0], 0.95) == 7.0
    assert summarize([]) == Summary()
    assert summarize([30, 10, 20]) == Summary(count=3, mean_ms=20, max_ms=30, p50_ms=20, p95_ms=29)


def test_a_window_counts_each_event_type_per_task_type_and_each_worker():
    events = [
        ev("a", 1, K.PENDING, 0),
        ev("a", 1, K.STARTED, 10, worker="w1"),
        ev("a", 1, K.COMPLETED, 110, worker="w1"),
        ev("b", 1, K.PENDING, 0),
        ev("b", 1, K.STARTED, 30, worker="w2"),
        ev("b", 1, K.FAILED, 80, worker="w2"),
        ev("c", 1, K.PENDING, 0, task_type="echo"),
    ]
    window = window_of(T0, 60)
    tasks, workers = aggregate(window, facts(events))
    echo, noop = tasks
    assert (echo.task_type, echo.pending, echo.started) == ("echo", 1, 0)
    assert noop.task_type == "noop"
    assert (noop.pending, noop.started, noop.completed, noop.failed, noop.retried) == (2, 2, 1, 1, 0)
    assert noop.queue_wait == summarize([10, 30])
    assert noop.run_time == summarize([100])
    assert [(w.worker_id, w.completed, w.busy_ms) for w in workers] == [("w1", 1, 100), ("w2", 0, 50)]


def test_watermark_trails_the_latest_event_time_and_pruning_keeps_whole_windows():
    assert watermark(None, 600) is None
    mark = watermark(at(0), 600)
    assert mark == T0 - timedelta(minutes=10)
    horizon = prune_horizon(mark, 90, 60)
    assert horizon == datetime(2026, 3, 1, 11, 48, tzinfo=UTC)  # 11:48:30 rounded down to its window


NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_a_stats_range_defaults_to_the_last_hour():
    q = stats_query(None, None, "", NOW)
    assert (q.start, q.end, q.task_type) == (NOW - timedelta(hours=1), NOW, "")
    q = stats_query(None, NOW - timedelta(hours=3), "noop", NOW)
    assert q.start == NOW - timedelta(hours=4)


@pytest.mark.parametrize(
    ("start", "end", "task_type", "words"),
    [
        (NOW, NOW - timedelta(seconds=1), "", "must be before"),
        (NOW, NOW, "", "must be before"),
        (NOW - timedelta(days=40), NOW, "", "longer than 31 days"),
        (datetime(1970, 1, 1, tzinfo=UTC), None, "", "outside the years 2000-2100"),
        (None, datetime(2300, 1, 1, tzinfo=UTC), "", "outside the years 2000-2100"),
        (None, None, "x" * 129, "task_type"),
    ],
)
def test_an_inverted_or_absurd_stats_range_is_invalid_argument(start, end, task_type, words):
    with pytest.raises(InvalidArgument, match=words):
        stats_query(start, end, task_type, NOW)
