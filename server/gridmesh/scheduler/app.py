"""Composition root of the Scheduler process.

Threads: the gRPC server and :class:`SchedulerCore` run on the asyncio loop;
MySQL runs on the store's writer thread and reader pool, kazoo on its own
threads (the election blocks one of them), confluent-kafka on its delivery
thread. Results cross back to the loop with ``call_soon_threadsafe``.

High availability: every Scheduler joins a ZooKeeper election. The leader
loads the durable state from MySQL and serves (health SERVING); a standby
answers NOT_SERVING (so Envoy routes to the leader) and UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import psutil

from gridmesh.adapters import kafka
from gridmesh.adapters.kafka import KafkaLifecycleLog
from gridmesh.adapters.mysql import MySQL
from gridmesh.adapters.zookeeper import ZooKeeper
from gridmesh.config import MeshConfig
from gridmesh.core.access import PeerRole
from gridmesh.core.lifecycle import LifecycleKind, LifecycleLog
from gridmesh.core.scheduler import ResultCleaner, SchedulerCore, SchedulerSettings, TaskStore
from gridmesh.core.schedules import Schedules, ScheduleStore
from gridmesh.core.stats import StatsReader
from gridmesh.core.tasktypes import TaskTypeRegistry, default_registry
from gridmesh.grpc_support.server import (
    GrpcHost,
    build_grpc_server,
    export_metrics,
    run_process,
    serve_until_signal,
)
from gridmesh.grpc_support.tls import MeshTls
from gridmesh.observability import metrics
from gridmesh.observability.metrics import MeteredLifecycleLog
from gridmesh.scheduler.results import StoreKeeperResults
from gridmesh.scheduler.servicer import CoreHolder, SchedulerServicer, WorkQueueServicer
from gridmesh.scheduler.stats import MySQLStatsReader
from gridmesh.scheduler.store import MySQLTaskStore
from gridmesh.v1 import scheduler_pb2, scheduler_pb2_grpc

log = logging.getLogger(__name__)

SERVICES = (
    scheduler_pb2.DESCRIPTOR.services_by_name["Scheduler"].full_name,
    scheduler_pb2.DESCRIPTOR.services_by_name["WorkQueue"].full_name,
)
ELECTION_PATH = "scheduler/election"
LIFECYCLE_SAVE_INTERVAL_S = 1.0
"""How often the leader keeps the life-cycle log's acknowledged position."""
REAP_INTERVAL_S = 1.0
"""How often a standby looks for election nodes of dead Schedulers on its machine."""
STEP_DOWN_WRITES_TIMEOUT_S = 30.0
"""Longest a Scheduler stepping down waits for the writes of its term (the
database's own retries end sooner) before it gives up the election."""


def settings_of(config: MeshConfig) -> SchedulerSettings:
    s = config.scheduler
    return SchedulerSettings(
        lease_ttl_s=s.lease_ttl_s,
        heartbeat_interval_s=s.heartbeat_interval_s,
        default_max_attempts=s.default_max_attempts,
        max_params_bytes=s.max_params_bytes,
        result_ttl_s=s.result_ttl_s,
    )


def watch_core(holder: CoreHolder) -> None:
    """The Scheduler's gauges, read from the leading core at each scrape."""

    def oldest_age() -> float:
        core = holder.core
        oldest = core.oldest_queued_at() if core is not None else None
        return (datetime.now(UTC) - oldest).total_seconds() if oldest is not None else 0.0

    metrics.serve(metrics.SCHEDULER)
    metrics.gauge_from(metrics.LEADER, lambda: holder.core is not None)
    metrics.gauge_from(metrics.QUEUED, lambda: holder.core.queued if holder.core is not None else 0)
    metrics.gauge_from(metrics.OLDEST_QUEUED_AGE, oldest_age)
    metrics.register(metrics.QueueByKind(lambda: holder.core.queued_by_kind() if holder.core is not None else {}))
    metrics.gauge_from(metrics.WATCHERS, lambda: holder.core.watchers if holder.core is not None else 0)


