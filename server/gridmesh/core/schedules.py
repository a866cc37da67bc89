"""Schedules: a task template submitted at every tick of a cron expression
(in a time zone) or of a fixed interval.

Each tick creates exactly one task, however often the Scheduler fails over or
restarts around it: the tick's submit carries the idempotency key
``schedule:<id>:<tick time>``, so a tick submitted again (its leader died
before it saved the schedule's progress) answers the task the first submit
made. Ticks that were due while no Scheduler led (or the schedule was paused)
follow the schedule's catch-up policy: ``SKIP`` them, run ``ONCE`` for all
of them, or run ``ALL`` of them up to ``catch_up_limit``. A tick is missed
when it is found more than :data:`MISFIRE_GRACE_S` after it was due.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from gridmesh.common.errors import GridmeshError, InvalidArgument, NotFound, ResourceExhausted
from gridmesh.common.names import check_uuid
from gridmesh.core.submits import SubmitRequest
from gridmesh.core.tasks import Task

log = logging.getLogger(__name__)

MISFIRE_GRACE_S = 5.0
"""A tick found later than this after it was due counts as missed."""
MIN_INTERVAL_S = 1.0
MAX_CATCH_UP = 1000
DEFAULT_CATCH_UP_LIMIT = 100
MAX_SCHEDULES = 10_000


class CatchUp(enum.IntEnum):
    """What happens to ticks missed while no Scheduler led (or while paused)."""

    UNSPECIFIED = 0
    SKIP = 1
    """Run none of them; go on from the next tick."""
    ONCE = 2
    """Run one task for all of them (the latest missed tick)."""
    ALL = 3
    """Run every one of them, up to ``catch_up_limit``, the latest ones."""


@dataclass(frozen=True)
class ScheduleSpec:
    """When a schedule ticks: a cron expression in a time zone, or a fixed interval."""

    cron: str = ""
    """Five fields (minute hour day month weekday), or six with seconds last."""
    time_zone: str = "UTC"
    interval_s: float = 0.0

    def check(self) -> None:
        if bool(self.cron) == bool(self.interval_s):
            raise InvalidArgument("give a schedule either cron or interval", field="cron")
        if self.cron:
            if len(self.cron.split()) not in (5, 6) or not croniter.is_valid(self.cron):
                raise InvalidArgument(
                    f"cron {self.cron!r} is not a cron expression such as '*/5 * * * *' (minute hour day month "
                    "weekday, and optionally seconds)",
                    field="cron",
                )
            try:
                ZoneInfo(self.time_zone)
            except (ZoneInfoNotFoundError, ValueError):
                raise InvalidArgument(
                    f"time_zone {self.time_zone!r} is not an IANA time zone such as Europe/Berlin", field="time_zone"
                ) from None
        elif not MIN_INTERVAL_S <= self.interval_s <= 366 * 86_400:
            raise InvalidArgument(
                f"interval must be between {MIN_INTERVAL_S:g} s and a year, got {self.interval_s:g} s",
                field="interval",
            )

    def ticks_back_from(self, at: datetime, anchor: datetime) -> Iterator[datetime]:
        """The ticks at or before ``at``, newest first (UTC)."""
        if self.interval_s:
            step = timedelta(seconds=self.interval_s)
            n = int((at - anchor) / step)
            while n >= 0:
                yield anchor + n * step
                n -= 1
        else:
            it = croniter(self.cron, (at + timedelta(microseconds=1)).astimezone(ZoneInfo(self.time_zone)))
            while True:
                yield it.get_prev(datetime).astimezone(UTC)

    def ticks_after(self, after: datetime, anchor: datetime) -> Iterator[datetime]:
        """The ticks after ``after``, in order (UTC). An interval ticks at
        ``anchor + n * interval``."""
        if self.interval_s:
            step = timedelta(seconds=self.interval_s)
            n = max(0, int((after - anchor) / step) + 1)
            while True:
                tick = anchor + n * step
                if tick > after:
                    yield tick
                n += 1
        else:
            it = croniter(self.cron, after.astimezone(ZoneInfo(self.time_zone)))
            while True:
                yield it.get_next(datetime).astimezone(UTC)


@dataclass
class Schedule:
    schedule_id: str
    spec: ScheduleSpec
    template: SubmitRequest
    """The submit every tick makes (with the tick's idempotency key)."""
    catch_up: CatchUp
    catch_up_limit: int
    created_at: datetime
    next_tick: datetime
    """The next tick to fire."""
    paused: bool = False
    last_tick: datetime | None = None
    last_task_id: str = ""

    def snapshot(self) -> Schedule:
        return dataclasses.replace(self)


def tick_key(schedule_id: str, tick: datetime) -> str:
    """The idempotency key of a tick's task: the same for the same tick on any leader."""
    return f"schedule:{schedule_id}:{tick.astimezone(UTC).strftime('%Y%m%dT%H%M%S.%fZ')}"


def new_schedule(
    spec: ScheduleSpec, template: SubmitRequest, catch_up: CatchUp, catch_up_limit: int, now: datetime
) -> Schedule:
    """A checked new schedule, its first tick the first after ``now``."""
    spec.check()
    catch_up = CatchUp.SKIP if catch_up is CatchUp.UNSPECIFIED else catch_up
    limit = catch_up_limit or DEFAULT_CATCH_UP_LIMIT
    if not 1 <= limit <= MAX_CATCH_UP:
        raise InvalidArgument(f"catch_up_limit must be between 1 and {MAX_CATCH_UP}", field="catch_up_limit")
    return Schedule(
        schedule_id=str(uuid.uuid4()),
        spec=spec,
        template=template,
        catch_up=catch_up,
        catch_up_limit=limit,
        created_at=now,
        next_tick=next(spec.ticks_after(now, now)),
    )


def due_ticks(schedule: Schedule, now: datetime) -> tuple[list[datetime], datetime]:
    """The ticks of ``schedule`` to fire now, oldest first, and its next tick
    after now. Missed ticks (found later than the grace) follow its catch-up
    policy; a tick within the grace always fires. Ticks are walked back from
    now, so a long outage costs at most ``catch_up_limit`` of them."""
    grace = now - timedelta(seconds=MISFIRE_GRACE_S)
    keep = {CatchUp.ALL: schedule.catch_up_limit, CatchUp.ONCE: 1}.get(schedule.catch_up, 0)
    on_time: list[datetime] = []
    missed: list[datetime] = []
    for tick in schedule.spec.ticks_back_from(now, schedule.created_at):
        if tick < schedule.next_tick:
            break
        if tick >= grace:
            on_time.append(tick)
        elif len(missed) < keep:
            missed.append(tick)
        else:
            break
    if schedule.catch_up is CatchUp.ONCE and on_time:
        missed = []  # the on-time ticks stand for the missed ones
    following = next(schedule.spec.ticks_after(now, schedule.created_at))
    return sorted(missed + on_time), following


def find(schedules: dict[str, Schedule], schedule_id: str) -> Schedule:
    schedule_id = check_uuid(schedule_id, "schedule_id")
    schedule = schedules.get(schedule_id)
    if schedule is None:
        raise NotFound(f"schedule {schedule_id} does not exist")
    return schedule


class ScheduleStore(Protocol):
    async def load_schedules(self) -> list[Schedule]: ...

    async def save_schedule(self, schedule: Schedule) -> None:
        """Insert or update the schedule (its whole row), committed on return."""

    async def delete_schedule(self, schedule_id: str) -> None: ...


class Schedules:
    """The leader's schedules: created, listed, paused, resumed, deleted, and
    fired when due (:meth:`fire_due`, called by the leader's timer loop)."""

    def __init__(
        self,
        store: ScheduleStore,
        submit: Callable[[SubmitRequest], Awaitable[Task]],
        check: Callable[[SubmitRequest], object],
        now: Callable[[], datetime],
    ) -> None:
        self._store = store
        self._submit = submit
        self._check = check
        self._now = now
        self._schedules: dict[str, Schedule] = {}
        self.changed = asyncio.Event()
        """Set when a schedule is created or resumed (the timer may have to wake sooner)."""

    async def load(self) -> int:
        self._schedules = {s.schedule_id: s for s in await self._store.load_schedules()}
        self.changed.set()
        return len(self._schedules)

    async def create(
        self, spec: ScheduleSpec, template: SubmitRequest, catch_up: CatchUp, catch_up_limit: int
    ) -> Schedule:
        if template.idempotency_key or template.deadline or template.not_before or template.delay_s:
            raise InvalidArgument(
                "a schedule's task template takes no idempotency_key, deadline, not_before or delay "
                "(each tick's task gets its own key)",
                field="task",
            )
        if len(self._schedules) >= MAX_SCHEDULES:
            raise ResourceExhausted(f"the mesh holds {MAX_SCHEDULES} schedules, its limit; delete some first")
        self._check(template)
        schedule = new_schedule(spec, template, catch_up, catch_up_limit, self._now())
        await self._store.save_schedule(schedule)
        self._schedules[schedule.schedule_id] = schedule
        self.changed.set()
        return schedule.snapshot()

    def list(self) -> list[Schedule]:
        return [s.snapshot() for s in sorted(self._schedules.values(), key=lambda s: s.created_at)]

    def get(self, schedule_id: str) -> Schedule:
        return find(self._schedules, schedule_id).snapshot()

    async def pause(self, schedule_id: str) -> Schedule:
        schedule = find(self._schedules, schedule_id)
        if not schedule.paused:
            schedule.paused = True
            await self._store.save_schedule(schedule)
        return schedule.snapshot()

    async def resume(self, schedule_id: str) -> Schedule:
        """Ticks that fell due while it was paused are missed: its catch-up policy decides."""
        schedule = find(self._schedules, schedule_id)
        if schedule.paused:
            schedule.paused = False
            await self._store.save_schedule(schedule)
            self.changed.set()
        return schedule.snapshot()

    async def delete(self, schedule_id: str) -> None:
        schedule = find(self._schedules, schedule_id)
        await self._store.delete_schedule(schedule.schedule_id)
        del self._schedules[schedule.schedule_id]

    def seconds_to_next(self) -> float | None:
        """How long until the next tick of a running schedule (None: none)."""
        ticks = [s.next_tick for s in self._schedules.values() if not s.paused]
        return max(0.0, (min(ticks) - self._now()).total_seconds()) if ticks else None

    async def fire_due(self) -> int:
        """Submit the task of every due tick (by its catch-up policy), then
        save each schedule's progress; returns how many tasks were submitted."""
        now = self._now()
        fired = 0
        for schedule in list(self._schedules.values()):
            if schedule.paused or schedule.next_tick > now:
                continue
            ticks, following = due_ticks(schedule, now)
            for tick in ticks:
                request = dataclasses.replace(schedule.template, idempotency_key=tick_key(schedule.schedule_id, tick))
                try:
                    task = await self._submit(request)
                except GridmeshError as e:  # its type unregistered since, say: the tick is lost, said so
                    log.warning("schedule %s: the tick of %s was refused: %s", schedule.schedule_id, tick, e)
                    continue
                schedule.last_tick, schedule.last_task_id = tick, task.task_id
                fired += 1
            schedule.next_tick = following
            if schedule.schedule_id in self._schedules:  # not deleted meanwhile
                await self._store.save_schedule(schedule)
        return fired


__all__ = [
    "DEFAULT_CATCH_UP_LIMIT",
    "MISFIRE_GRACE_S",
    "CatchUp",
    "Schedule",
    "ScheduleSpec",
    "ScheduleStore",
    "Schedules",
    "due_ticks",
    "find",
    "new_schedule",
    "tick_key",
]
