"""Backing services for ``gridmesh up/down/status`` (SPEC §1, §4), against real servers.

ZooKeeper and the Apache Kafka broker are started on free ports under a temporary
state directory and stopped again. The machine's MariaDB (127.0.0.1:3306)
and RabbitMQ (127.0.0.1:5672) — installed and started by the session's
``backing_services`` fixture where a fresh machine had none, exactly as
``gridmesh up`` does — are only probed here: they must be reported as
external and never recorded, started or stopped.
"""

from __future__ import annotations

import contextlib
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kazoo.client import KazooClient

from gridmesh.adapters import kafka as kafka_adapter
from gridmesh.cli import backing, procs
from gridmesh.common.errors import Unavailable
from gridmesh.config import MeshConfig, load_config
from gridmesh.core.access import PeerRole
from tests.conftest import free_port, session_backing

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

CLIENT_TIMEOUT_S = 10.0


def _port_free(port: int) -> bool:
    """Nothing listens on the port and a server could bind it again."""
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return False
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def config(tmp_path: Path) -> MeshConfig:
    return load_config(
        {
            **session_backing(),  # its MariaDB accounts and RabbitMQ user, ZooKeeper and Kafka its own:
            "GRIDMESH_STATE_DIR": str(tmp_path / "state"),
            "GRIDMESH_ZOOKEEPER_HOSTS": f"127.0.0.1:{free_port()}",
            "GRIDMESH_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        }
    )


@pytest.fixture
def run_dir(config: MeshConfig) -> Iterator[Path]:
    run = config.state_path / "run"
    yield run
    for name in reversed(procs.recorded(run)):  # never leave a process behind
        procs.stop(name, run, timeout=5.0)


@pytest.fixture
def log_dir(config: MeshConfig) -> Path:
    return config.state_path / "log"


def _start(svc: backing.BackingService, config: MeshConfig, run_dir: Path, log_dir: Path) -> int:
    pid = procs.start(svc.spec(config), run_dir, log_dir)
    procs.wait_until(svc.probe, svc.start_timeout_s, svc.name, procs.log_path(svc.name, log_dir))
    return pid


def _client(config: MeshConfig) -> dict[str, Any]:
    """The settings of a client of the mesh's Kafka (TLS, as the admin)."""
    return kafka_adapter.client_settings(config, PeerRole.ADMIN)


def _create_topic(config: MeshConfig) -> str:
    topic = f"gridmesh.test.{uuid.uuid4().hex[:8]}"
    admin = AdminClient(_client(config))
    for future in admin.create_topics([NewTopic(topic, 1, 1)], operation_timeout=CLIENT_TIMEOUT_S).values():
        future.result(timeout=CLIENT_TIMEOUT_S)
    return topic


def _produce_one(config: MeshConfig) -> str:
    topic = _create_topic(config)
    producer = Producer(_client(config))
    producer.produce(topic, key=b"task-1", value=b"pending", partition=0)
    assert producer.flush(CLIENT_TIMEOUT_S) == 0
    return topic


def _consume(config: MeshConfig, topic: str, count: int) -> list[tuple[bytes | None, bytes | None]]:
    """(key, value) of the first ``count`` records of partition 0 of ``topic``
    (fewer if they do not come within the client timeout)."""
    consumer = Consumer({**_client(config), "group.id": topic, "enable.auto.commit": False})
    records: list[tuple[bytes | None, bytes | None]] = []
    try:
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])  # no group join: fast
        deadline = time.monotonic() + CLIENT_TIMEOUT_S
        while len(records) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None:
                assert msg.error() is None, msg.error()
                records.append((msg.key(), msg.value()))
        return records
    finally:
        consumer.close()


def _create_and_read_znode(hosts: str) -> bytes:
    zk = KazooClient(hosts=hosts, timeout=CLIENT_TIMEOUT_S)
    zk.start(timeout=CLIENT_TIMEOUT_S)
    try:
        zk.create("/gridmesh/test/node", b"hello", makepath=True)
        data, _ = zk.get("/gridmesh/test/node")
        return bytes(data)
    finally:
        zk.stop()
        zk.close()