def build_server(
    config: MeshConfig,
    holder: CoreHolder,
    registry: TaskTypeRegistry,
    tls: MeshTls | None,
    stats: StatsReader | None = None,
) -> GrpcHost:
    scheduler = SchedulerServicer(holder, registry, stats)
    work_queue = WorkQueueServicer(holder)
    return build_grpc_server(
        f"{config.scheduler.host}:{config.scheduler.port}",
        [
            lambda server: scheduler_pb2_grpc.add_SchedulerServicer_to_server(scheduler, server),
            lambda server: scheduler_pb2_grpc.add_WorkQueueServicer_to_server(work_queue, server),
        ],
        SERVICES,
        tls=tls,
    )


def _boot_id() -> str:
    """This kernel's boot id: equal only for processes of one machine, one boot."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def election_identifier(port: int) -> str:
    """``host:port:pid:boot id``: who a contender is, and where it runs."""
    return f"{socket.gethostname()}:{port}:{os.getpid()}:{_boot_id()}"


def dead_on_this_machine(identifier: str) -> bool:
    """Whether ``identifier`` names a Scheduler process of this machine and
    boot (same host name and boot id) whose pid no longer exists. Anything
    else — another machine, an older identifier, a pid now used by another
    process — is not known dead and waits out its session. (Containers of
    one kernel share its boot id but not their process tables: the host
    name tells them apart.)"""
    host, _, pid, boot = ([*identifier.split(":"), "", "", "", ""])[:4]
    ours = _boot_id()
    same_machine = bool(ours) and boot == ours and host == socket.gethostname()
    return same_machine and pid.isdigit() and not _running(int(pid))


def _running(pid: int) -> bool:
    """The process exists and is not a zombie (a killed one nobody reaped yet)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class LeaderStore(TaskStore, ScheduleStore, Protocol):
    """What a leader keeps: its tasks and its schedules."""


