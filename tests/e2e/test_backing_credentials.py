"""The backing services as the mesh uses them (issue 12): each component
logs in to MariaDB as an account of its own that reaches its own database
only, RabbitMQ as the mesh's user on its own vhost (never ``guest``),
ZooKeeper as a digest identity its znodes are restricted to, Kafka over
mutual TLS with the mesh's CA; and no
password or key shows in any process's argv or in the mesh's logs."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import subprocess
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import psutil
import pymysql
import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError

from gridmesh.adapters import kafka, pki, zookeeper
from gridmesh.cli import backing, mesh
from gridmesh.config import RABBITMQ_SECRET, ZOOKEEPER_SECRET, MeshConfig
from gridmesh.core.access import PeerRole

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

_ACCESS_DENIED = {1044, 1142}  # no right on the database / on the table


def _grant_targets(config: MeshConfig, component: str) -> set[tuple[str, str]]:
    """(privileges, database) of each GRANT the component's account holds on a database."""
    conn = pymysql.connect(**dataclasses.asdict(config.mysql_login(component)))
    with contextlib.closing(conn), conn.cursor() as cur:
        cur.execute("SHOW GRANTS")
        grants = [row[0] for row in cur.fetchall()]
    found = set()
    for grant in grants:
        match = re.match(r"GRANT (.+) ON `(.+)`\.\* TO", grant)
        if match:
            found.add((match.group(1), match.group(2).replace("\\_", "_")))
        else:
            assert grant.startswith("GRANT USAGE ON *.*"), grant  # the login itself, no right
    return found


def test_each_component_has_a_mysql_account_of_its_own_with_rights_on_its_own_database_only(mesh_config):
    db = mesh_config.database
    assert _grant_targets(mesh_config, "scheduler") == {
        ("ALL PRIVILEGES", db("scheduler")),
        ("SELECT", db("analytics")),
    }
    for component in ("storekeeper", "auth", "analytics", "demo_orders", "demo_customers"):
        assert _grant_targets(mesh_config, component) == {("ALL PRIVILEGES", db(component))}
    assert _grant_targets(mesh_config, "bench") == {("ALL PRIVILEGES", db("bench") + "_%")}
    accounts = {mesh_config.mysql_account(c) for c in ("scheduler", "storekeeper", "auth")}
    assert len(accounts) == 3  # three accounts, not one shared


def test_an_account_is_refused_another_components_database(mesh_config):
    store = pymysql.connect(**dataclasses.asdict(mesh_config.mysql_login("storekeeper")))
    with contextlib.closing(store), store.cursor() as cur:
        cur.execute(f"SELECT COUNT(*) FROM `{mesh_config.database('storekeeper')}`.results")  # its own: fine
        for statement in (
            f"SELECT COUNT(*) FROM `{mesh_config.database('scheduler')}`.tasks",
            f"SELECT COUNT(*) FROM `{mesh_config.database('auth')}`.api_keys",
            f"DROP DATABASE `{mesh_config.database('scheduler')}`",
        ):
            with pytest.raises(pymysql.err.OperationalError) as refused:
                cur.execute(statement)
            assert refused.value.args[0] in _ACCESS_DENIED, statement
    scheduler = pymysql.connect(**dataclasses.asdict(mesh_config.mysql_login("scheduler")))
    with contextlib.closing(scheduler), scheduler.cursor() as cur:
        with pytest.raises(pymysql.err.OperationalError) as refused:
            cur.execute(f"CREATE TABLE `{mesh_config.database('analytics')}`.x (i INT)")  # it may only read there
        assert refused.value.args[0] in _ACCESS_DENIED