def test_zookeeper_started_from_its_spec_serves_clients_and_stops_cleanly(
    config: MeshConfig, run_dir: Path, log_dir: Path
) -> None:
    zk = backing.ZooKeeper.from_config(config, backing.AptInstaller())
    assert not zk.probe()

    pid = _start(zk, config, run_dir, log_dir)

    assert zk.probe()
    assert _create_and_read_znode(config.zookeeper.hosts) == b"hello"
    assert (config.state_path / "data" / "zookeeper" / "data" / "version-2").is_dir()
    assert "binding to port" in procs.log_path("zookeeper", log_dir).read_text()  # it logs
    assert procs.stop("zookeeper", run_dir, zk.stop_timeout_s)
    assert _gone(pid)
    assert _port_free(zk.port)
    assert not zk.probe()


def test_kafka_started_from_its_spec_carries_a_message_keeps_it_across_a_restart_and_stops_cleanly(
    config: MeshConfig, run_dir: Path, log_dir: Path
) -> None:
    kafka = backing.Kafka.from_config(config)
    assert not kafka.probe()
    kafka.ensure_installed(lambda msg: None)

    pid = _start(kafka, config, run_dir, log_dir)

    assert kafka.probe()
    topic = _produce_one(config)
    assert _consume(config, topic, 1) == [(b"task-1", b"pending")]
    assert (config.state_path / "data" / "kafka" / "logs" / "meta.properties").is_file()
    assert "Kafka Server started" in procs.log_path("kafka", log_dir).read_text()  # it logs
    assert procs.stop("kafka", run_dir, kafka.stop_timeout_s)
    assert _gone(pid)
    assert _port_free(kafka.port)
    assert not kafka.probe()

    # A restarted broker still has the record: its log is on disk
    _start(kafka, config, run_dir, log_dir)
    assert _consume(config, topic, 1) == [(b"task-1", b"pending")]


def test_a_new_kafka_cluster_id_is_never_read_as_an_option(monkeypatch):
    # A cluster id is URL-safe base64, which may start with '-': the storage
    # tool took such an id ("-48Qgrr…") for an option and refused to format.
    drawn = iter([b"\xf8" + bytes(15), bytes(16)])  # the first encodes to "-AAA…"
    monkeypatch.setattr(backing.uuid, "uuid4", lambda: uuid.UUID(bytes=next(drawn)))
    assert backing.kafka_cluster_id() == "AAAAAAAAAAAAAAAAAAAAAA"


def test_kafka_killed_mid_stream_keeps_every_acknowledged_record(
    config: MeshConfig, run_dir: Path, log_dir: Path
) -> None:
    kafka = backing.Kafka.from_config(config)
    kafka.ensure_installed(lambda msg: None)
    pid = _start(kafka, config, run_dir, log_dir)
    topic = _create_topic(config)
    producer = Producer({**_client(config), "acks": "all"})
    for i in range(500):
        producer.produce(topic, key=str(i).encode(), value=b"x", partition=0)
    assert producer.flush(CLIENT_TIMEOUT_S) == 0  # every record acknowledged

    psutil.Process(pid).kill()  # kill -9: no clean shutdown, nothing flushed by Kafka itself
    procs.wait_until(lambda: _gone(pid), 10.0, "kafka", "")
    _start(kafka, config, run_dir, log_dir)

    assert [key for key, _ in _consume(config, topic, 500)] == [str(i).encode() for i in range(500)]


def test_ensure_backing_uses_running_services_and_starts_and_records_only_the_missing_ones(
    config: MeshConfig, run_dir: Path, log_dir: Path
) -> None:
    # Given the machine's MariaDB and RabbitMQ, and nothing on the ZooKeeper and Kafka ports
    steps: list[tuple[str, str]] = []

    # When
    how = backing.ensure_backing(config, run_dir, log_dir, lambda name, msg: steps.append((name, msg)))

    # Then
    assert how == {
        "mysql": backing.HOW_EXTERNAL,
        "rabbitmq": backing.HOW_EXTERNAL,
        "zookeeper": backing.HOW_STARTED,
        "kafka": backing.HOW_STARTED,
    }
    assert procs.recorded(run_dir) == ["zookeeper", "kafka"]
    assert {name for name, _ in steps} == {"mysql", "rabbitmq", "zookeeper", "kafka"}
    assert all(svc.probe() for svc in backing.backing_services(config))
    pids = {name: procs.alive(name, run_dir) for name in ("zookeeper", "kafka")}

    # A second run changes nothing
    again = backing.ensure_backing(config, run_dir, log_dir, lambda name, msg: None)
    assert again["zookeeper"] == again["kafka"] == backing.HOW_RUNNING
    assert {name: procs.alive(name, run_dir) for name in ("zookeeper", "kafka")} == pids

    # And stopping stops exactly what was started
    assert backing.stop_backing(config, run_dir, lambda name, msg: None) == ["kafka", "zookeeper"]
    assert procs.recorded(run_dir) == []
    assert all(pid is not None and _gone(pid) for pid in pids.values())
    zk_port = backing.ZooKeeper.from_config(config, backing.AptInstaller()).port
    assert _port_free(zk_port) and _port_free(backing.Kafka.from_config(config).port)
    machine = backing.backing_services(config)[:2]
    assert [svc.name for svc in machine] == ["mysql", "rabbitmq"]
    assert all(svc.probe() for svc in machine)


