"""R1 and R2 (SPEC §5): replication throughput and lag, publisher ->
EventManager -> two subscribers, each a separate applier process
(:mod:`gridmesh.bench.replica_proc`, the client library's
:class:`~gridmesh.clients.replica.ReplicaApplier`) writing its own MySQL
database.

**Publisher path.** The bench client publishes with
:meth:`EventClient.publish_batch <gridmesh.clients.events.EventClient.publish_batch>`,
one call at a time, :data:`PUBLISH_BATCH` (= the outbox relay's batch size)
events per call: exactly the calls an :class:`~gridmesh.clients.outbox.OutboxRelay`
makes, without the publisher's own outbox table in the measurement (that is
the publisher's database, not the mesh). Each call answers after RabbitMQ
confirmed every event; the bench checks that each was routed to both subscribers.

**Events.** Event ``i`` updates entity ``i % E`` to version ``i // E + 1``
(``E`` = n / :data:`VERSIONS`: 10 versions of each entity, all of them in
order), payload ``{id, seq, data (100 bytes), published_at}``.

**R1** (throughput): every event published back to back; events/s from
just before the first publish until every replica database holds the last
version of every entity. That end is the latest commit time, reported by the
appliers, of a last version; the bench meanwhile polls both databases until
they hold them (``observed_elapsed_s``) and compares every row with what the
publisher sent at the end.

**R2** (lag): paced, event ``i`` due at ``t0 + i / rate``; whatever is due is
published in one call (a late publisher catches up as a relay would).
``published_at`` = ``time.time()`` just before the call carrying the event
(stamped in the payload); applied = ``time.time()`` in the applier process
right after the transaction holding the event committed (same machine, same
clock). Headline p50/p99: publish -> applied in *both* replicas (the later of
the two); ``replica_*``: every (event, replica) pair.

Each repetition has its own publisher and subscriber names, queues and
databases; the appliers are stopped by pid and everything is deleted at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymysql

from gridmesh.adapters.rabbitmq import RabbitMQ
from gridmesh.bench.client import BenchError
from gridmesh.bench.replica_proc import ENTITY_TYPE, PASSWORD_VAR, READY, TABLE, event_client
from gridmesh.bench.stats import latency_metrics
from gridmesh.bench.workloads import PAYLOAD
from gridmesh.clients.events import EventClient, EventError, Operation, new_event
from gridmesh.config import MeshConfig
from gridmesh.core.replication import Topology
from gridmesh.grpc_support.tls import MeshTls

SUBSCRIBERS = 2
VERSIONS = 10
"""Versions of each entity in a run (n / VERSIONS entities)."""
PUBLISH_BATCH = 500
"""Events per PublishBatch call in R1 (the outbox relay's batch size)."""
R2_RATE, R2_SECONDS = 500, 20
R2_QUICK_RATE, R2_QUICK_SECONDS = 100, 3
WARMUP_EVENTS = 20
"""Events applied by both replicas before the clock starts."""
POLL_S = 0.02
"""How often the bench looks at the replica databases."""
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0

Key = tuple[str, int]
"""(entity_id, version)."""


# -- the pure part ------------------------------------------------------------------------


@dataclass(frozen=True)
class EventPlan:
    """Which entity and version event ``i`` of ``n`` carries."""

    n: int
    entities: int

    @classmethod
    def of(cls, n: int, versions: int = VERSIONS) -> EventPlan:
        if n < 1:
            raise ValueError("n must be at least 1")
        return cls(n, n // versions if n % versions == 0 and n >= versions else n)

    @property
    def final_version(self) -> int:
        return self.n // self.entities

    def key(self, i: int) -> Key:
        return entity_id(i % self.entities), i // self.entities + 1

    def seq(self, key: Key) -> int:
        return (key[1] - 1) * self.entities + int(key[0][2:])

    def final_rows(self) -> dict[str, tuple[int, int]]:
        """entity_id -> (version, seq) of the last event of each entity."""
        v = self.final_version
        return {entity_id(k): (v, (v - 1) * self.entities + k) for k in range(self.entities)}


def entity_id(k: int) -> str:
    return f"e-{k:06d}"


def payload(key: Key, seq: int, published_at: float) -> dict[str, Any]:
    return {"id": key[0], "seq": seq, "data": PAYLOAD, "published_at": published_at}


def r2_rate(quick: bool) -> int:
    return R2_QUICK_RATE if quick else R2_RATE


def due(elapsed_s: float, rate: float, n: int) -> int:
    """How many events of a paced run (event i due at i / rate) are due after ``elapsed_s``."""
    if elapsed_s < 0:
        return 0
    return min(n, int(elapsed_s * rate) + 1)


def parse_applied(lines: Iterable[str], into: dict[Key, float] | None = None) -> dict[Key, float]:
    """The applied lines ``<entity_id> <version> <unix time>`` (first time each; others skipped)."""
    out: dict[Key, float] = {} if into is None else into
    for line in lines:
        parts = line.split()
        if len(parts) != 3 or parts[0] == READY:
            continue
        try:
            key, at = (parts[0], int(parts[1])), float(parts[2])
        except ValueError:
            continue
        out.setdefault(key, at)
    return out


def completion_time(plan: EventPlan, replicas: Sequence[Mapping[Key, float]]) -> float | None:
    """When the last replica held the last version of every entity (unix time), or None if not yet."""
    latest = 0.0
    v = plan.final_version
    for applied in replicas:
        for k in range(plan.entities):
            at = applied.get((entity_id(k), v))
            if at is None:
                return None
            latest = max(latest, at)
    return latest


def lag_metrics(
    plan: EventPlan, published_at: Sequence[float], replicas: Sequence[Mapping[Key, float]]
) -> dict[str, Any]:
    """p50/p99 publish -> applied in every replica (headline) and per (event, replica)."""
    both: list[float] = []
    pairs: list[float] = []
    missing = 0
    for i, sent in enumerate(published_at):
        key = plan.key(i)
        ats = [r.get(key) for r in replicas]
        got = [at for at in ats if at is not None]
        pairs += [at - sent for at in got]
        if len(got) == len(ats):
            both.append(max(got) - sent)
        else:
            missing += 1
    if not both:
        raise BenchError("no event was applied by every replica")
    metrics = latency_metrics(both)
    metrics.update({k: v for k, v in latency_metrics(pairs, "replica_").items() if k != "replica_n"})
    metrics["not_applied"] = missing
    return metrics


def check_rows(plan: EventPlan, rows: Iterable[tuple[Any, ...]]) -> list[str]:
    """What is wrong with a replica's ``(id, version, seq, data)`` rows (empty: it matches)."""
    want = plan.final_rows()
    got = {str(r[0]): (int(r[1]), int(r[2]), r[3]) for r in rows}
    problems = [f"missing {i}" for i in sorted(set(want) - set(got))]
    problems += [f"unexpected {i}" for i in sorted(set(got) - set(want))]
    for i in sorted(set(want) & set(got)):
        version, seq = want[i]
        if got[i] != (version, seq, PAYLOAD):
            problems.append(f"{i}: version/seq {got[i][:2]} instead of {(version, seq)}")
    return problems


# -- one repetition: names, databases, applier processes ----------------------------------


@dataclass
class Applier:
    subscriber: str
    database: str
    applied_path: Path
    proc: subprocess.Popen[bytes]
    applied: dict[Key, float] = field(default_factory=dict)
    _offset: int = 0

    def read(self) -> dict[Key, float]:
        """Take in the applied lines written since the last call."""
        with self.applied_path.open("rb") as f:
            f.seek(self._offset)
            chunk = f.read()
        end = chunk.rfind(b"\n") + 1
        self._offset += end
        parse_applied(chunk[:end].decode().splitlines(), self.applied)
        return self.applied


@dataclass
class Replication:
    """The publisher, the two subscribers with their databases and applier processes of one repetition."""

    config: MeshConfig
    target: str
    """The EventManager, through the edge or directly."""
    tls: MeshTls | None = None
    """The admin certificate when ``target`` is the EventManager itself."""
    edge_ca: str | None = None
    """Else the CA the edge's certificate is checked against (None: a plaintext edge)."""
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    appliers: list[Applier] = field(default_factory=list)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="gridmesh-bench-r-")))

    @property
    def publisher(self) -> str:
        return f"bench-{self.run_id}"

    def subscriber(self, index: int) -> str:
        return f"bench-{self.run_id}-{'ab'[index]}"

    def database(self, index: int) -> str:
        return self.config.database(f"bench_{self.run_id}_{'ab'[index]}")

    def _server(self, database: str | None = None) -> pymysql.connections.Connection:
        m = self.config.mysql_login("bench")
        return pymysql.connect(host=m.host, port=m.port, user=m.user, password=m.password, database=database)

    def start(self, deadline: float) -> None:
        m = self.config.mysql_login("bench")
        with contextlib.closing(self._server()) as conn, conn.cursor() as cur:
            for i in range(SUBSCRIBERS):
                cur.execute(f"CREATE DATABASE `{self.database(i)}`")
        env = {**os.environ, PASSWORD_VAR: m.password}
        for i in range(SUBSCRIBERS):
            applied = self.workdir / f"applied-{i}.txt"
            applied.touch()
            log = (self.workdir / f"applier-{i}.log").open("wb")
            args = [
                sys.executable,
                "-m",
                "gridmesh.bench.replica_proc",
                *("--target", self.target, "--subscriber", self.subscriber(i), "--publisher", self.publisher),
                *("--mysql-host", m.host, "--mysql-port", str(m.port), "--mysql-user", m.user),
                *("--database", self.database(i), "--applied", str(applied)),
                *(("--tls-dir", str(self.config.tls_path)) if self.tls is not None else ()),
                *(("--ca-file", self.edge_ca) if self.edge_ca else ()),
            ]
            with log:
                proc = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            self.appliers.append(Applier(self.subscriber(i), self.database(i), applied, proc))
        for applier in self.appliers:
            while not applier.applied_path.read_text().startswith(READY):
                if applier.proc.poll() is not None:
                    raise BenchError(f"applier {applier.subscriber} exited: {self.log_tail(applier)}")
                if time.monotonic() > deadline:
                    raise BenchError(f"applier {applier.subscriber} was not ready in time: {self.log_tail(applier)}")
                time.sleep(0.05)

    def log_tail(self, applier: Applier) -> str:
        path = self.workdir / f"applier-{self.appliers.index(applier)}.log"
        with contextlib.suppress(OSError):
            return path.read_text(errors="replace")[-1500:].strip() or "(no output)"
        return "(no log)"

    def check_alive(self) -> None:
        for applier in self.appliers:
            if applier.proc.poll() is not None:
                raise BenchError(f"applier {applier.subscriber} died: {self.log_tail(applier)}")

    def count_final(self, plan: EventPlan) -> list[int]:
        """Per replica, the entities that hold their last version."""
        counts = []
        for applier in self.appliers:
            with contextlib.closing(self._server(applier.database)) as conn, conn.cursor() as cur:
                cur.execute(
                    f"SELECT COUNT(*) FROM {TABLE} WHERE id LIKE 'e-%%' AND version = %s", (plan.final_version,)
                )
                counts.append(int(cur.fetchone()[0]))  # type: ignore[index]
        return counts

    def rows(self, applier: Applier) -> list[tuple[Any, ...]]:
        with contextlib.closing(self._server(applier.database)) as conn, conn.cursor() as cur:
            cur.execute(f"SELECT id, version, seq, data FROM {TABLE} WHERE id LIKE 'e-%%'")
            return list(cur.fetchall())

    def verify(self, plan: EventPlan) -> None:
        for applier in self.appliers:
            problems = check_rows(plan, self.rows(applier))
            if problems:
                raise BenchError(f"replica {applier.database} differs from what was published: {problems[:5]}")

    def wait(self, what: str, done: Callable[[], bool], deadline: float) -> float:
        """Poll until ``done()``; answers the perf_counter time it was first seen."""
        while True:
            if done():
                return time.perf_counter()
            self.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(f"timed out waiting for {what}")
            time.sleep(POLL_S)

    def stop(self) -> None:
        """Stop the appliers by pid (SIGTERM, then SIGKILL), drop the subscriptions,
        queues and databases. Never raises."""
        for applier in self.appliers:
            if applier.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(applier.proc.pid, signal.SIGTERM)
        for applier in self.appliers:
            try:
                applier.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(applier.proc.pid, signal.SIGKILL)
                applier.proc.wait(STOP_TIMEOUT_S)
        with contextlib.suppress(Exception), event_client(self.target, self.tls, self.edge_ca, 10) as events:
            for i in range(SUBSCRIBERS):
                with contextlib.suppress(EventError):
                    events.unsubscribe(self.subscriber(i), self.publisher, ENTITY_TYPE)
        with contextlib.suppress(Exception):
            asyncio.run(self._delete_queues())
        with contextlib.suppress(Exception), contextlib.closing(self._server()) as conn, conn.cursor() as cur:
            for i in range(SUBSCRIBERS):
                cur.execute(f"DROP DATABASE IF EXISTS `{self.database(i)}`")
        for path in self.workdir.iterdir():
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.workdir.rmdir()

    async def _delete_queues(self) -> None:
        topology = Topology(prefix=self.config.prefixed, max_deliveries=1)
        mq = RabbitMQ(self.config.rabbitmq, self.config.rabbitmq_password, connection_name="gridmesh-bench")
        await mq.start()
        try:
            for i in range(SUBSCRIBERS):
                await mq.delete_queue(topology.queue(self.subscriber(i)))
                await mq.delete_queue(topology.dead_letter_queue(self.subscriber(i)))
        finally:
            await mq.close()


