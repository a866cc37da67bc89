"""OrderService of the replication demo: orders in a MySQL database of its
own, every change published through the transactional outbox (entity type
``order``, publisher ``orders``), and a replica of CustomerService's
customers (``customers``/``customer``): an order is taken only for a
customer that replica knows.

    python -m gridmesh.demo.orders          # or: gridmesh up --demo
"""

from __future__ import annotations

import contextlib
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from grpc import aio

from gridmesh.clients.events import Operation
from gridmesh.clients.replica import ReplicaTable
from gridmesh.common.convert import to_timestamp
from gridmesh.common.errors import FailedPrecondition, InvalidArgument, NotFound
from gridmesh.config import MeshConfig
from gridmesh.demo import _runtime
from gridmesh.demo._runtime import Replication, blocking
from gridmesh.demo.customers import MAX_TEXT, check_customer_id
from gridmesh.demo.v1 import orders_pb2, orders_pb2_grpc
from gridmesh.grpc_support.server import GrpcHost, build_grpc_server, run_process

NAME = "orders"
"""Publisher and subscriber name of this service."""
ENTITY = "order"
SERVICES = (orders_pb2.DESCRIPTOR.services_by_name["OrderService"].full_name,)
PLACED, CANCELLED = "PLACED", "CANCELLED"

