"""The one backed-off pause every retry loop uses (gridmesh.common.backoff)."""

from __future__ import annotations

import itertools

import pytest

from gridmesh.common.backoff import Backoff


def test_ceilings_grow_by_the_multiplier_up_to_the_cap() -> None:
    backoff = Backoff(initial_s=0.25, max_s=5.0)
    assert [backoff.ceiling_s(n) for n in range(7)] == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert [Backoff(1.0, 100.0, multiplier=3).ceiling_s(n) for n in range(4)] == [1, 3, 9, 27]


def test_a_pause_is_drawn_between_half_its_ceiling_and_all_of_it() -> None:
    backoff = Backoff(initial_s=1.0, max_s=30.0)
    assert backoff.pause_s(2, lambda: 0.0) == 2.0
    assert backoff.pause_s(2, lambda: 1.0) == 4.0
    assert backoff.pause_s(2, lambda: 0.5) == 3.0
    # Drawn anew each time: processes cut off together come back apart.
    assert len({backoff.pause_s(3) for _ in range(20)}) > 1
    assert all(4.0 <= backoff.pause_s(3) <= 8.0 for _ in range(200))


def test_pauses_run_on_without_end_and_restart_from_the_shortest() -> None:
    backoff = Backoff(initial_s=0.1, max_s=1.0)
    assert list(itertools.islice(backoff.pauses(lambda: 1.0), 6)) == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert next(backoff.pauses(lambda: 1.0)) == 0.1


def test_a_long_outage_never_overflows() -> None:
    backoff = Backoff(initial_s=0.05, max_s=2.0, multiplier=10)
    assert backoff.ceiling_s(10_000) == 2.0
