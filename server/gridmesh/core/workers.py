"""The worker registry: the nodes that pull work, their pull streams and
credit, and the leases they hold.

A lease is a task's current fencing token (a number that only grows, across
Schedulers) held by one node until ``lease_ttl_s`` after its last renewal.
A node's credit is its room: free slots, then prefetch (leases it may hold
beyond its slots, started once a slot frees). The registry picks which node
gets the next task (:meth:`WorkerRegistry.next_worker`) and asks prefetched
tasks back (:meth:`WorkerRegistry.ask_back`); *when* to do either is the
Scheduler's rule (:mod:`gridmesh.core.scheduler`).

Everything here runs on the Scheduler's event loop.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from gridmesh.common.errors import FailedPrecondition, GridmeshError, InvalidArgument, NotFound
from gridmesh.core.tasks import Task

log = logging.getLogger(__name__)


class WorkerState(enum.IntEnum):
    UNSPECIFIED = 0
    ACTIVE = 1
    DRAINING = 2
    OFFLINE = 3


# -- what the Scheduler sends a worker on its pull stream ---------------------------


@dataclass(frozen=True)
class Assignment:
    task: Task
    fencing_token: int
    lease_expires_at: datetime


@dataclass(frozen=True)
class CancelNotice:
    task_id: str
    fencing_token: int


@dataclass(frozen=True)
class TakeBack:
    """Asks a worker to give back a prefetched task it has not started."""

    task_id: str
    fencing_token: int


@dataclass(frozen=True)
class DrainNotice:
    """Tells a worker to drain: stop pulling, finish what it runs, deregister."""


@dataclass(frozen=True)
class ReportAck:
    """The answer to a report made on a worker's pull stream."""

    task_id: str
    fencing_token: int
    error: GridmeshError | None = None


LinkItem = Assignment | CancelNotice | TakeBack | DrainNotice | ReportAck
"""What the Scheduler sends a worker on its pull stream."""


@dataclass(frozen=True)
class HeartbeatResult:
    lost: list[tuple[str, int]]
    lease_expires_at: datetime
    reregister: bool = False


class WorkerLink:
    """The open pull stream of one worker: its credit and what to send it."""

    def __init__(self, worker_id: str) -> None:
        self.worker_id = worker_id
        self.credit = 0
        self.outbox: asyncio.Queue[LinkItem | None] = asyncio.Queue()
        """What to send the worker; None ends the stream."""
        self.closed = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.outbox.put_nowait(None)


@dataclass
class WorkerRecord:
    worker_id: str
    address: str
    slots: int
    task_types: tuple[str, ...]
    registered_at: datetime
    last_heartbeat: datetime
    state: WorkerState = WorkerState.ACTIVE
    link: WorkerLink | None = None
    leases: set[str] = field(default_factory=set)
    drain_requested: bool = False
    """DrainNode asked this node to drain; it stays DRAINING until it leaves."""
    prefetch: int = 0
    """Leases it may hold beyond its slots (tasks waiting there for a slot)."""
    asked_back: set[str] = field(default_factory=set)
    """Tasks it was asked to give back (a TakeBack is sent once per lease)."""

    @property
    def busy_slots(self) -> int:
        return min(len(self.leases), self.slots)

    @property
    def prefetched(self) -> int:
        """Leases beyond its slots not asked back yet: tasks that wait there."""
        return len(self.leases) - self.slots - len(self.asked_back)

    @property
    def free_slots(self) -> int:
        """Slots it has credited and no lease fills (credit beyond its prefetch room)."""
        credit = self.link.credit if self.link is not None and not self.link.closed else 0
        return max(0, min(credit, self.slots - len(self.leases)))

    def send(self, item: LinkItem) -> None:
        """Queue ``item`` on its pull stream, if it has one open."""
        if self.link is not None and not self.link.closed:
            self.link.outbox.put_nowait(item)


@dataclass
class Lease:
    worker_id: str
    token: int
    expires_at: float  # monotonic