def test_the_machines_mariadb_and_rabbitmq_answer_their_probes(backing_services: MeshConfig) -> None:
    services = backing.backing_services(backing_services)
    mysql, rabbitmq = services[0], services[1]

    assert (mysql.name, mysql.address, mysql.check()) == ("mysql", "127.0.0.1:3306", None)
    assert (rabbitmq.name, rabbitmq.address, rabbitmq.check()) == ("rabbitmq", "127.0.0.1:5672", None)


def test_probes_of_absent_services_fail_quickly_with_a_reason() -> None:
    ports = {name: free_port() for name in ("mysql", "rabbitmq", "zookeeper", "kafka")}
    config = load_config(
        {
            "GRIDMESH_MYSQL_PORT": str(ports["mysql"]),
            "GRIDMESH_RABBITMQ_PORT": str(ports["rabbitmq"]),
            "GRIDMESH_ZOOKEEPER_HOSTS": f"127.0.0.1:{ports['zookeeper']}",
            "GRIDMESH_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{ports['kafka']}",
        }
    )
    for svc in backing.backing_services(config):
        started = time.monotonic()
        reason = svc.check()
        assert reason and str(ports[svc.name]) in reason
        assert time.monotonic() - started < backing.PROBE_TIMEOUT_S


def test_a_port_held_by_something_else_is_reported_not_fought_over(
    config: MeshConfig, run_dir: Path, log_dir: Path
) -> None:
    # Given a plain TCP listener where ZooKeeper should be
    zk = backing.ZooKeeper.from_config(config, backing.AptInstaller())
    with socket.socket() as squatter:
        squatter.bind((zk.host, zk.port))
        squatter.listen()
        # When / Then
        with pytest.raises(Unavailable, match="in use, but the zookeeper probe fails"):
            backing.ensure_backing(config, run_dir, log_dir, lambda name, msg: None, services=[zk])
    assert procs.recorded(run_dir) == []


def test_mariadb_and_rabbitmq_would_start_with_the_packages_defaults(config: MeshConfig) -> None:
    # Only the specs: the machine's servers are never started or stopped here.
    apt = backing.AptInstaller()
    rabbit = backing.RabbitMQ.from_config(config, apt).spec(config)
    assert rabbit.argv == ["/usr/lib/rabbitmq/bin/rabbitmq-server"]
    assert rabbit.user == "rabbitmq" and rabbit.cwd == rabbit.env["HOME"] == "/var/lib/rabbitmq"  # type: ignore[index]
    mysql = backing.MySQL.from_config(config, apt).spec(config)
    assert mysql.argv == ["/usr/sbin/mariadbd", "--user=mysql", "--bind-address=127.0.0.1", "--port=3306"]


def test_a_server_of_an_ensemble_is_configured_with_every_server_and_its_own_id(tmp_path: Path) -> None:
    config = load_config(
        {
            "GRIDMESH_STATE_DIR": str(tmp_path),
            "GRIDMESH_ZOOKEEPER_HOSTS": "10.9.0.1:2181,10.9.0.2:2181,10.9.0.3:2181",
            "GRIDMESH_ZOOKEEPER_SERVER_ID": "2",
        }
    )
    zk = backing.ZooKeeper.from_config(config, backing.AptInstaller())
    assert zk.address == "10.9.0.2:2181"  # its own entry: where it listens and is probed
    spec = zk.spec(config)
    cfg = Path(spec.argv[-1]).read_text()
    assert "clientPortAddress=10.9.0.2\n" in cfg
    for i in (1, 2, 3):
        assert f"server.{i}=10.9.0.{i}:2888:3888\n" in cfg
    assert (tmp_path / "data" / "zookeeper" / "data" / "myid").read_text().strip() == "2"
