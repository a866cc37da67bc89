"""One R1/R2 subscriber: a process running the client library's
:class:`~gridmesh.clients.replica.ReplicaApplier` into its own MySQL database,
started and stopped (SIGTERM, by pid) by ``gridmesh bench``.

    python -m gridmesh.bench.replica_proc --target HOST:PORT --subscriber S --publisher P \\
        --mysql-host H --mysql-port N --mysql-user U --database D --applied FILE

The MySQL password comes from the environment (:data:`PASSWORD_VAR`). The
process creates the replica table, installs the applier (which subscribes),
starts it and writes ``READY <pid>`` as the first line of ``FILE``; then,
after each batch the applier *committed*, one line
``<entity_id> <version> <unix time>`` per event the batch applied (skipped
duplicates and stale versions are not written). That time is taken right
after the commit returned, so it is when the replica database held the event.
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import pymysql

from gridmesh.clients.events import EventClient
from gridmesh.clients.replica import MySQLReplicaStore, ReplicaApplier, ReplicaTable
from gridmesh.core.access import PeerRole
from gridmesh.core.replication import ReplicaAction
from gridmesh.grpc_support.tls import MeshTls, channel
from gridmesh.v1 import common_pb2

PASSWORD_VAR = "GRIDMESH_BENCH_MYSQL_PASSWORD"
ENTITY_TYPE = "item"
TABLE = "bench_item"
COLUMNS = ("seq", "data", "published_at")
TABLE_DDL = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} (id VARCHAR(64) NOT NULL PRIMARY KEY, seq BIGINT NULL, "
    "data VARCHAR(255) NULL, published_at DOUBLE NULL, version BIGINT NOT NULL) ENGINE=InnoDB"
)
READY = "READY"


class TimedStore:
    """The applier's MySQL store, noting when each applied event was committed."""

    def __init__(self, inner: MySQLReplicaStore, out: IO[str]) -> None:
        self._inner = inner
        self._out = out

    def apply(self, events: Sequence[common_pb2.EntityEvent]) -> list[ReplicaAction]:
        actions = self._inner.apply(events)
        now = time.time()
        self._out.write(
            "".join(
                f"{e.entity_id} {e.version} {now:.6f}\n"
                for e, a in zip(events, actions, strict=True)
                if a is not ReplicaAction.SKIP
            )
        )
        self._out.flush()
        return actions

    def close(self) -> None:
        self._inner.close()


def event_client(target: str, tls: MeshTls | None, edge_ca: str | None, rpc_timeout_s: float) -> EventClient:
    """An EventClient through the edge (TLS trusting ``edge_ca``, plaintext
    without), or (with the admin certificate ``tls``) straight to the EventManager."""
    if tls is None:
        return EventClient(target, rpc_timeout_s=rpc_timeout_s, ca_file=edge_ca, plaintext=edge_ca is None)
    return EventClient(target, channel=channel(target, tls, PeerRole.EVENTMANAGER), rpc_timeout_s=rpc_timeout_s)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gridmesh.bench.replica_proc")
    p.add_argument("--target", required=True)
    p.add_argument("--subscriber", required=True)
    p.add_argument("--publisher", required=True)
    p.add_argument("--mysql-host", default="127.0.0.1")
    p.add_argument("--mysql-port", type=int, default=3306)
    p.add_argument("--mysql-user", default="gridmesh")
    p.add_argument("--database", required=True)
    p.add_argument("--applied", required=True)
    p.add_argument("--tls-dir", default="", help="the mesh's certificates: the target is the EventManager itself")
    p.add_argument("--ca-file", default="", help="the edge's CA (the target is the edge; none: plaintext)")
    a = p.parse_args(argv)

    tls = MeshTls.from_dir(Path(a.tls_dir), PeerRole.ADMIN) if a.tls_dir else None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    connect = functools.partial(
        pymysql.connect,
        host=a.mysql_host,
        port=a.mysql_port,
        user=a.mysql_user,
        password=os.environ.get(PASSWORD_VAR, ""),
        database=a.database,
    )
    with connect() as conn, conn.cursor() as cur:
        cur.execute(TABLE_DDL)
        conn.commit()
    table = ReplicaTable(a.publisher, ENTITY_TYPE, table=TABLE, columns=COLUMNS)
    with open(a.applied, "a", buffering=1 << 16) as out, event_client(a.target, tls, a.ca_file or None, 30) as events:
        store = TimedStore(MySQLReplicaStore(connect, [table]), out)
        applier = ReplicaApplier(events, a.subscriber, connect, [table], store=store)
        applier.install()  # bookkeeping tables, and the subscription
        out.write(f"{READY} {os.getpid()}\n")
        out.flush()
        applier.start()
        while not stop.wait(0.5):
            pass
        applier.stop()
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