class WorkerRegistry:
    """Registered nodes, their links and credit, and every lease."""

    def __init__(
        self,
        *,
        lease_ttl_s: float,
        heartbeat_interval_s: float,
        clock: Callable[[], float],
        now: Callable[[], datetime],
    ) -> None:
        self._lease_ttl_s = lease_ttl_s
        self._heartbeat_interval_s = heartbeat_interval_s
        self._clock = clock
        self._now = now
        self._workers: dict[str, WorkerRecord] = {}
        self._ready: deque[str] = deque()  # worker ids that may have credit, round-robin
        self._leases: dict[str, Lease] = {}
        self.last_token = 0
        """The newest fencing token handed out (a new leader continues from the stored one)."""

    # -- nodes ------------------------------------------------------------------

    def register(self, worker_id: str, address: str, slots: int, task_types: Iterable[str], prefetch: int) -> None:
        if not worker_id:
            raise InvalidArgument("worker_id is required", field="worker_id")
        if slots < 1:
            raise InvalidArgument(f"slots must be at least 1, got {slots}", field="slots")
        if prefetch < 0:
            raise InvalidArgument(f"prefetch must not be negative, got {prefetch}", field="prefetch")
        now = self._now()
        existing = self._workers.get(worker_id)
        if existing is not None:
            existing.address, existing.slots, existing.task_types = address, slots, tuple(task_types)
            existing.prefetch = prefetch
            existing.last_heartbeat = now
            existing.state = WorkerState.DRAINING if existing.drain_requested else WorkerState.ACTIVE
            return
        record = WorkerRecord(worker_id, address, slots, tuple(task_types), now, now, prefetch=prefetch)
        # Leases this worker held before a failover stay its own.
        record.leases = {tid for tid, lease in self._leases.items() if lease.worker_id == worker_id}
        self._workers[worker_id] = record
        log.info("worker %s joined (%s, %d slots)", worker_id, address, slots)

    def get(self, worker_id: str) -> WorkerRecord | None:
        return self._workers.get(worker_id)

    def require(self, worker_id: str) -> WorkerRecord:
        worker = self._workers.get(worker_id)
        if worker is None:
            raise FailedPrecondition(f"worker {worker_id!r} is not registered; call RegisterWorker first")
        return worker

    def open_link(self, worker_id: str) -> WorkerLink:
        """A worker opened its pull stream (replacing any older one)."""
        worker = self.require(worker_id)
        if worker.link is not None:
            worker.link.close()
        worker.link = WorkerLink(worker_id)
        if worker.drain_requested:  # asked while it had no stream: tell it now
            worker.link.outbox.put_nowait(DrainNotice())
        return worker.link

    def detach(self, link: WorkerLink) -> None:
        """``link`` ended: its node has no stream until it opens another."""
        link.close()
        worker = self._workers.get(link.worker_id)
        if worker is not None and worker.link is link:
            worker.link = None

    def grant_credit(self, link: WorkerLink, credit: int) -> bool:
        """Add ``credit`` to an open link of an ACTIVE node; whether it counted."""
        if credit < 0:
            raise InvalidArgument("credit must not be negative", field="credit")
        worker = self._workers.get(link.worker_id)
        if link.closed or worker is None or worker.state is not WorkerState.ACTIVE:
            return False
        # Credit is the worker's room: free slots, then prefetch; never more than both.
        link.credit = min(link.credit + credit, worker.slots + worker.prefetch)
        worker.last_heartbeat = self._now()  # heard from: it is alive
        if link.worker_id not in self._ready:  # once: it is the round-robin order of nodes
            self._ready.append(link.worker_id)
        return True

    def heartbeat(self, worker_id: str, leases: Iterable[tuple[str, int]], state: WorkerState) -> HeartbeatResult:
        """Renew the named leases that are still ``worker_id``'s; the others are lost."""
        expires = self._clock() + self._lease_ttl_s
        expires_wall = self._now() + timedelta(seconds=self._lease_ttl_s)
        worker = self._workers.get(worker_id)
        lost: list[tuple[str, int]] = []
        for task_id, token in leases:
            lease = self._leases.get(task_id)
            if lease is not None and lease.token == token and lease.worker_id == worker_id:
                lease.expires_at = expires
            else:
                lost.append((task_id, token))
        if worker is None:
            return HeartbeatResult(lost, expires_wall, reregister=True)
        worker.last_heartbeat = self._now()
        if state is WorkerState.DRAINING and worker.state is WorkerState.ACTIVE:
            log.info("worker %s is draining", worker_id)
            if worker.link is not None:
                worker.link.credit = 0
        if worker.drain_requested or state is WorkerState.DRAINING:
            worker.state = WorkerState.DRAINING
        else:
            worker.state = WorkerState.ACTIVE
        return HeartbeatResult(lost, expires_wall)

    def drain(self, worker_id: str) -> WorkerRecord:
        """Send ``worker_id`` no more work and ask it, over its pull stream, to
        drain. Idempotent; the node deregisters once its tasks are done."""
        if not worker_id:
            raise InvalidArgument("worker_id is required", field="worker_id")
        worker = self._workers.get(worker_id)
        if worker is None:
            raise NotFound(f"no worker {worker_id!r} is registered; ListWorkers shows the registered ones")
        if not worker.drain_requested:
            log.info("draining worker %s on request", worker_id)
            worker.drain_requested = True
            worker.state = WorkerState.DRAINING
            if worker.link is not None:
                worker.link.credit = 0
                worker.link.outbox.put_nowait(DrainNotice())
        return worker

    def remove(self, worker_id: str) -> WorkerRecord | None:
        """The node left: forget it and end its stream. Its leases stay until
        the caller settles each task."""
        worker = self._workers.pop(worker_id, None)
        if worker is not None and worker.link is not None:
            worker.link.close()
        return worker

    def listing(self) -> list[WorkerRecord]:
        """Every known node; one silent for a lease TTL is shown OFFLINE (a
        view only: its record keeps its state, so its next credit counts)."""
        offline_after = timedelta(seconds=self._lease_ttl_s)
        now = self._now()
        result = []
        for worker in sorted(self._workers.values(), key=lambda w: w.worker_id):
            if worker.state is not WorkerState.DRAINING and now - worker.last_heartbeat > offline_after:
                worker = replace(worker, state=WorkerState.OFFLINE)
            result.append(worker)
        return result

    def close(self) -> None:
        """End every pull stream (the Scheduler stepped down)."""
        for worker in self._workers.values():
            if worker.link is not None:
                worker.link.close()

    # -- leases ---------------------------------------------------------------------

    def lease(self, task_id: str, worker: WorkerRecord) -> tuple[int, float]:
        """A new lease of ``task_id`` to ``worker``, taking one of its
        credits; answers its fencing token and its expiry (monotonic)."""
        self.last_token += 1
        expires = self._clock() + self._lease_ttl_s
        self._leases[task_id] = Lease(worker.worker_id, self.last_token, expires)
        worker.leases.add(task_id)
        if worker.link is not None:
            worker.link.credit -= 1
        return self.last_token, expires

    def keep(self, task_id: str, worker_id: str, token: int) -> None:
        """A lease taken over from the store (a new leader): it lasts one
        more TTL, so its worker can renew it."""
        self._leases[task_id] = Lease(worker_id, token, self._clock() + self._lease_ttl_s)

    def holds(self, worker_id: str, task_id: str, token: int) -> bool:
        """Whether ``token`` is the current lease of ``task_id`` held by ``worker_id``."""
        lease = self._leases.get(task_id)
        return lease is not None and lease.token == token and lease.worker_id == worker_id

    def release(self, task_id: str) -> Lease | None:
        """End the lease of ``task_id`` (if any); answers it."""
        lease = self._leases.pop(task_id, None)
        if lease is not None:
            worker = self._workers.get(lease.worker_id)
            if worker is not None:
                worker.leases.discard(task_id)
                worker.asked_back.discard(task_id)
        return lease

    def expired(self) -> list[str]:
        """Tasks whose lease was not renewed in time."""
        now = self._clock()
        return [task_id for task_id, lease in self._leases.items() if lease.expires_at <= now]

    # -- who gets work, who gives it back --------------------------------------------

    def next_worker(self) -> WorkerRecord | None:
        """The next node in round-robin order with a free slot, else the next
        with prefetch room; None if none. A node not heard from for two
        heartbeat intervals is passed over (stopped or cut off, it must not
        soak up work it cannot start: the credit it granted before outlives
        the leases that expire). Nodes without an open stream or credit leave
        the order until they grant credit again."""
        with_room: WorkerRecord | None = None
        heard_since = self._now() - timedelta(seconds=2 * self._heartbeat_interval_s)
        for _ in range(len(self._ready)):
            worker = self._workers.get(self._ready[0])
            link = worker.link if worker is not None else None
            if worker is None or link is None or link.closed or link.credit <= 0:
                self._ready.popleft()
                continue
            self._ready.rotate(-1)
            if worker.last_heartbeat < heard_since:
                continue
            if worker.free_slots:
                return worker
            with_room = with_room or worker
        return with_room

    @property
    def ready(self) -> int:
        """Nodes in the round-robin order (tests: one turn per node)."""
        return len(self._ready)

    def any_prefetched(self) -> bool:
        return any(w.prefetched > 0 for w in self._workers.values())

    def with_free_slots(self) -> list[WorkerRecord]:
        return [w for w in self._workers.values() if w.free_slots]

    def ask_back(self, eligible: Callable[[Task], bool], task_of: Callable[[str], Task]) -> bool:
        """Send a TakeBack for the prefetched lease that would run last among
        those ``eligible`` (lowest priority, newest); False if none."""
        best: tuple[Task, WorkerRecord] | None = None
        for worker in self._workers.values():
            if worker.prefetched <= 0 or worker.link is None or worker.link.closed:
                continue
            for task_id in worker.leases - worker.asked_back:
                task = task_of(task_id)
                if eligible(task) and (best is None or runs_later(task, best[0])):
                    best = (task, worker)
        if best is None:
            return False
        task, worker = best
        worker.asked_back.add(task.task_id)
        worker.send(TakeBack(task.task_id, task.fencing_token))
        return True


def runs_later(task: Task, other: Task) -> bool:
    """Whether a node holding both starts ``task`` after ``other``: it has
    the lower priority, or the same and was dispatched later."""
    return (-task.priority.effective(), task.fencing_token) > (-other.priority.effective(), other.fencing_token)