class Leadership:
    """Runs the ZooKeeper election on its own thread and switches this
    process between leading (a loaded core, SERVING) and standing by."""

    def __init__(
        self,
        *,
        host: GrpcHost,
        holder: CoreHolder,
        store: LeaderStore,
        lifecycle: LifecycleLog,
        registry: TaskTypeRegistry,
        settings: SchedulerSettings,
        zk: ZooKeeper,
        identifier: str,
        stop: asyncio.Event,
        results: ResultCleaner,
        sweep_interval_s: float,
        sweep_batch: int,
    ) -> None:
        self._host, self._holder, self._store = host, holder, store
        self._lifecycle, self._registry, self._settings = lifecycle, registry, settings
        self._zk, self._identifier, self._stop = zk, identifier, stop
        self._results, self._sweep_interval_s, self._sweep_batch = results, sweep_interval_s, sweep_batch
        self._loop = asyncio.get_running_loop()
        self._stepdown = threading.Event()
        self._quit = threading.Event()
        self._election = zk.election(ELECTION_PATH, identifier)
        self._thread = threading.Thread(target=self._campaign, name="scheduler-election", daemon=True)
        self._reaper = threading.Thread(target=self._reap, name="scheduler-election-reaper", daemon=True)
        self._expiry: asyncio.Task[None] | None = None
        self._timers: asyncio.Task[None] | None = None
        self._ticks: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        zk.on_session_lost.append(self._stepdown.set)

    def start(self) -> None:
        self._reaper.start()
        self._thread.start()

    def _reap(self) -> None:
        """While standing by: remove the election node of a Scheduler that is
        dead on this very machine (a kill -9 before a restart, say), so one
        here leads at once instead of after the dead one's session timeout."""
        while not self._quit.is_set():
            if self._holder.core is None:
                try:
                    for identifier in self._election.evict(dead_on_this_machine):
                        log.warning("Scheduler %s is dead on this machine: removed its election node", identifier)
                except Exception:
                    log.debug("could not look for dead Schedulers", exc_info=True)
            self._quit.wait(REAP_INTERVAL_S)

    def _campaign(self) -> None:
        while not self._quit.is_set():
            self._stepdown.clear()
            try:
                self._election.run(self._lead)
            except Exception:
                log.exception("leader election failed; retrying")
                self._quit.wait(1.0)

    def _lead(self) -> None:
        """Runs on the election thread while this process leads."""
        # A session lost while standing by set the flag, and the election was
        # won since in a new one: only a loss from now on ends this lead.
        self._stepdown.clear()
        if not self._election.held():
            log.warning("elected, but the election node is not this session's; contending again")
            self._quit.wait(REAP_INTERVAL_S)  # not at once: no hot loop if ZooKeeper keeps answering so
            return
        future = asyncio.run_coroutine_threadsafe(self._take_over(), self._loop)
        try:
            future.result()
        except Exception:
            log.exception("could not take over as leader; stopping")
            self._loop.call_soon_threadsafe(self._stop.set)
            return
        while not (self._stepdown.is_set() or self._quit.is_set()):
            self._stepdown.wait(0.5)
        asyncio.run_coroutine_threadsafe(self._step_down(), self._loop).result()

    async def _take_over(self) -> None:
        core = SchedulerCore(self._store, self._lifecycle, self._registry, self._settings)
        core.on_fatal = lambda error: self._stop.set()
        active = await core.load()
        self._holder.core = core
        self._expiry = asyncio.create_task(self._expire_leases(core))
        self._timers = asyncio.create_task(self._run_timers(core))
        schedules = Schedules(self._store, core.submit, core.check_submit, lambda: datetime.now(UTC))
        await schedules.load()
        self._holder.schedules = schedules
        self._ticks = asyncio.create_task(self._run_schedules(schedules))
        self._sweeper = asyncio.create_task(self._sweep(core))
        await self._host.set_serving(True)
        log.info("leading as %s with %d active tasks", self._identifier, active)

    async def _step_down(self) -> None:
        """Stop leading; returns once the last writes of this term are done,
        so that the election is given up (and a successor loads) only then."""
        log.warning("no longer the leader")
        await self._host.set_serving(False)
        core, self._holder.core = self._holder.core, None
        if core is not None:
            core.close()
        if self._expiry is not None:
            self._expiry.cancel()
        if self._timers is not None:
            self._timers.cancel()
        self._holder.schedules = None
        for job in (self._ticks, self._sweeper):
            if job is not None:
                job.cancel()
        if core is not None:
            try:
                await asyncio.wait_for(core.closed(), STEP_DOWN_WRITES_TIMEOUT_S)
            except TimeoutError:
                log.error("this term's writes unfinished after %.0f s; stepping down", STEP_DOWN_WRITES_TIMEOUT_S)

    async def _run_timers(self, core: SchedulerCore) -> None:
        """While leading: queue each delayed task when it is due, and end
        each queued task whose deadline passes, when it passes (woken sooner
        when a task with a nearer time is queued)."""
        while True:
            core.timers_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(core.timers_changed.wait(), core.seconds_to_next_timer())
            _, expired = core.run_timers()
            if expired:
                log.info("%d queued tasks passed their deadline: EXPIRED", expired)

    async def _sweep(self, core: SchedulerCore) -> None:
        """While leading: retention, in bounded batches (a full batch is
        followed by the next at once)."""
        while True:
            try:
                tasks, results, freed = await core.sweep(self._results, self._sweep_batch)
            except Exception as e:
                log.warning("retention sweep failed (%s); trying again later", e)
                tasks = 0
            else:
                if tasks:
                    log.info("retention deleted %d finished tasks and %d results (%d bytes)", tasks, results, freed)
                    metrics.SWEPT.labels("tasks").inc(tasks)
                    metrics.SWEPT.labels("results").inc(results)
                    metrics.SWEPT.labels("bytes").inc(freed)
            if tasks < self._sweep_batch:
                await asyncio.sleep(self._sweep_interval_s)

    async def _run_schedules(self, schedules: Schedules) -> None:
        """While leading: submit each schedule's task at each tick (woken
        sooner when a schedule is created or resumed). A failed pass (the
        database away) is tried again shortly: every tick's submit is
        idempotent, so none runs twice."""
        while True:
            schedules.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(schedules.changed.wait(), schedules.seconds_to_next())
            try:
                await schedules.fire_due()
            except Exception:
                log.warning("could not fire the due schedules; trying again", exc_info=True)
                await asyncio.sleep(1.0)

    async def _expire_leases(self, core: SchedulerCore) -> None:
        """While leading: expire leases, and keep the life-cycle log's
        acknowledged position (about every second)."""
        interval = min(1.0, self._settings.lease_ttl_s / 4)
        saved_at = 0.0
        while True:
            await asyncio.sleep(interval)
            metrics.LEASE_EXPIRIES.inc(core.expire_leases())
            now = self._loop.time()
            if now - saved_at >= LIFECYCLE_SAVE_INTERVAL_S:
                saved_at = now
                try:
                    await core.save_lifecycle_progress()
                except Exception:
                    log.warning("could not save the life-cycle position", exc_info=True)

    async def close(self) -> None:
        self._quit.set()
        self._stepdown.set()
        self._election.cancel()
        if self._holder.core is not None:
            await self._step_down()