@contextlib.contextmanager
def replication(
    config: MeshConfig, target: str, tls: MeshTls | None, edge_ca: str | None, deadline: float
) -> Iterator[Replication]:
    run = Replication(config, target, tls, edge_ca)
    try:
        run.start(deadline)
        yield run
    finally:
        run.stop()


# -- publishing ------------------------------------------------------------------------------


class Publisher:
    """The bench client: one EventClient, publish_batch, every event checked confirmed and routed."""

    def __init__(self, events: EventClient, run: Replication) -> None:
        self.events = events
        self.run = run
        self.expected = {run.subscriber(i) for i in range(SUBSCRIBERS)}
        self.published = 0

    def event(self, key: Key, seq: int, published_at: float) -> Any:
        return new_event(
            self.run.publisher,
            ENTITY_TYPE,
            key[0],
            Operation.UPDATE if key[1] > 1 else Operation.CREATE,
            key[1],
            payload(key, seq, published_at),
        )

    def publish(self, events: Sequence[Any]) -> None:
        results = self.events.publish_batch(events)
        for r in results:
            if r.code != 0:
                raise BenchError(f"event {r.event_id} was not published: code {r.code} {r.error}")
            if set(r.routed_to) != self.expected:
                raise BenchError(f"event {r.event_id} was routed to {sorted(r.routed_to)}, not {sorted(self.expected)}")
        self.published += len(events)


