"""A whole mesh with the replication demo (CustomerService + OrderService),
for the tests/e2e/test_replication*.py modules: start it, kill and restart
its processes, read the demo databases, and clean everything up (processes,
databases, queues, znodes)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pymysql

from gridmesh.cli import backing, mesh, procs
from gridmesh.clients import EventClient
from gridmesh.config import MeshConfig, load_config
from gridmesh.demo.v1 import customers_pb2, customers_pb2_grpc, orders_pb2_grpc
from tests.cleanup import delete_topology, delete_znodes
from tests.conftest import free_port, mesh_env
from tests.helpers import wait_for

PUBLISHER_ROWS = "SELECT id, name, email, version FROM customer ORDER BY id"
REPLICA_ROWS = "SELECT id, name, email, version FROM customer_replica ORDER BY id"


@dataclass
class DemoMesh:
    config: MeshConfig
    env: dict[str, str]
    edge: str
    test_subscribers: set[str]

    @property
    def runs(self) -> Path:
        return mesh.run_dir(self.config)

    def component(self, name: str) -> mesh.Component:
        return next(c for c in mesh.components(self.config, 0, self.env) if c.name == name)

    def pid(self, name: str) -> int:
        pid = procs.alive(name, self.runs)
        assert pid, f"{name} is not running"
        return pid

    def kill9(self, name: str) -> None:
        """SIGKILL the process (no shutdown of any kind) and wait until it is gone."""
        pid = self.pid(name)
        os.kill(pid, signal.SIGKILL)
        wait_for(f"{name} to die", lambda: procs.alive(name, self.runs) != pid, timeout=10)

    def start(self, name: str) -> None:
        """Start ``name`` (if it is down) and wait until it is healthy."""
        component = self.component(name)
        procs.stop(name, self.runs)
        procs.start(component.spec, self.runs, mesh.log_dir(self.config))
        procs.wait_until(lambda: mesh.component_healthy(self.config, component), 30, name)

    # -- the demo services ----------------------------------------------------------

    def customers(self) -> customers_pb2_grpc.CustomerServiceStub:
        """CustomerService, directly (not through Envoy)."""
        channel = grpc.insecure_channel(f"{self.config.demo.host}:{self.config.demo.customers_port}")
        return customers_pb2_grpc.CustomerServiceStub(channel)

    def orders(self) -> orders_pb2_grpc.OrderServiceStub:
        channel = grpc.insecure_channel(f"{self.config.demo.host}:{self.config.demo.orders_port}")
        return orders_pb2_grpc.OrderServiceStub(channel)

    def events(self) -> EventClient:
        """The EventManager through the edge."""
        return EventClient(self.edge, rpc_timeout_s=20)

    def connect(self, service: str) -> pymysql.connections.Connection:
        login = self.config.mysql_login(f"demo_{service}")
        return pymysql.connect(**dataclasses.asdict(login), database=self.config.database(f"demo_{service}"))

    def rows(self, service: str, query: str, args: Any = None) -> list[tuple[Any, ...]]:
        with contextlib.closing(self.connect(service)) as conn, conn.cursor() as cur:
            cur.execute(query, args)
            return list(cur.fetchall())

    def replica_matches_publisher(self) -> bool:
        """OrderService's customer replica holds exactly CustomerService's customers."""
        return self.rows("customers", PUBLISHER_ROWS) == self.rows("orders", REPLICA_ROWS)

    def create_customers(self, count: int, prefix: str) -> list[customers_pb2.Customer]:
        stub = self.customers()
        return [
            stub.CreateCustomer(
                customers_pb2.CreateCustomerRequest(
                    customer_id=f"{prefix}-{i}", name=f"Customer {i}", email=f"c{i}@example.com"
                ),
                timeout=10,
            )
            for i in range(count)
        ]


@contextlib.contextmanager
def demo_mesh(state_dir: Path) -> Iterator[DemoMesh]:
    """A mesh (no worker nodes) with the demo enabled, under a fresh namespace."""
    env = mesh_env(
        state_dir,
        GRIDMESH_DEMO_ENABLED="true",
        GRIDMESH_DEMO_CUSTOMERS_PORT=str(free_port()),
        GRIDMESH_DEMO_ORDERS_PORT=str(free_port()),
        GRIDMESH_EVENTMANAGER_MAX_REDELIVERIES="3",
        GRIDMESH_LOG_LEVEL="INFO",
        GRIDMESH_ANALYTICS_ENABLED="false",  # no Spark job: replication does not need it
    )
    config = load_config(env)
    fixture = DemoMesh(config, env, f"{config.envoy.host}:{config.envoy.port}", set())
    try:
        mesh.up(config, workers=0, env=env, progress=lambda *_: None)
        wait_for(
            "the demo to answer through Envoy",
            lambda: _answers_through_edge(fixture),
            timeout=30,
        )
        yield fixture
    finally:
        mesh.down(config, lambda *_: None)
        cleanup(config, {"customers", "orders", *fixture.test_subscribers})


def _answers_through_edge(fm: DemoMesh) -> bool:
    from tests.helpers import http

    return all(http(fm.edge, "GET", path)[0] == 200 for path in ("/demo/v1/customers", "/demo/v1/orders"))


def cleanup(config: MeshConfig, subscribers: set[str]) -> None:
    """Drop the namespace's databases, delete its queues, exchange and znodes."""
    for account in backing.mysql_accounts(config):
        password = account.password()
        if password is None:
            continue
        m = config.mysql
        server = pymysql.connect(host=m.host, port=m.port, user=account.name, password=password)
        with contextlib.closing(server) as conn, conn.cursor() as cur:
            cur.execute("SHOW DATABASES LIKE %s", (account.name.replace("_", "\\_") + "%",))  # its own
            for (name,) in cur.fetchall():
                cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
    delete_topology(config, subscribers)
    delete_znodes(config)


@contextlib.contextmanager
def rabbitmq_stopped(config: MeshConfig) -> Iterator[None]:
    """Stop the RabbitMQ application (every connection drops, durable queues
    stay on disk) and start it again on leaving, waiting until ``config``'s
    user opens its vhost again."""
    subprocess.run(["rabbitmqctl", "-q", "stop_app"], timeout=120, check=True)
    try:
        yield
    finally:
        subprocess.run(["rabbitmqctl", "-q", "start_app"], timeout=180, check=True)
        rabbit = backing.RabbitMQ.from_config(config, backing.AptInstaller())
        wait_for("RabbitMQ to accept connections again", rabbit.probe, timeout=120, interval=0.2)


def new_name(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"
