"""Schedules: ticks, catch-up, time zones and exactly one task per tick
across leaders (a real SchedulerCore on the in-memory store)."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from gridmesh.common.errors import InvalidArgument
from gridmesh.core.lifecycle import MemoryLifecycleLog
from gridmesh.core.scheduler import SchedulerCore, SchedulerSettings
from gridmesh.core.schedules import MISFIRE_GRACE_S, CatchUp, Schedules, ScheduleSpec, due_ticks, new_schedule
from gridmesh.core.submits import SubmitRequest
from gridmesh.core.tasktypes import default_registry
from gridmesh.scheduler.store import MemoryTaskStore

T0 = datetime(2026, 1, 5, 12, 0, 0, tzinfo=UTC)
NOOP = SubmitRequest("noop", {}, "ticks")


def every_second(catch_up: CatchUp, limit: int = 0):
    return new_schedule(ScheduleSpec(interval_s=1), NOOP, catch_up, limit, T0)


def test_an_interval_schedule_ticks_on_its_grid_and_fires_each_due_tick_once():
    schedule = every_second(CatchUp.SKIP)
    assert schedule.next_tick == T0 + timedelta(seconds=1)
    ticks, following = due_ticks(schedule, T0 + timedelta(seconds=2.5))
    assert ticks == [T0 + timedelta(seconds=1), T0 + timedelta(seconds=2)]
    assert following == T0 + timedelta(seconds=3)


@pytest.mark.parametrize(
    ("catch_up", "limit", "fired"),
    [
        (CatchUp.ALL, 0, list(range(1, 21))),  # every missed tick, then the ones within the grace
        (CatchUp.ALL, 3, [12, 13, 14, *range(15, 21)]),  # the latest 3 missed ones
        (CatchUp.SKIP, 0, list(range(15, 21))),  # none of the missed ones
        (CatchUp.ONCE, 0, list(range(15, 21))),  # on-time ticks stand for the missed ones
    ],
)
def test_missed_ticks_follow_the_catch_up_policy(catch_up, limit, fired):
    schedule = every_second(catch_up, limit)
    now = T0 + timedelta(seconds=20)  # a leader away for 20 s: ticks older than the grace are missed
    assert MISFIRE_GRACE_S == 5.0
    ticks, following = due_ticks(schedule, now)
    assert ticks == [T0 + timedelta(seconds=n) for n in fired]
    assert following == T0 + timedelta(seconds=21)


def test_once_runs_the_latest_missed_tick_when_none_is_on_time():
    schedule = every_second(CatchUp.ONCE)
    schedule = dataclasses.replace(schedule, spec=ScheduleSpec(interval_s=60), next_tick=T0 + timedelta(seconds=60))
    ticks, following = due_ticks(schedule, T0 + timedelta(minutes=10, seconds=30))
    assert ticks == [T0 + timedelta(minutes=10)] and following == T0 + timedelta(minutes=11)


def test_a_cron_schedule_ticks_in_its_time_zone_across_a_daylight_saving_change():
    spec = ScheduleSpec(cron="30 9 * * *", time_zone="Europe/Berlin")
    before_dst = datetime(2026, 3, 27, 12, 0, tzinfo=UTC)
    ticks = spec.ticks_after(before_dst, before_dst)
    assert [next(ticks) for _ in range(3)] == [
        datetime(2026, 3, 28, 8, 30, tzinfo=UTC),  # 09:30 CET
        datetime(2026, 3, 29, 7, 30, tzinfo=UTC),  # 09:30 CEST
        datetime(2026, 3, 30, 7, 30, tzinfo=UTC),
    ]


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (ScheduleSpec(cron="61 * * * *"), "cron"),
        (ScheduleSpec(cron="every day"), "cron"),
        (ScheduleSpec(cron="0 9 * * *", time_zone="Mars/Olympus"), "time_zone"),
        (ScheduleSpec(cron="0 9 * * *", interval_s=60), "cron"),
        (ScheduleSpec(), "cron"),
        (ScheduleSpec(interval_s=0.5), "interval"),
    ],
)
def test_bad_schedules_are_refused_naming_the_field(spec, field):
    with pytest.raises(InvalidArgument) as info:
        new_schedule(spec, NOOP, CatchUp.SKIP, 0, T0)
    assert info.value.field == field


class Clock:
    def __init__(self) -> None:
        self.at = T0

    def __call__(self) -> datetime:
        return self.at


def leader(store: MemoryTaskStore, clock: Clock) -> tuple[SchedulerCore, Schedules]:
    core = SchedulerCore(store, MemoryLifecycleLog(), default_registry(), SchedulerSettings(), now=clock)
    return core, Schedules(store, core.submit, core.check_submit, clock)


def test_a_tick_fired_again_by_a_new_leader_that_lost_the_progress_makes_no_second_task():
    async def body() -> None:
        store, clock = MemoryTaskStore(), Clock()
        core, schedules = leader(store, clock)
        await core.load()
        created = await schedules.create(ScheduleSpec(interval_s=1), NOOP, CatchUp.ALL, 0)
        saved = store.schedules[created.schedule_id].snapshot()  # the progress as stored before the tick
        clock.at = T0 + timedelta(seconds=1)
        assert await schedules.fire_due() == 1
        first = schedules.get(created.schedule_id).last_task_id
        # The leader dies after submitting, before its save reached the store.
        store.schedules[created.schedule_id] = saved
        successor, again = leader(store, clock)
        await successor.load()
        await again.load()
        assert await again.fire_due() == 1
        assert again.get(created.schedule_id).last_task_id == first  # the same task: its idempotency key
        assert len([t for t in store.rows.values() if t.task_type == "noop"]) == 1

    asyncio.run(body())


def test_a_paused_schedule_fires_nothing_and_on_resume_its_catch_up_decides():
    async def body() -> None:
        store, clock = MemoryTaskStore(), Clock()
        core, schedules = leader(store, clock)
        await core.load()
        created = await schedules.create(ScheduleSpec(interval_s=1), NOOP, CatchUp.SKIP, 0)
        await schedules.pause(created.schedule_id)
        clock.at = T0 + timedelta(seconds=30)
        assert schedules.seconds_to_next() is None and await schedules.fire_due() == 0
        await schedules.resume(created.schedule_id)
        assert await schedules.fire_due() == 6  # the ticks within the grace; the missed ones skipped
        await schedules.delete(created.schedule_id)
        assert schedules.list() == [] and store.schedules == {}

    asyncio.run(body())


def test_a_template_is_checked_as_a_submit_and_takes_no_key_or_timing():
    async def body() -> None:
        store, clock = MemoryTaskStore(), Clock()
        core, schedules = leader(store, clock)
        await core.load()
        with pytest.raises(InvalidArgument) as info:
            await schedules.create(ScheduleSpec(interval_s=5), SubmitRequest("nope", {}, "x"), CatchUp.SKIP, 0)
        assert info.value.field == "task_type"
        keyed = SubmitRequest("noop", {}, "x", idempotency_key="k")
        with pytest.raises(InvalidArgument) as info:
            await schedules.create(ScheduleSpec(interval_s=5), keyed, CatchUp.SKIP, 0)
        assert info.value.field == "task" and store.schedules == {}

    asyncio.run(body())