def warm_up(run: Replication, publisher: Publisher, deadline: float) -> None:
    """Events of warm-up entities applied by both replicas: the streams are open and warm."""
    keys = [(f"w-{k:06d}", 1) for k in range(WARMUP_EVENTS)]
    publisher.publish([publisher.event(key, -1, time.time()) for key in keys])
    run.wait(
        "the warm-up events in every replica",
        lambda: all(all(k in a.read() for k in keys) for a in run.appliers),
        deadline,
    )
    publisher.published = 0


def measure_r1(
    config: MeshConfig,
    target: str,
    tls: MeshTls | None,
    edge_ca: str | None,
    n: int,
    deadline: float,
    progress: Callable[[Callable[[], int]], None],
) -> dict[str, Any]:
    plan = EventPlan.of(n)
    with replication(config, target, tls, edge_ca, deadline) as run, event_client(target, tls, edge_ca, 60) as events:
        publisher = Publisher(events, run)
        warm_up(run, publisher, deadline)
        progress(lambda: publisher.published)
        batch = [publisher.event(plan.key(i), i, 0.0) for i in range(n)]
        t0_wall, t0 = time.time(), time.perf_counter()
        for start in range(0, n, PUBLISH_BATCH):
            publisher.publish(batch[start : start + PUBLISH_BATCH])
        t_published = time.perf_counter()
        final = [plan.entities] * SUBSCRIBERS
        t_seen = run.wait("every replica to hold the last versions", lambda: run.count_final(plan) == final, deadline)
        replicas = [a.read() for a in run.appliers]
        t_end_wall = completion_time(plan, replicas)
        if t_end_wall is None:
            raise BenchError("the databases hold the last versions but the appliers did not report them all")
        run.verify(plan)
        elapsed = t_end_wall - t0_wall
        return {
            "events_per_s": round(n / elapsed, 1),
            "publish_per_s": round(n / (t_published - t0), 1),
            "elapsed_s": round(elapsed, 3),
            "observed_elapsed_s": round(t_seen - t0, 3),
            "n": n,
            "subscribers": SUBSCRIBERS,
            "entities": plan.entities,
            "publish_batch": PUBLISH_BATCH,
            "replicas_match": True,
        }