async def serve(config: MeshConfig) -> None:
    registry = default_registry()
    store = MySQLTaskStore(MySQL(config.mysql_login("scheduler"), config.database("scheduler")))
    await asyncio.to_thread(store.setup)
    stats = MySQLStatsReader(
        MySQL(config.mysql_login("scheduler"), config.database("scheduler")), config.database("analytics")
    )
    # A start is counted by the node that ran it; the Scheduler's copy (see SchedulerCore.report) is not.
    producer = KafkaLifecycleLog(
        config.kafka, kafka.client_settings(config, PeerRole.SCHEDULER), lambda kind: config.topic(kind.value)
    )
    metrics.register(metrics.LifecycleProducer(producer.health))
    lifecycle = MeteredLifecycleLog(producer, uncounted=frozenset({LifecycleKind.STARTED}))
    zk = ZooKeeper(config.zookeeper, config.zk_root, config.zookeeper_password)
    await asyncio.to_thread(zk.start)

    holder = CoreHolder()
    watch_core(holder)
    tls = MeshTls.load(config, PeerRole.SCHEDULER)
    results = StoreKeeperResults(f"{config.storekeeper.host}:{config.storekeeper.port}", tls)
    host = build_server(config, holder, registry, tls, stats)
    stop = asyncio.Event()
    identifier = election_identifier(host.port)
    leadership = Leadership(
        host=host,
        holder=holder,
        store=store,
        lifecycle=lifecycle,
        registry=registry,
        settings=settings_of(config),
        zk=zk,
        identifier=identifier,
        stop=stop,
        results=results,
        sweep_interval_s=config.scheduler.sweep_interval_s,
        sweep_batch=config.scheduler.sweep_batch,
    )

    async def ready() -> None:
        await host.set_serving(False)  # a standby until elected
        leadership.start()

    async def close_adapters() -> None:
        await asyncio.to_thread(store.close)
        await asyncio.to_thread(stats.close)
        await asyncio.to_thread(lifecycle.close)
        await asyncio.to_thread(zk.stop)
        await results.close()

    host.stop_taking_work.append(leadership.close)
    host.close_adapters.append(close_adapters)
    export_metrics(host, config, "scheduler")
    await serve_until_signal(host, ready=ready, stop=stop)


def main(argv: list[str] | None = None) -> None:
    run_process(serve, "scheduler")


if __name__ == "__main__":
    main(sys.argv[1:])
