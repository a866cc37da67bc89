"""Leaving the shared backing services as a test found them: a namespace's
RabbitMQ topology and znodes, and the broker closing our connections on
purpose (a fault the tests provoke)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Iterable

from gridmesh.adapters import zookeeper
from gridmesh.adapters.rabbitmq import RabbitMQ
from gridmesh.config import MeshConfig
from gridmesh.core.replication import Topology


def delete_topology(config: MeshConfig, subscribers: Iterable[str]) -> None:
    """Delete the namespace's exchange and each subscriber's queue and dead-letter queue."""
    asyncio.run(_delete_topology(config, sorted(subscribers)))


async def _delete_topology(config: MeshConfig, subscribers: list[str]) -> None:
    topology = Topology(prefix=config.prefixed, max_deliveries=1)  # names only: the limit plays no part
    mq = RabbitMQ(config.rabbitmq, config.rabbitmq_password)
    await mq.start()
    try:
        for subscriber in subscribers:
            await mq.delete_queue(topology.queue(subscriber))
            await mq.delete_queue(topology.dead_letter_queue(subscriber))
        await mq.delete_exchange(topology.exchange)
    finally:
        await mq.close()


def delete_znodes(config: MeshConfig) -> None:
    """Delete everything under the namespace's ZooKeeper root."""
    zk = zookeeper.client(config.zookeeper, config.zookeeper_password)
    zk.start(timeout=10)
    try:
        zk.delete(f"/{config.namespace}", recursive=True)
    finally:
        zk.stop()
        zk.close()


def close_rabbitmq_connections(connection_name: str) -> int:
    """Have the broker close the named connections (RabbitMQ itself keeps running)."""
    listing = subprocess.run(
        ["rabbitmqctl", "-q", "list_connections", "pid", "client_properties"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    pids = [line.split("\t", 1)[0] for line in listing.splitlines() if f'"connection_name","{connection_name}"' in line]
    for pid in pids:
        subprocess.run(["rabbitmqctl", "-q", "close_connection", pid, "gridmesh test"], timeout=60, check=True)
    return len(pids)


def delete_rabbitmq_user(user: str, vhost: str) -> None:
    """Delete a user and its vhost (with whatever is left in it) from the machine's RabbitMQ."""
    for argv in (["delete_user", user], ["delete_vhost", vhost]):
        subprocess.run(["rabbitmqctl", "-q", *argv], capture_output=True, timeout=60, check=False)


def drop_mysql_accounts(namespaces: Iterable[str]) -> None:
    """Drop the MySQL accounts of these namespaces (``<ns>_gridmesh_…``, as
    ``gridmesh up`` makes them) from the machine's MariaDB, through its unix
    socket as root; nothing where that cannot be done."""
    client = shutil.which("mariadb") or shutil.which("mysql")
    names = sorted(namespaces)
    if client is None or os.geteuid() != 0 or not names:
        return
    root = [client, "--protocol=socket", "-u", "root"]
    which = " OR ".join(f"user LIKE '{ns}\\_gridmesh\\_%'" for ns in names)  # namespaces are [a-z0-9_]
    listed = subprocess.run(
        [*root, "-N", "-B", "-e", f"SELECT user, host FROM mysql.user WHERE {which}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    accounts = [line.split("\t") for line in listed.stdout.splitlines() if "\t" in line]
    drops = "".join(f"DROP USER IF EXISTS '{user}'@'{host}';\n" for user, host in accounts)
    if drops:
        subprocess.run(root, input=drops, capture_output=True, text=True, timeout=60, check=False)