def measure_r2(
    config: MeshConfig,
    target: str,
    tls: MeshTls | None,
    edge_ca: str | None,
    n: int,
    rate: int,
    deadline: float,
    progress: Callable[[Callable[[], int]], None],
) -> dict[str, Any]:
    plan = EventPlan.of(n)
    with replication(config, target, tls, edge_ca, deadline) as run, event_client(target, tls, edge_ca, 60) as events:
        publisher = Publisher(events, run)
        warm_up(run, publisher, deadline)
        progress(lambda: publisher.published)
        published_at = [0.0] * n
        calls = 0
        most_behind = 0
        sent = 0
        t0 = time.perf_counter()
        while sent < n:
            now = time.perf_counter()
            upto = due(now - t0, rate, n)
            if upto <= sent:
                time.sleep(max(0.0, t0 + sent / rate - now))
                continue
            most_behind = max(most_behind, upto - sent)
            stamp = time.time()
            publisher.publish([publisher.event(plan.key(i), i, stamp) for i in range(sent, upto)])
            published_at[sent:upto] = [stamp] * (upto - sent)
            calls += 1
            sent = upto
            if time.monotonic() > deadline:
                raise BenchError(f"publishing took too long ({sent} of {n} sent)")
        publish_s = time.perf_counter() - t0
        final = [plan.entities] * SUBSCRIBERS
        run.wait("every replica to hold the last versions", lambda: run.count_final(plan) == final, deadline)
        replicas = [a.read() for a in run.appliers]
        run.verify(plan)
        metrics = lag_metrics(plan, published_at, replicas)
        metrics.update(
            {
                "rate_per_s": rate,
                "achieved_rate_per_s": round(n / publish_s, 1),
                "duration_s": round(n / rate, 1),
                "publish_calls": calls,
                "max_events_per_call": most_behind,
                "subscribers": SUBSCRIBERS,
                "entities": plan.entities,
                "replicas_match": True,
            }
        )
        metrics["n"] = n
        return metrics


def conditions(quick: bool) -> dict[str, Any]:
    """What a record of R1/R2 says about how it was measured."""
    return {
        "publisher": f"EventClient.publish_batch, one call at a time ({PUBLISH_BATCH} per call in R1; R2: what is due)",
        "subscribers": f"{SUBSCRIBERS} ReplicaApplier processes (python -m gridmesh.bench.replica_proc), "
        "each its own MySQL database",
        "applied_time": "time.time() in the applier right after its transaction committed",
        "r2_rate_per_s": r2_rate(quick),
        "peer_reference": "pika/classic W1 round_trips_per_s",
    }
