"""CustomerService of the replication demo: customers in a MySQL database of
its own, every change published through the transactional outbox (entity
type ``customer``, publisher ``customers``), and a replica of OrderService's
orders (``orders``/``order``) from which it counts each customer's orders.

    python -m gridmesh.demo.customers       # or: gridmesh up --demo
"""

from __future__ import annotations

import contextlib
import re
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pymysql
from google.protobuf import empty_pb2
from grpc import aio

from gridmesh.clients.events import Operation
from gridmesh.clients.replica import ReplicaTable
from gridmesh.common.convert import to_timestamp
from gridmesh.common.errors import AlreadyExists, InvalidArgument, NotFound
from gridmesh.config import MeshConfig
from gridmesh.demo import _runtime
from gridmesh.demo._runtime import Replication, blocking
from gridmesh.demo.v1 import customers_pb2, customers_pb2_grpc
from gridmesh.grpc_support.server import GrpcHost, build_grpc_server, run_process

NAME = "customers"
"""Publisher and subscriber name of this service."""
ENTITY = "customer"
SERVICES = (customers_pb2.DESCRIPTOR.services_by_name["CustomerService"].full_name,)

MIGRATIONS = (
    "CREATE TABLE customer (id VARCHAR(64) NOT NULL PRIMARY KEY, name VARCHAR(200) NOT NULL, "
    "email VARCHAR(200) NOT NULL, version BIGINT NOT NULL, created_at DATETIME(6) NOT NULL, "
    "updated_at DATETIME(6) NOT NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "CREATE TABLE order_replica (id VARCHAR(255) NOT NULL PRIMARY KEY, customer_id VARCHAR(64), "
    "status VARCHAR(16), amount_cents BIGINT, version BIGINT NOT NULL, KEY customer (customer_id)) "
    "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
)
ORDER_REPLICA = ReplicaTable(
    "orders", "order", table="order_replica", columns=("customer_id", "status", "amount_cents")
)

_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+$")
MAX_TEXT = 200


def check_customer_id(value: str) -> str:
    if not _ID_RE.match(value):
        raise InvalidArgument(
            f"customer_id {value!r:.80} is not valid: use 1-64 letters, digits, '_' or '-'", field="customer_id"
        )
    return value


def check_name(value: str) -> str:
    value = value.strip()
    if not value or len(value) > MAX_TEXT:
        raise InvalidArgument(f"name is required, at most {MAX_TEXT} characters", field="name")
    return value


def check_email(value: str) -> str:
    value = value.strip()
    if len(value) > MAX_TEXT or not _EMAIL_RE.match(value):
        raise InvalidArgument(f"email {value!r:.80} is not an e-mail address", field="email")
    return value


@dataclass(frozen=True)
class CustomerRow:
    customer_id: str
    name: str
    email: str
    version: int
    created_at: datetime
    updated_at: datetime
    order_count: int = 0
    order_total_cents: int = 0

    @property
    def payload(self) -> dict[str, Any]:
        """The whole entity, as published."""
        return {"id": self.customer_id, "name": self.name, "email": self.email}


_COLUMNS = "id, name, email, version, created_at, updated_at"


def _row(values: Any) -> CustomerRow:
    customer_id, name, email, version, created_at, updated_at = values[:6]
    extra = [int(v) for v in values[6:]]
    return CustomerRow(str(customer_id), str(name), str(email), int(version), created_at, updated_at, *extra)


class Customers:
    """The customers and their orders replica (blocking; run via :func:`blocking`)."""

    def __init__(self, replication: Replication) -> None:
        self._replication = replication
        self._outbox = replication.outbox

    def create(self, customer_id: str, name: str, email: str) -> CustomerRow:
        customer_id = check_customer_id(customer_id) if customer_id else str(uuid.uuid4())
        name, email = check_name(name), check_email(email)
        now = datetime.now(UTC).replace(tzinfo=None)
        try:
            with self._outbox.transaction() as cur:
                version = self._outbox.claim_version(cur, ENTITY, customer_id)
                cur.execute(
                    f"INSERT INTO customer ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s)",
                    (customer_id, name, email, version, now, now),
                )
                row = CustomerRow(customer_id, name, email, version, now, now)
                self._outbox.record(cur, ENTITY, customer_id, Operation.CREATE, row.payload, version=version)
        except pymysql.err.IntegrityError:
            raise AlreadyExists(f"customer {customer_id} exists already") from None
        return row

    def _locked(self, cur: Any, customer_id: str) -> CustomerRow:
        cur.execute(f"SELECT {_COLUMNS} FROM customer WHERE id = %s FOR UPDATE", (check_customer_id(customer_id),))
        found = cur.fetchone()
        if found is None:
            raise NotFound(f"there is no customer {customer_id}")
        return _row(found)

    def update(self, customer_id: str, name: str, email: str) -> CustomerRow:
        name = check_name(name) if name else ""
        email = check_email(email) if email else ""
        with self._outbox.transaction() as cur:
            old = self._locked(cur, customer_id)
            version = self._outbox.claim_version(cur, ENTITY, customer_id)
            now = datetime.now(UTC).replace(tzinfo=None)
            row = CustomerRow(customer_id, name or old.name, email or old.email, version, old.created_at, now)
            cur.execute(
                "UPDATE customer SET name = %s, email = %s, version = %s, updated_at = %s WHERE id = %s",
                (row.name, row.email, version, now, customer_id),
            )
            self._outbox.record(cur, ENTITY, customer_id, Operation.UPDATE, row.payload, version=version)
        return row

    def delete(self, customer_id: str) -> None:
        with self._outbox.transaction() as cur:
            self._locked(cur, customer_id)
            version = self._outbox.claim_version(cur, ENTITY, customer_id)
            cur.execute("DELETE FROM customer WHERE id = %s", (customer_id,))
            self._outbox.record(cur, ENTITY, customer_id, Operation.DELETE, version=version)

    _WITH_ORDERS = (
        f"SELECT {', '.join('c.' + c.strip() for c in _COLUMNS.split(','))}, "
        "COUNT(o.id), COALESCE(SUM(o.amount_cents), 0) FROM customer c "
        "LEFT JOIN order_replica o ON o.customer_id = c.id AND o.status = 'PLACED' "
    )

    def get(self, customer_id: str) -> CustomerRow:
        check_customer_id(customer_id)
        with contextlib.closing(self._replication.connect()) as conn, conn.cursor() as cur:
            cur.execute(self._WITH_ORDERS + "WHERE c.id = %s GROUP BY c.id", (customer_id,))
            found = cur.fetchone()
        if found is None:
            raise NotFound(f"there is no customer {customer_id}")
        return _row(found)

    def list(self, limit: int, after: str) -> list[CustomerRow]:
        with contextlib.closing(self._replication.connect()) as conn, conn.cursor() as cur:
            cur.execute(self._WITH_ORDERS + "WHERE c.id > %s GROUP BY c.id ORDER BY c.id LIMIT %s", (after, limit))
            return [_row(r) for r in cur.fetchall()]


def to_proto(row: CustomerRow) -> customers_pb2.Customer:
    return customers_pb2.Customer(
        customer_id=row.customer_id,
        name=row.name,
        email=row.email,
        version=row.version,
        order_count=row.order_count,
        order_total_cents=row.order_total_cents,
        created_at=to_timestamp(row.created_at),
        updated_at=to_timestamp(row.updated_at),
    )


class CustomerServicer(customers_pb2_grpc.CustomerServiceServicer):
    """Converts protobuf ↔ :class:`Customers` and delegates."""

    def __init__(self, customers: Customers) -> None:
        self._customers = customers

    async def CreateCustomer(
        self, request: customers_pb2.CreateCustomerRequest, context: aio.ServicerContext
    ) -> customers_pb2.Customer:
        row = await blocking(lambda: self._customers.create(request.customer_id, request.name, request.email))
        return to_proto(row)

    async def GetCustomer(
        self, request: customers_pb2.GetCustomerRequest, context: aio.ServicerContext
    ) -> customers_pb2.Customer:
        return to_proto(await blocking(lambda: self._customers.get(request.customer_id)))

    async def UpdateCustomer(
        self, request: customers_pb2.UpdateCustomerRequest, context: aio.ServicerContext
    ) -> customers_pb2.Customer:
        row = await blocking(lambda: self._customers.update(request.customer_id, request.name, request.email))
        return to_proto(row)

    async def DeleteCustomer(
        self, request: customers_pb2.DeleteCustomerRequest, context: aio.ServicerContext
    ) -> empty_pb2.Empty:
        await blocking(lambda: self._customers.delete(request.customer_id))
        return empty_pb2.Empty()

    async def ListCustomers(
        self, request: customers_pb2.ListCustomersRequest, context: aio.ServicerContext
    ) -> customers_pb2.ListCustomersResponse:
        limit = _runtime.page_size(request.page_size)
        after = _runtime.decode_token(request.page_token)
        rows = await blocking(lambda: self._customers.list(limit, after))
        token = _runtime.encode_token(rows[-1].customer_id) if len(rows) == limit else ""
        return customers_pb2.ListCustomersResponse(customers=[to_proto(r) for r in rows], next_page_token=token)


def build_server(config: MeshConfig) -> tuple[GrpcHost, Replication]:
    """CustomerService on ``config.demo.host:customers_port``, not started."""
    replication = Replication.build(config, NAME, MIGRATIONS, [ORDER_REPLICA])
    servicer = CustomerServicer(Customers(replication))
    host = build_grpc_server(
        f"{config.demo.host}:{config.demo.customers_port}",
        [lambda server: customers_pb2_grpc.add_CustomerServiceServicer_to_server(servicer, server)],
        SERVICES,
        tls=None,  # a user's own microservice: the mesh's certificates are not its to hold
    )
    return host, replication


async def serve(config: MeshConfig) -> None:
    """Build and serve until SIGTERM/SIGINT (the server is built on the running loop)."""
    await _runtime.serve(*build_server(config))


def main(argv: list[str] | None = None) -> None:
    run_process(serve, "demo-customers")


if __name__ == "__main__":
    main(sys.argv[1:])
