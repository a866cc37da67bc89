"""SPEC §3: nodes join and leave at any time (membership in ZooKeeper and
ListWorkers; DrainWorker finishes what runs, then deregisters), and every
life-cycle step of a task reaches its Kafka topic."""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from kazoo.client import KazooClient

from gridmesh.adapters import kafka, zookeeper
from gridmesh.config import MeshConfig
from gridmesh.core.access import PeerRole
from gridmesh.core.lifecycle import LifecycleKind
from gridmesh.v1 import common_pb2, scheduler_pb2, worker_pb2, worker_pb2_grpc
from tests.e2e.nodes import exited, extra_node, listed_workers
from tests.helpers import http_json, mesh_channel, wait_for

GRIDMESH = str(Path(sys.executable).parent / "gridmesh")


def gridmesh(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GRIDMESH, *args], env=env, capture_output=True, text=True, timeout=90)


def submit(edge: str, task_type: str, params: dict) -> str:
    status, body = http_json(edge, "POST", "/v1/tasks", {"task_type": task_type, "params": params, "result_dir": "w"})
    assert status == 200, body
    return str(body["task_id"])


def task(edge: str, task_id: str) -> dict:
    return dict(http_json(edge, "GET", f"/v1/tasks/{task_id}")[1])


def succeeded(edge: str, task_id: str) -> dict | None:
    final = task(edge, task_id)
    return final if final["state"] == "SUCCEEDED" else None


@pytest.fixture
def zk(mesh_config: MeshConfig) -> Iterator[KazooClient]:
    client = zookeeper.client(mesh_config.zookeeper, mesh_config.zookeeper_password)
    client.start(timeout=10)
    try:
        yield client
    finally:
        client.stop()
        client.close()


def worker_ids_in_zookeeper(zk: KazooClient, config: MeshConfig) -> set[str]:
    return set(zk.get_children(f"{config.zk_root}/workers"))


def test_a_node_joins_and_a_drained_node_finishes_its_task_then_leaves(mesh_config, mesh_environment, edge, zk):
    with extra_node(mesh_config, mesh_environment, edge) as node:
        worker_id = node.worker_id
        assert worker_id in worker_ids_in_zookeeper(zk, mesh_config)
        assert json.loads(zk.get(f"{mesh_config.zk_root}/workers/{worker_id}")[0])["address"] == node.address

        ids = [submit(edge, "sleep", {"ms": 700}) for _ in range(6)]
        channel = mesh_channel(mesh_config, node.address, PeerRole.WORKER)
        stub = worker_pb2_grpc.WorkerStub(channel)
        busy = wait_for(
            "the new node to run a task",
            lambda: stub.GetWorkerStatus(worker_pb2.GetWorkerStatusRequest(), timeout=5).running,
        )
        draining = stub.DrainWorker(worker_pb2.DrainWorkerRequest(), timeout=5)
        assert draining.state == scheduler_pb2.DRAINING
        channel.close()

        finals = {t: wait_for(f"{t} to succeed", functools.partial(succeeded, edge, t)) for t in ids}
        ran_here = busy[0].task_id
        assert finals[ran_here]["worker_id"] == worker_id and finals[ran_here]["attempt"] == 1
        # After draining, the node deregistered and exited: gone from ZooKeeper and ListWorkers.
        wait_for("the node to leave", lambda: worker_id not in listed_workers(edge))
        wait_for("its znode to go", lambda: worker_id not in worker_ids_in_zookeeper(zk, mesh_config))
        wait_for("its process to exit", lambda: exited(mesh_config, node))