def test_the_eventmanager_reaches_rabbitmq_as_the_meshs_user_on_its_own_vhost_never_as_guest(mesh_config):
    listing = subprocess.run(
        ["rabbitmqctl", "-q", "list_connections", "user", "vhost", "client_properties"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    ours = [line.split("\t")[:2] for line in listing.splitlines() if mesh_config.namespace in line]
    assert ours, listing  # the EventManager's connection, named after the namespace
    assert all(where == [mesh_config.rabbitmq.user, mesh_config.rabbitmq.vhost] for where in ours), ours
    assert mesh_config.rabbitmq.user != "guest"
    # The user has no right outside its vhost.
    params = pika.ConnectionParameters(
        host=mesh_config.rabbitmq.host,
        port=mesh_config.rabbitmq.port,
        virtual_host="/",
        credentials=pika.PlainCredentials(mesh_config.rabbitmq.user, mesh_config.rabbitmq_password),
        connection_attempts=1,
    )
    with pytest.raises((pika.exceptions.ProbableAccessDeniedError, pika.exceptions.ConnectionClosedByBroker)):
        pika.BlockingConnection(params).close()


def test_the_meshs_znodes_are_closed_to_anyone_without_its_zookeeper_identity(mesh_config):
    anonymous = KazooClient(hosts=mesh_config.zookeeper.hosts)
    anonymous.start(timeout=10)
    try:
        for path in (mesh_config.zk_root, f"{mesh_config.zk_root}/scheduler/election"):
            with pytest.raises(NoAuthError):
                anonymous.get_children(path)
            with pytest.raises(NoAuthError):
                anonymous.create(f"{path}/intruder")
    finally:
        anonymous.stop()
        anonymous.close()
    mine = zookeeper.client(mesh_config.zookeeper, mesh_config.zookeeper_password)
    mine.start(timeout=10)
    try:
        acls, _ = mine.get_acls(mesh_config.zk_root)
        assert [(acl.id.scheme, acl.id.id.split(":")[0]) for acl in acls] == [("digest", mesh_config.zookeeper.user)]
        assert "election" in mine.get_children(f"{mesh_config.zk_root}/scheduler")
    finally:
        mine.stop()
        mine.close()


def _secrets(config: MeshConfig) -> dict[str, str]:
    """Every password of the mesh and the local admin's key, by where it is kept."""
    found = {str(config.credentials_path): config.credentials_path.read_text().strip()}
    for account in backing.mysql_accounts(config):
        found[str(account.password_file)] = account.password() or ""
    for name in (RABBITMQ_SECRET, ZOOKEEPER_SECRET):
        found[name] = config.secret(name)
    assert all(len(secret) >= 20 for secret in found.values()), "every secret is there and random"
    return found


def test_no_password_or_key_shows_in_any_argv_or_in_the_meshs_logs(mesh_config):
    secrets = _secrets(mesh_config)
    argvs = []
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            argvs.append(" ".join(proc.info["cmdline"] or []))
    assert len(argvs) > 10
    logs = [path for path in Path(mesh.log_dir(mesh_config)).rglob("*") if path.is_file()]
    assert any(path.name == "scheduler.log" for path in logs)
    texts = [path.read_text(errors="replace") for path in logs]
    for where, secret in secrets.items():
        assert not any(secret in argv for argv in argvs), f"the secret of {where} is in a process's argv"
        assert not any(secret in text for text in texts), f"the secret of {where} is in a log"


def test_kafka_takes_only_mutual_tls_clients_of_the_meshs_ca(mesh_config, tmp_path):
    def lists_brokers(settings: dict[str, Any]) -> bool:
        try:
            return bool(AdminClient({**settings, "socket.timeout.ms": 3000}).list_topics(timeout=3).brokers)
        except KafkaException:
            return False

    admin = kafka.client_settings(mesh_config, PeerRole.ADMIN)
    assert admin["security.protocol"] == "SSL" and lists_brokers(admin)
    bootstrap = {"bootstrap.servers": mesh_config.kafka.bootstrap_servers, "logger": logging.getLogger("t")}
    assert not lists_brokers(bootstrap)  # plaintext
    assert not lists_brokers({**bootstrap, "security.protocol": "SSL", "ssl.ca.location": admin["ssl.ca.location"]})
    pki.ensure(tmp_path, [PeerRole.ADMIN])  # another CA's certificate
    foreign = {
        "ssl.certificate.location": str(pki.cert_path(tmp_path, PeerRole.ADMIN)),
        "ssl.key.location": str(pki.key_path(tmp_path, PeerRole.ADMIN)),
    }
    assert not lists_brokers({**admin, **foreign})