MIGRATIONS = (
    "CREATE TABLE orders (id VARCHAR(64) NOT NULL PRIMARY KEY, customer_id VARCHAR(64) NOT NULL, "
    "customer_name VARCHAR(200) NOT NULL, item VARCHAR(200) NOT NULL, quantity INT NOT NULL, "
    "amount_cents BIGINT NOT NULL, status VARCHAR(16) NOT NULL, version BIGINT NOT NULL, "
    "created_at DATETIME(6) NOT NULL, updated_at DATETIME(6) NOT NULL, KEY customer (customer_id, id)) "
    "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "CREATE TABLE customer_replica (id VARCHAR(255) NOT NULL PRIMARY KEY, name VARCHAR(200), "
    "email VARCHAR(200), version BIGINT NOT NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
)
CUSTOMER_REPLICA = ReplicaTable("customers", "customer", table="customer_replica", columns=("name", "email"))
MAX_QUANTITY = 1_000_000


@dataclass(frozen=True)
class OrderRow:
    order_id: str
    customer_id: str
    customer_name: str
    item: str
    quantity: int
    amount_cents: int
    status: str
    version: int
    created_at: datetime
    updated_at: datetime

    @property
    def payload(self) -> dict[str, Any]:
        """The whole entity, as published."""
        return {
            "id": self.order_id,
            "customer_id": self.customer_id,
            "item": self.item,
            "quantity": self.quantity,
            "amount_cents": self.amount_cents,
            "status": self.status,
        }


@dataclass(frozen=True)
class CustomerReplicaRow:
    customer_id: str
    name: str
    email: str
    version: int


_COLUMNS = "id, customer_id, customer_name, item, quantity, amount_cents, status, version, created_at, updated_at"


def _row(values: Any) -> OrderRow:
    i, customer_id, customer_name, item, quantity, amount, status, version, created_at, updated_at = values
    return OrderRow(
        str(i),
        str(customer_id),
        str(customer_name),
        str(item),
        int(quantity),
        int(amount),
        str(status),
        int(version),
        created_at,
        updated_at,
    )


def check_order(item: str, quantity: int, amount_cents: int) -> str:
    item = item.strip()
    if not item or len(item) > MAX_TEXT:
        raise InvalidArgument(f"item is required, at most {MAX_TEXT} characters", field="item")
    if not 1 <= quantity <= MAX_QUANTITY:
        raise InvalidArgument(f"quantity must be between 1 and {MAX_QUANTITY}, got {quantity}", field="quantity")
    if amount_cents < 0:
        raise InvalidArgument(f"amount_cents must be 0 or more, got {amount_cents}", field="amount_cents")
    return item


def check_order_id(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidArgument(f"order_id {value!r:.80} is not a UUID", field="order_id") from None


class Orders:
    """The orders and the customers replica (blocking; run via :func:`blocking`)."""

    def __init__(self, replication: Replication) -> None:
        self._replication = replication
        self._outbox = replication.outbox

    def create(self, customer_id: str, item: str, quantity: int, amount_cents: int) -> OrderRow:
        check_customer_id(customer_id)
        item = check_order(item, quantity, amount_cents)
        order_id = str(uuid.uuid4())
        now = datetime.now(UTC).replace(tzinfo=None)
        with self._outbox.transaction() as cur:
            cur.execute("SELECT name FROM customer_replica WHERE id = %s LOCK IN SHARE MODE", (customer_id,))
            customer = cur.fetchone()
            if customer is None:
                raise FailedPrecondition(
                    f"customer {customer_id} is not known to OrderService (yet): it learns customers from "
                    "CustomerService's events; retry in a moment"
                )
            version = self._outbox.claim_version(cur, ENTITY, order_id)
            row = OrderRow(
                order_id, customer_id, str(customer[0]), item, quantity, amount_cents, PLACED, version, now, now
            )
            cur.execute(
                f"INSERT INTO orders ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (order_id, customer_id, row.customer_name, item, quantity, amount_cents, PLACED, version, now, now),
            )
            self._outbox.record(cur, ENTITY, order_id, Operation.CREATE, row.payload, version=version)
        return row

    def cancel(self, order_id: str) -> OrderRow:
        order_id = check_order_id(order_id)
        with self._outbox.transaction() as cur:
            cur.execute(f"SELECT {_COLUMNS} FROM orders WHERE id = %s FOR UPDATE", (order_id,))
            found = cur.fetchone()
            if found is None:
                raise NotFound(f"there is no order {order_id}")
            old = _row(found)
            if old.status == CANCELLED:
                raise FailedPrecondition(f"order {order_id} is cancelled already")
            version = self._outbox.claim_version(cur, ENTITY, order_id)
            now = datetime.now(UTC).replace(tzinfo=None)
            cur.execute(
                "UPDATE orders SET status = %s, version = %s, updated_at = %s WHERE id = %s",
                (CANCELLED, version, now, order_id),
            )
            row = OrderRow(**{**old.__dict__, "status": CANCELLED, "version": version, "updated_at": now})
            self._outbox.record(cur, ENTITY, order_id, Operation.UPDATE, row.payload, version=version)
        return row

    def get(self, order_id: str) -> OrderRow:
        order_id = check_order_id(order_id)
        with contextlib.closing(self._replication.connect()) as conn, conn.cursor() as cur:
            cur.execute(f"SELECT {_COLUMNS} FROM orders WHERE id = %s", (order_id,))
            found = cur.fetchone()
        if found is None:
            raise NotFound(f"there is no order {order_id}")
        return _row(found)

    def list(self, customer_id: str, limit: int, after: str) -> list[OrderRow]:
        where, args = "id > %s", [after]
        if customer_id:
            where, args = "customer_id = %s AND id > %s", [check_customer_id(customer_id), after]
        with contextlib.closing(self._replication.connect()) as conn, conn.cursor() as cur:
            cur.execute(f"SELECT {_COLUMNS} FROM orders WHERE {where} ORDER BY id LIMIT %s", (*args, limit))
            return [_row(r) for r in cur.fetchall()]

    def customer(self, customer_id: str) -> CustomerReplicaRow:
        check_customer_id(customer_id)
        with contextlib.closing(self._replication.connect()) as conn, conn.cursor() as cur:
            cur.execute("SELECT id, name, email, version FROM customer_replica WHERE id = %s", (customer_id,))
            found = cur.fetchone()
        if found is None:
            raise NotFound(f"customer {customer_id} is not in OrderService's replica (or not yet)")
        return CustomerReplicaRow(str(found[0]), str(found[1]), str(found[2]), int(found[3]))


def to_proto(row: OrderRow) -> orders_pb2.Order:
    return orders_pb2.Order(
        order_id=row.order_id,
        customer_id=row.customer_id,
        customer_name=row.customer_name,
        item=row.item,
        quantity=row.quantity,
        amount_cents=row.amount_cents,
        status=orders_pb2.PLACED if row.status == PLACED else orders_pb2.CANCELLED,
        version=row.version,
        created_at=to_timestamp(row.created_at),
        updated_at=to_timestamp(row.updated_at),
    )


class OrderServicer(orders_pb2_grpc.OrderServiceServicer):
    """Converts protobuf ↔ :class:`Orders` and delegates."""

    def __init__(self, orders: Orders) -> None:
        self._orders = orders

    async def CreateOrder(
        self, request: orders_pb2.CreateOrderRequest, context: aio.ServicerContext
    ) -> orders_pb2.Order:
        row = await blocking(
            lambda: self._orders.create(request.customer_id, request.item, request.quantity, request.amount_cents)
        )
        return to_proto(row)

    async def GetOrder(self, request: orders_pb2.GetOrderRequest, context: aio.ServicerContext) -> orders_pb2.Order:
        return to_proto(await blocking(lambda: self._orders.get(request.order_id)))

    async def CancelOrder(
        self, request: orders_pb2.CancelOrderRequest, context: aio.ServicerContext
    ) -> orders_pb2.Order:
        return to_proto(await blocking(lambda: self._orders.cancel(request.order_id)))

    async def ListOrders(
        self, request: orders_pb2.ListOrdersRequest, context: aio.ServicerContext
    ) -> orders_pb2.ListOrdersResponse:
        limit = _runtime.page_size(request.page_size)
        after = _runtime.decode_token(request.page_token)
        rows = await blocking(lambda: self._orders.list(request.customer_id, limit, after))
        token = _runtime.encode_token(rows[-1].order_id) if len(rows) == limit else ""
        return orders_pb2.ListOrdersResponse(orders=[to_proto(r) for r in rows], next_page_token=token)

    async def GetCustomerReplica(
        self, request: orders_pb2.GetCustomerReplicaRequest, context: aio.ServicerContext
    ) -> orders_pb2.CustomerReplica:
        row = await blocking(lambda: self._orders.customer(request.customer_id))
        return orders_pb2.CustomerReplica(
            customer_id=row.customer_id, name=row.name, email=row.email, version=row.version
        )


def build_server(config: MeshConfig) -> tuple[GrpcHost, Replication]:
    """OrderService on ``config.demo.host:orders_port``, not started."""
    replication = Replication.build(config, NAME, MIGRATIONS, [CUSTOMER_REPLICA])
    servicer = OrderServicer(Orders(replication))
    host = build_grpc_server(
        f"{config.demo.host}:{config.demo.orders_port}",
        [lambda server: orders_pb2_grpc.add_OrderServiceServicer_to_server(servicer, server)],
        SERVICES,
        tls=None,  # a user's own microservice: the mesh's certificates are not its to hold
    )
    return host, replication


async def serve(config: MeshConfig) -> None:
    """Build and serve until SIGTERM/SIGINT (the server is built on the running loop)."""
    await _runtime.serve(*build_server(config))


def main(argv: list[str] | None = None) -> None:
    run_process(serve, "demo-orders")


if __name__ == "__main__":
    main(sys.argv[1:])