def test_drain_node_through_the_edge_reaches_the_node_over_its_pull_stream(mesh_config, mesh_environment, edge):
    with extra_node(mesh_config, mesh_environment, edge) as node:
        ids = [submit(edge, "sleep", {"ms": 700}) for _ in range(4)]
        running = wait_for("the node to run a task", lambda: listed_workers(edge)[node.worker_id]["running_task_ids"])
        status, info = http_json(edge, "POST", f"/v1/workers/{node.worker_id}:drain", {})
        assert status == 200, info
        assert info["state"] == "DRAINING" and info["worker_id"] == node.worker_id
        again = http_json(edge, "POST", f"/v1/workers/{node.worker_id}:drain", {})
        assert again[0] == 200 and again[1]["state"] == "DRAINING"
        finals = {t: wait_for(f"{t} to succeed", functools.partial(succeeded, edge, t)) for t in ids}
        # What the node held ran there, or (not started yet) was given back to a
        # node with a free slot: either way in its first attempt.
        assert all(finals[t]["attempt"] == 1 for t in running)
        assert any(finals[t]["worker_id"] == node.worker_id for t in running)
        wait_for("the node to leave", lambda: node.worker_id not in listed_workers(edge))
        wait_for("its process to exit", lambda: exited(mesh_config, node))


def test_drain_node_of_an_unknown_worker_is_404_naming_it(edge):
    status, body = http_json(edge, "POST", "/v1/workers/no-such-node:drain", {})
    assert status == 404 and "no-such-node" in body["message"], body


def test_gridmesh_worker_drain_waits_until_the_node_has_left_and_an_unknown_node_fails_naming_it(
    mesh_config, mesh_environment, edge
):
    with extra_node(mesh_config, mesh_environment, edge) as node:
        ids = [submit(edge, "sleep", {"ms": 300}) for _ in range(4)]
        wait_for("a task on the node", lambda: listed_workers(edge)[node.worker_id]["running_task_ids"])
        run = gridmesh(mesh_environment, "worker", "drain", node.worker_id, "--wait", "--timeout", "60")
        assert run.returncode == 0, run.stderr
        first, *_, last = run.stdout.splitlines()
        assert re.fullmatch(rf"{node.worker_id}  DRAINING: finishing [0-2] running tasks?, then it leaves", first), (
            first
        )
        assert last == f"{node.worker_id} left"
        assert node.worker_id not in listed_workers(edge)
        wait_for("its process to exit", lambda: exited(mesh_config, node))
        for task_id in ids:
            wait_for(f"{task_id} to succeed", functools.partial(succeeded, edge, task_id))
    unknown = gridmesh(mesh_environment, "worker", "drain", "no-such-node")
    assert unknown.returncode == 1 and "no-such-node" in unknown.stderr and "ListWorkers" in unknown.stderr


def test_every_life_cycle_step_reaches_its_kafka_topic(mesh_config, edge):
    task_id = submit(edge, "echo", {"k": "v"})
    wait_for("the task to succeed", lambda: task(edge, task_id)["state"] == "SUCCEEDED")
    consumer = Consumer(
        {**kafka.client_settings(mesh_config, PeerRole.ADMIN), "group.id": "t", "enable.auto.commit": False}
    )
    try:
        kinds = (LifecycleKind.PENDING, LifecycleKind.STARTED, LifecycleKind.COMPLETED)
        topics = {mesh_config.topic(kind.value): kind for kind in kinds}
        partitions = []
        for topic in topics:
            metadata = consumer.list_topics(topic, timeout=10).topics[topic]
            partitions += [TopicPartition(topic, p, 0) for p in metadata.partitions]
        consumer.assign(partitions)
        seen: dict[LifecycleKind, common_pb2.TaskLifecycleEvent] = {}

        def poll() -> bool:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None and message.key() == task_id.encode():
                event = common_pb2.TaskLifecycleEvent.FromString(message.value() or b"")
                seen[topics[message.topic()]] = event
            return len(seen) == len(kinds)

        wait_for("the pending, started and completed events", poll, timeout=60, interval=0)
    finally:
        consumer.close()
    assert all(e.task_id == task_id and e.task_type == "echo" and e.attempt == 1 for e in seen.values())
    assert seen[LifecycleKind.PENDING].event_type == common_pb2.TASK_PENDING
    assert seen[LifecycleKind.STARTED].worker_id and seen[LifecycleKind.COMPLETED].worker_id
    assert (
        seen[LifecycleKind.PENDING].occurred_at.ToDatetime() <= seen[LifecycleKind.COMPLETED].occurred_at.ToDatetime()
    )
