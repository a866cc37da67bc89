"""What both demo services share: a MySQL database of their own, a
transactional outbox with its relay, a replica applier, and the process's
life cycle (SPEC §3 "A runnable demo of the original scenario").

Threading (one choice per process, STYLE §12): the gRPC server runs on the
asyncio loop; every pymysql call runs in the default executor
(:func:`blocking`); the outbox relay and the replica applier run on threads
of their own, talking to the EventManager with the synchronous client.

Start: listen (NOT_SERVING) → create or migrate the database, install the
outbox and replica tables, subscribe (retried while the EventManager is
still starting) → start the relay and the applier → SERVING. Shutdown:
NOT_SERVING → ``server.stop(grace)`` → stop the applier (its current batch
commits and is acknowledged) → stop the relay → close.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import pymysql

from gridmesh.adapters.mysql import MySQL
from gridmesh.clients.events import EventClient, EventError
from gridmesh.clients.outbox import Outbox, OutboxRelay
from gridmesh.clients.replica import ReplicaApplier, ReplicaTable
from gridmesh.common.errors import InvalidArgument, Unavailable
from gridmesh.config import MeshConfig
from gridmesh.grpc_support.server import GrpcHost, serve_until_signal

log = logging.getLogger(__name__)

T = TypeVar("T")

READY_TIMEOUT_S = 60.0
"""How long start-up keeps retrying an unreachable EventManager or MySQL."""
READY_RETRY_DELAY_S = 0.5
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
_MYSQL_ERRORS = (pymysql.err.OperationalError, pymysql.err.InterfaceError, ConnectionError, OSError)


async def blocking(work: Callable[[], T]) -> T:
    """Run a blocking database call off the loop; an unreachable MySQL
    becomes :class:`Unavailable` (gRPC UNAVAILABLE, HTTP 503)."""
    try:
        return await asyncio.to_thread(work)
    except _MYSQL_ERRORS as e:
        raise Unavailable(f"the service's database is unreachable ({e}); retry later") from None


def page_size(requested: int) -> int:
    if requested < 0 or requested > MAX_PAGE_SIZE:
        raise InvalidArgument(f"page_size must be between 0 and {MAX_PAGE_SIZE}, got {requested}", field="page_size")
    return requested or DEFAULT_PAGE_SIZE


def encode_token(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode()


def decode_token(token: str) -> str:
    if not token:
        return ""
    try:
        return base64.urlsafe_b64decode(token.encode()).decode()
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgument("page_token is not one this service gave out", field="page_token") from None


@dataclass
class Replication:
    """The replication machinery of one demo service: it publishes its own
    entities as ``name`` and subscribes, as ``name`` too, to ``tables``."""

    name: str
    db: MySQL
    migrations: Sequence[str]
    outbox: Outbox
    relay: OutboxRelay
    applier: ReplicaApplier
    events: EventClient

    @classmethod
    def build(
        cls, config: MeshConfig, name: str, migrations: Sequence[str], tables: Sequence[ReplicaTable]
    ) -> Replication:
        db = MySQL(config.mysql_login(f"demo_{name}"), config.database(f"demo_{name}"))
        connect = functools.partial(db.connect, db.database)
        # Through the edge, as any microservice outside the mesh: TLS and a
        # key. The demo runs on the mesh's host, so it borrows the local
        # admin's key (it publishes as itself and consumes its own queue; a
        # real service gets publisher and subscriber keys of its own).
        events = EventClient(
            config.edge_address,
            rpc_timeout_s=10,
            api_key=_local_admin_key(config),
            ca_file=config.edge_ca_file,
            plaintext=config.envoy.plaintext,
        )
        outbox = Outbox(connect, publisher=name)
        return cls(
            name=name,
            db=db,
            migrations=migrations,
            outbox=outbox,
            relay=OutboxRelay(outbox, events),
            applier=ReplicaApplier(events, name, connect, tables),
            events=events,
        )

    def connect(self) -> pymysql.connections.Connection:
        return self.db.connect(self.db.database)

    def ready(self) -> None:
        """Create the schema, subscribe, start relaying and applying (blocking)."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            try:
                self.db.ensure_schema(self.migrations)
                self.outbox.install()
                self.applier.install(subscribe=True, snapshot=True)  # a fresh replica starts complete
                break
            except (EventError, Unavailable, *_MYSQL_ERRORS) as e:
                if isinstance(e, EventError) and not e.retryable:
                    raise
                if time.monotonic() > deadline:
                    raise Unavailable(f"{self.name}: cannot start: {e}") from None
                log.info("%s: waiting for the EventManager and MySQL (%s)", self.name, e)
                time.sleep(READY_RETRY_DELAY_S)
        self.relay.start()
        self.applier.start()
        log.info("%s: relaying its outbox and applying %d replica table(s)", self.name, len(self.applier.tables))

    def close(self) -> None:
        """Stop the applier, then the relay; close the clients. Idempotent."""
        self.applier.stop()
        self.relay.stop()
        self.events.close()
        self.db.close()


async def serve(host: GrpcHost, replication: Replication) -> None:
    """Serve until SIGTERM/SIGINT with the start-up and shutdown of the module doc."""

    async def ready() -> None:
        await asyncio.to_thread(replication.ready)
        await host.set_serving(True)

    async def close() -> None:
        await asyncio.to_thread(replication.close)

    host.close_adapters.append(close)
    await serve_until_signal(host, ready=ready)


def _local_admin_key(config: MeshConfig) -> str | None:
    try:
        return config.credentials_path.read_text().strip() or None
    except OSError:
        return None


__all__ = ["Replication", "blocking", "decode_token", "encode_token", "page_size", "serve"]
