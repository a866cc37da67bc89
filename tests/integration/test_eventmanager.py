"""SPEC §3 "Event-driven replication" and the EventManager rows of §2, against
the real RabbitMQ (127.0.0.1:5672, never restarted here) and a ZooKeeper this
module starts on a free port and stops at the end.

Every EventManager runs in-process on port 0 (``build_server``) and is
driven through a grpc.aio client. The module uses its own namespace and
deletes its exchange and queues at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gridmesh.adapters.rabbitmq import RabbitMQ
from gridmesh.common.convert import dict_to_struct
from gridmesh.common.errors import Unavailable
from gridmesh.config import MeshConfig, load_config
from gridmesh.core.access import PeerRole
from gridmesh.eventmanager import EventManagerProcess, build_server
from gridmesh.v1 import common_pb2, eventmanager_pb2, eventmanager_pb2_grpc
from tests.cleanup import close_rabbitmq_connections, delete_topology
from tests.conftest import free_port, session_backing
from tests.helpers import certificates, mesh_aio_channel

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ZK_SCRIPT = "/usr/share/zookeeper/bin/zkServer.sh"
ZK_JAVA_DIR = Path("/usr/share/java")
MAX_DELIVERIES = 3
WAIT_S = 20.0
T = TypeVar("T")

EM = eventmanager_pb2
Stub = eventmanager_pb2_grpc.EventManagerStub


# -- backing services ----------------------------------------------------------


def _zk_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"srvr")
            return sock.recv(64).startswith(b"Zookeeper version")
    except OSError:
        return False


@pytest.fixture(scope="module")
def zookeeper_hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A ZooKeeper of this module's own, so nothing else's can vanish under it."""
    assert os.access(ZK_SCRIPT, os.X_OK) and shutil.which("java"), "ZooKeeper (Debian package) is not installed"
    root = tmp_path_factory.mktemp("zookeeper")
    port = free_port()
    (root / "data").mkdir()
    cfg = root / "zoo.cfg"
    cfg.write_text(
        f"tickTime=2000\ndataDir={root / 'data'}\nclientPort={port}\nclientPortAddress=127.0.0.1\n"
        "maxClientCnxns=0\nadmin.enableServer=false\n4lw.commands.whitelist=srvr\n"
    )
    flags = ["-Xmx128m"]
    bridge = [ZK_JAVA_DIR / "slf4j-log4j12.jar", ZK_JAVA_DIR / "log4j-1.2.jar"]
    if all(jar.is_file() for jar in bridge):
        flags += ["-cp", ":".join(str(p) for p in [ZK_JAVA_DIR / "zookeeper.jar", *bridge])]
    log = (root / "zookeeper.log").open("wb")
    proc = subprocess.Popen(
        [ZK_SCRIPT, "start-foreground", str(cfg)],
        cwd=root,
        env={**os.environ, "JMXDISABLE": "true", "JVMFLAGS": " ".join(flags), "ZOO_LOG_DIR": str(root)},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not _zk_answers(port):
            assert proc.poll() is None, f"ZooKeeper exited: see {root / 'zookeeper.log'}"
            assert time.monotonic() < deadline, "ZooKeeper did not answer within 60 s"
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        log.close()


_used_subscribers: set[str] = set()


@pytest.fixture(scope="module")
def config(zookeeper_hosts: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshConfig]:
    """A fresh namespace; its exchange and queues are deleted at the end."""
    cfg = load_config(
        {
            "GRIDMESH_NAMESPACE": f"t{uuid.uuid4().hex[:10]}",
            "GRIDMESH_STATE_DIR": str(tmp_path_factory.mktemp("state")),
            **session_backing(),
            "GRIDMESH_ZOOKEEPER_HOSTS": zookeeper_hosts,
            "GRIDMESH_EVENTMANAGER_PORT": "0",
            "GRIDMESH_EVENTMANAGER_MAX_REDELIVERIES": str(MAX_DELIVERIES),
            "GRIDMESH_EVENTMANAGER_MAX_PAYLOAD_BYTES": "1024",
        }
    )
    certificates(cfg)
    yield cfg
    delete_topology(cfg, _used_subscribers)


_counter = itertools.count(1)


def names(prefix: str) -> str:
    """A service name no other test uses (queues are shared by name)."""
    name = f"{prefix}{next(_counter)}"
    _used_subscribers.add(name)
    return name


# -- helpers -------------------------------------------------------------------


@contextlib.asynccontextmanager
async def eventmanager(config: MeshConfig) -> AsyncIterator[tuple[EventManagerProcess, Stub]]:
    process = build_server(config)
    await process.start()
    channel = mesh_aio_channel(config, f"127.0.0.1:{process.port}", PeerRole.EVENTMANAGER)
    try:
        yield process, Stub(channel)
    finally:
        await channel.close()
        await process.stop(grace_s=1)


async def eventually(probe: Callable[[], Awaitable[T]], ok: Callable[[T], bool], what: str) -> T:
    """Poll ``probe`` until ``ok`` holds, failing after WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while True:
        value = await probe()
        if ok(value):
            return value
        assert time.monotonic() < deadline, f"{what}: still {value!r} after {WAIT_S} s"
        await asyncio.sleep(0.05)


def event(publisher: str, entity_type: str, entity_id: str = "c-1", /, **overrides: Any) -> common_pb2.EntityEvent:
    fields: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "publisher": publisher,
        "entity_type": entity_type,
        "entity_id": entity_id,
        "operation": common_pb2.CREATE,
        "version": 1,
        "payload": dict_to_struct({"id": entity_id, "name": "Ada"}),
    }
    fields.update(overrides)
    return common_pb2.EntityEvent(**fields)


async def depth(stub: Stub, subscriber: str) -> int:
    return int((await stub.GetQueueStats(EM.GetQueueStatsRequest(subscriber=subscriber))).messages)


async def expect_error(code: grpc.StatusCode, call: Awaitable[Any], *mentions: str) -> str:
    with pytest.raises(aio.AioRpcError) as e:
        await call
    assert e.value.code() == code, e.value.details()
    details = e.value.details() or ""
    for text in mentions:
        assert text in details, details
    return details


async def receive(call: Any, count: int) -> list[EM.Delivery]:
    deliveries: list[EM.Delivery] = []
    for _ in range(count):
        delivery = await asyncio.wait_for(call.read(), WAIT_S)
        assert delivery is not aio.EOF, f"the stream ended after {len(deliveries)} of {count} deliveries"
        deliveries.append(delivery)
    return deliveries


async def start_consuming(stub: Stub, subscriber: str, prefetch: int = 0) -> Any:
    call = stub.Consume()
    await call.write(EM.ConsumeRequest(start=EM.ConsumeStart(subscriber=subscriber, prefetch=prefetch)))
    return call


async def ack(call: Any, *deliveries: EM.Delivery) -> None:
    for d in deliveries:
        await call.write(EM.ConsumeRequest(ack=EM.Ack(delivery_id=d.delivery_id)))


# -- subscriptions ---------------------------------------------------------------


def test_subscribe_is_idempotent_and_visible_to_a_second_eventmanager_instance(config: MeshConfig) -> None:
    async def scenario() -> None:
        subscriber, publisher = names("orders"), names("customers")
        async with eventmanager(config) as (_, a), eventmanager(config) as (second, b):
            request = EM.SubscribeRequest(
                subscriber=subscriber, publisher=publisher, entity_type="customer", snapshot=True
            )
            first = await a.Subscribe(request)
            assert first.queue == config.prefixed(f"gridmesh.replica.{subscriber}")
            assert first.created_at.seconds > 0

            again = await a.Subscribe(request)
            assert again == first  # the same subscription, not a second one

            listed = await b.ListSubscriptions(EM.ListSubscriptionsRequest(subscriber=subscriber))
            assert [(s.publisher, s.entity_type, s.subscriber) for s in listed.subscriptions] == [
                (publisher, "customer", subscriber)
            ]
            # The other instance's watch routes to the new subscriber.
            await eventually(
                lambda: asyncio.sleep(0, second.service.subscriptions.subscribers_of(publisher, "customer")),
                lambda s: s == (subscriber,),
                "second instance's map",
            )
            published = await b.Publish(event(publisher, "customer"))
            assert list(published.routed_to) == [subscriber]
            assert await eventually(lambda: depth(b, subscriber), lambda n: n == 1, "queue depth") == 1

    asyncio.run(scenario())


def test_a_restarted_eventmanager_rebuilds_queues_and_bindings_from_zookeeper(config: MeshConfig) -> None:
    async def scenario() -> None:
        subscriber, publisher = names("orders"), names("customers")
        async with eventmanager(config) as (process, stub):
            await stub.Subscribe(
                EM.SubscribeRequest(subscriber=subscriber, publisher=publisher, entity_type="customer")
            )
        # RabbitMQ loses the queue and its binding while no EventManager runs.
        mq = RabbitMQ(config.rabbitmq, config.rabbitmq_password)
        await mq.start()
        await mq.delete_queue(process.service.topology.queue(subscriber))
        await mq.close()

        async with eventmanager(config) as (restarted, stub):
            assert restarted.service.subscriptions.subscribers_of(publisher, "customer") == (subscriber,)
            published = await stub.Publish(event(publisher, "customer"))
            assert list(published.routed_to) == [subscriber]
            assert await eventually(lambda: depth(stub, subscriber), lambda n: n == 1, "queue depth") == 1

    asyncio.run(scenario())


def test_routed_to_comes_from_the_broker_not_only_the_map(config: MeshConfig) -> None:
    async def scenario() -> None:
        subscriber, publisher = names("orders"), names("customers")
        async with eventmanager(config) as (process, stub):
            await stub.Subscribe(
                EM.SubscribeRequest(subscriber=subscriber, publisher=publisher, entity_type="customer")
            )
            # Someone deletes the queue behind the EventManager's back: the map
            # still names the subscriber, but RabbitMQ returns the event.
            mq = RabbitMQ(config.rabbitmq, config.rabbitmq_password)
            await mq.start()
            await mq.delete_queue(process.service.topology.queue(subscriber))
            await mq.close()
            assert list((await stub.Publish(event(publisher, "customer"))).routed_to) == []
            # Subscribing again (idempotent) repairs it.
            await stub.Subscribe(
                EM.SubscribeRequest(subscriber=subscriber, publisher=publisher, entity_type="customer")
            )
            assert list((await stub.Publish(event(publisher, "customer"))).routed_to) == [subscriber]

    asyncio.run(scenario())


def test_unsubscribe_stops_routing_and_keeps_the_queue(config: MeshConfig) -> None:
    async def scenario() -> None:
        subscriber, publisher = names("orders"), names("customers")
        async with eventmanager(config) as (_, stub):
            key: dict[str, Any] = {"subscriber": subscriber, "publisher": publisher, "entity_type": "customer"}
            await stub.Subscribe(EM.SubscribeRequest(**key))
            assert list((await stub.Publish(event(publisher, "customer"))).routed_to) == [subscriber]
            await stub.Unsubscribe(EM.UnsubscribeRequest(**key))

            assert (await stub.ListSubscriptions(EM.ListSubscriptionsRequest(publisher=publisher))).subscriptions == []
            assert list((await stub.Publish(event(publisher, "customer"))).routed_to) == []
            # The queue stays, with what it already held.
            assert await eventually(lambda: depth(stub, subscriber), lambda n: n == 1, "queue depth") == 1
            await expect_error(grpc.StatusCode.NOT_FOUND, stub.Unsubscribe(EM.UnsubscribeRequest(**key)), subscriber)

    asyncio.run(scenario())


# -- publishing ------------------------------------------------------------------


def test_publish_returns_routed_to_after_confirm_and_the_event_lands_in_each_subscribers_queue(
    config: MeshConfig,
) -> None:
    async def scenario() -> None:
        billing, orders, publisher = names("billing"), names("orders"), names("customers")
        async with eventmanager(config) as (_, stub):
            for subscriber in (orders, billing):
                await stub.Subscribe(
                    EM.SubscribeRequest(subscriber=subscriber, publisher=publisher, entity_type="customer")
                )
            sent = event(publisher, "customer", "c-42", version=7, operation=common_pb2.UPDATE)
            answer = await stub.Publish(sent)
            assert answer.event_id == sent.event_id
            assert list(answer.routed_to) == sorted([orders, billing])

            for subscriber in (orders, billing):
                call = await start_consuming(stub, subscriber)
                (delivery,) = await receive(call, 1)
                got = delivery.event
                assert (got.event_id, got.entity_id, got.version, got.operation) == (
                    sent.event_id,
                    "c-42",
                    7,
                    common_pb2.UPDATE,
                )
                assert got.payload == sent.payload and got.HasField("occurred_at")
                assert (delivery.redelivered, delivery.delivery_count) == (False, 1)
                await ack(call, delivery)
                await call.done_writing()
                assert await call.read() is aio.EOF
                await eventually(partial(depth, stub, subscriber), lambda n: n == 0, "drained")

            # Nobody subscribes to this type: reported, not an error.
            unroutable = await stub.Publish(event(publisher, "invoice"))
            assert list(unroutable.routed_to) == []

    asyncio.run(scenario())


def test_publish_batch_confirms_each_event_and_refuses_only_the_bad_ones(config: MeshConfig) -> None:
    async def scenario() -> None:
        subscriber, publisher = names("orders"), names("customers")
        async with eventmanager(config) as (_, stub):
            await stub.Subscribe(
                EM.SubscribeRequest(subscriber=subscriber, publisher=publisher, entity_type="customer")
            )
            good = [event(publisher, "customer", f"c-{i}") for i in range(300)]
            bad = event(publisher, "customer", version=0)
            batch = [*good[:100], bad, *good[100:]]
            results = (await stub.PublishBatch(EM.PublishBatchRequest(events=batch))).results
            assert len(results) == len(batch)
            assert [r.event_id for r in results] == [e.event_id for e in batch]
            assert results[100].code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
            assert "version" in results[100].error and list(results[100].routed_to) == []
            assert all(r.code == 0 and list(r.routed_to) == [subscriber] for i, r in enumerate(results) if i != 100)
            assert await eventually(lambda: depth(stub, subscriber), lambda n: n == 300, "queue depth") == 300

    asyncio.run(scenario())


# -- consuming -------------------------------------------------------------------


def test_consumers_of_one_subscriber_share_the_work(config: MeshConfig) -> None:
    async def scenario() -> None:
        subscriber, publisher = names("orders"), names("customers")
        async with eventmanager(config) as (_, stub):
            await stub.Subscribe(
                EM.SubscribeRequest(subscriber=subscriber, publisher=publisher, entity_type="customer")
            )
            first, second = await start_consuming(stub, subscriber, 4), await start_consuming(stub, subscriber, 4)
            await eventually(
                lambda: stub.GetQueueStats(EM.GetQueueStatsRequest(subscriber=subscriber)),
                lambda s: s.consumers == 2,
                "two consumers",
            )
            sent = [event(publisher, "customer", f"c-{i}") for i in range(40)]
            await stub.PublishBatch(EM.PublishBatchRequest(events=sent))

            seen: dict[str, list[str]] = {"first": [], "second": []}

            async def work(name: str, call: Any) -> None:
                while (delivery := await call.read()) is not aio.EOF:
                    seen[name].append(delivery.event.event_id)
                    await ack(call, delivery)

            workers = [asyncio.create_task(work("first", first)), asyncio.create_task(work("second", second))]
            await eventually(
                lambda: asyncio.sleep(0, len(seen["first"]) + len(seen["second"])), lambda n: n >= len(sent), "all seen"
            )
            assert sorted(seen["first"] + seen["second"]) == sorted(e.event_id for e in sent)  # each exactly once
            assert seen["first"] and seen["second"]
            await eventually(lambda: depth(stub, subscriber), lambda n: n == 0, "drained")
            for call in (first, second):
                call.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    asyncio.run(scenario())


def test_a_dropped_streams_unacked_deliveries_are_redelivered_with_redelivered_true(config: MeshConfig) -> None:
    async def scenario() -> None:
        subscriber, publisher = names("orders"), names("customers")
        async with eventmanager(config) as (_, stub):
            await stub.Subscribe(
                EM.SubscribeRequest(subscriber=subscriber, publisher=publisher, entity_type="customer")
            )
            sent = [event(publisher, "customer", f"c-{i}") for i in range(3)]
            await stub.PublishBatch(EM.PublishBatchRequest(events=sent))

            dropped = await start_consuming(stub, subscriber)
            first = await receive(dropped, 3)
            assert all(not d.redelivered and d.delivery_count == 1 for d in first)
            dropped.cancel()  # the consumer dies with its deliveries unacknowledged

            survivor = await start_consuming(stub, subscriber)
            again = await receive(survivor, 3)
            assert sorted(d.event.event_id for d in again) == sorted(e.event_id for e in sent)
            assert all(d.redelivered and d.delivery_count == 2 for d in again)
            await ack(survivor, *again)
            assert await eventually(lambda: depth(stub, subscriber), lambda n: n == 0, "drained") == 0
            survivor.cancel()

    asyncio.run(scenario())


def test_a_poison_event_goes_to_the_dead_letter_queue_after_bounded_deliveries(config: MeshConfig) -> None:
    async def scenario() -> None:
        subscriber, publisher = names("orders"), names("customers")
        async with eventmanager(config) as (_, stub):
            await stub.Subscribe(
                EM.SubscribeRequest(subscriber=subscriber, publisher=publisher, entity_type="customer")
            )
            poison = event(publisher, "customer", "poison")
            await stub.Publish(poison)
            call = await start_consuming(stub, subscriber)
            counts = []
            for _ in range(MAX_DELIVERIES):
                (delivery,) = await receive(call, 1)
                assert delivery.event.event_id == poison.event_id
                counts.append(delivery.delivery_count)
                await call.write(EM.ConsumeRequest(nack=EM.Nack(delivery_id=delivery.delivery_id, requeue=True)))
            assert counts == list(range(1, MAX_DELIVERIES + 1))

            stats = await eventually(
                lambda: stub.GetQueueStats(EM.GetQueueStatsRequest(subscriber=subscriber)),
                lambda s: s.dead_letters == 1,
                "dead-lettered",
            )
            assert stats.messages == 0
            # A nack without requeue dead-letters at once.
            rejected = event(publisher, "customer", "rejected")
            await stub.Publish(rejected)
            (delivery,) = await receive(call, 1)
            await call.write(EM.ConsumeRequest(nack=EM.Nack(delivery_id=delivery.delivery_id, requeue=False)))
            await eventually(
                lambda: stub.GetQueueStats(EM.GetQueueStatsRequest(subscriber=subscriber)),
                lambda s: s.dead_letters == 2,
                "dead-lettered",
            )
            call.cancel()

            request = EM.ListDeadLettersRequest(subscriber=subscriber)
            peeked = (await stub.ListDeadLetters(request)).events
            assert [e.event_id for e in peeked] == [poison.event_id, rejected.event_id]
            assert (peeked[0].entity_id, peeked[0].payload) == (poison.entity_id, poison.payload)
            # Peeking leaves them there, in order.
            await eventually(
                lambda: stub.GetQueueStats(EM.GetQueueStatsRequest(subscriber=subscriber)),
                lambda s: s.dead_letters == 2,
                "still dead-lettered",
            )
            again = (await stub.ListDeadLetters(EM.ListDeadLettersRequest(subscriber=subscriber, max=1))).events
            assert [e.event_id for e in again] == [poison.event_id]

    asyncio.run(scenario())


# -- health and shutdown ---------------------------------------------------------


def test_health_is_serving_only_once_zookeeper_and_rabbitmq_are_connected(config: MeshConfig) -> None:
    async def scenario() -> None:
        process = build_server(config)
        await process.listen()  # answering, adapters not connected yet
        channel = mesh_aio_channel(config, f"127.0.0.1:{process.port}", PeerRole.EVENTMANAGER)
        health = health_pb2_grpc.HealthStub(channel)
        check = health_pb2.HealthCheckRequest(service="gridmesh.v1.EventManager")
        try:
            assert (await health.Check(check)).status == health_pb2.HealthCheckResponse.NOT_SERVING
            await expect_error(
                grpc.StatusCode.UNAVAILABLE, Stub(channel).Publish(event(names("customers"), "customer")), "retry"
            )
            await process.ready()
            await eventually(
                partial(health.Check, check), lambda r: r.status == health_pb2.HealthCheckResponse.SERVING, "serving"
            )
        finally:
            await channel.close()
            await process.stop(grace_s=1)

    asyncio.run(scenario())


def test_an_eventmanager_without_rabbitmq_never_serves_and_gives_up_with_unavailable(config: MeshConfig) -> None:
    dead_port = free_port()
    broken = dataclasses.replace(config, rabbitmq=dataclasses.replace(config.rabbitmq, port=dead_port))

    async def scenario() -> None:
        process = build_server(broken)
        await process.listen()
        channel = mesh_aio_channel(config, f"127.0.0.1:{process.port}", PeerRole.EVENTMANAGER)
        health = health_pb2_grpc.HealthStub(channel)
        check = health_pb2.HealthCheckRequest(service="gridmesh.v1.EventManager")
        try:
            starting = asyncio.create_task(process.ready())
            while not starting.done():
                assert (await health.Check(check)).status == health_pb2.HealthCheckResponse.NOT_SERVING
                await asyncio.wait([starting], timeout=0.2)
            with pytest.raises(Unavailable, match=f"{dead_port}"):
                starting.result()
            assert (await health.Check(check)).status == health_pb2.HealthCheckResponse.NOT_SERVING
        finally:
            await channel.close()
            await process.stop(grace_s=1)

    asyncio.run(scenario())


def test_a_lost_rabbitmq_connection_ends_consumers_and_comes_back(config: MeshConfig) -> None:
    async def scenario() -> None:
        subscriber, publisher = names("orders"), names("customers")
        async with eventmanager(config) as (process, stub):
            await stub.Subscribe(
                EM.SubscribeRequest(subscriber=subscriber, publisher=publisher, entity_type="customer")
            )
            states: list[bool] = []
            process.service.add_state_listener(lambda: states.append(process.service.healthy))
            call = await start_consuming(stub, subscriber)
            await eventually(
                partial(stub.GetQueueStats, EM.GetQueueStatsRequest(subscriber=subscriber)),
                lambda s: s.consumers == 1,
                "consuming",
            )
            name = config.prefixed("gridmesh-eventmanager", "-")
            assert await asyncio.to_thread(close_rabbitmq_connections, name) == 1

            with pytest.raises(aio.AioRpcError) as ended:
                await asyncio.wait_for(call.read(), WAIT_S)
            assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
            # Not serving while disconnected, serving again once reconnected.
            await eventually(lambda: asyncio.sleep(0, list(states)), lambda s: False in s and s[-1], "reconnected")
            sent = event(publisher, "customer")
            assert list((await stub.Publish(sent)).routed_to) == [subscriber]
            call = await start_consuming(stub, subscriber)
            (delivery,) = await receive(call, 1)
            assert delivery.event.event_id == sent.event_id
            call.cancel()

    asyncio.run(scenario())


def test_shutdown_ends_consume_streams_and_their_deliveries_are_redelivered(config: MeshConfig) -> None:
    async def scenario() -> None:
        subscriber, publisher = names("orders"), names("customers")
        async with eventmanager(config) as (_, stub):
            await stub.Subscribe(
                EM.SubscribeRequest(subscriber=subscriber, publisher=publisher, entity_type="customer")
            )
            sent = event(publisher, "customer")
            await stub.Publish(sent)
            async with eventmanager(config) as (leaving, other):
                call = await start_consuming(other, subscriber)
                (held,) = await receive(call, 1)
                assert held.event.event_id == sent.event_id
                await leaving.stop(grace_s=5)
                with pytest.raises(aio.AioRpcError) as ended:
                    await call.read()
                assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
            call = await start_consuming(stub, subscriber)
            (again,) = await receive(call, 1)
            assert again.event.event_id == sent.event_id and again.redelivered
            await ack(call, again)
            call.cancel()

    asyncio.run(scenario())


# -- bad input (issue 6): each is refused with a clear status and changes nothing --


BAD_EVENTS: list[tuple[str, dict[str, Any], str]] = [
    ("missing event_id", {"event_id": ""}, "event_id"),
    ("event_id not a UUID", {"event_id": "42"}, "event_id"),
    ("bad publisher name", {"publisher": "Customers!"}, "publisher"),
    ("bad entity_type name", {"entity_type": "a.b"}, "entity_type"),
    ("missing entity_id", {"entity_id": ""}, "entity_id"),
    ("operation unspecified", {"operation": common_pb2.OPERATION_UNSPECIFIED}, "operation"),
    ("version zero", {"version": 0}, "version"),
    ("version negative", {"version": -1}, "version"),
    ("payload on DELETE", {"operation": common_pb2.DELETE}, "payload"),
    ("no payload on CREATE", {"payload": dict_to_struct({})}, "payload"),
    ("oversized payload", {"payload": dict_to_struct({"blob": "x" * 2000})}, "payload"),
]


def test_bad_events_are_refused_with_invalid_argument_naming_the_field_and_publish_nothing(
    config: MeshConfig,
) -> None:
    async def scenario() -> None:
        subscriber, publisher = names("orders"), names("customers")
        async with eventmanager(config) as (_, stub):
            await stub.Subscribe(
                EM.SubscribeRequest(subscriber=subscriber, publisher=publisher, entity_type="customer")
            )
            for what, change, field in BAD_EVENTS:
                bad = event(publisher, "customer", **change)
                details = await expect_error(grpc.StatusCode.INVALID_ARGUMENT, stub.Publish(bad), field)
                assert details, what
                (result,) = (await stub.PublishBatch(EM.PublishBatchRequest(events=[bad]))).results
                assert result.code == grpc.StatusCode.INVALID_ARGUMENT.value[0], what
                assert field in result.error, what
            too_many = [event(publisher, "customer")] * 10_001
            await expect_error(
                grpc.StatusCode.INVALID_ARGUMENT, stub.PublishBatch(EM.PublishBatchRequest(events=too_many)), "batch"
            )
            assert await depth(stub, subscriber) == 0

    asyncio.run(scenario())


def test_bad_subscriptions_are_refused_and_change_nothing(config: MeshConfig) -> None:
    async def scenario() -> None:
        subscriber, publisher = names("orders"), names("customers")
        async with eventmanager(config) as (_, stub):
            good: dict[str, Any] = {"subscriber": subscriber, "publisher": publisher, "entity_type": "customer"}
            for field, value in [
                ("subscriber", ""),
                ("subscriber", "Orders"),
                ("publisher", "9lives"),
                ("entity_type", "cust omer"),
                ("entity_type", "c" * 64),
            ]:
                request = {**good, field: value}
                await expect_error(
                    grpc.StatusCode.INVALID_ARGUMENT, stub.Subscribe(EM.SubscribeRequest(**request)), field
                )
                await expect_error(
                    grpc.StatusCode.INVALID_ARGUMENT, stub.Unsubscribe(EM.UnsubscribeRequest(**request)), field
                )
            await expect_error(
                grpc.StatusCode.INVALID_ARGUMENT,
                stub.ListSubscriptions(EM.ListSubscriptionsRequest(publisher="Bad")),
                "publisher",
            )
            await expect_error(
                grpc.StatusCode.NOT_FOUND, stub.Unsubscribe(EM.UnsubscribeRequest(**good)), "no subscription"
            )
            listed = await stub.ListSubscriptions(EM.ListSubscriptionsRequest(publisher=publisher))
            assert list(listed.subscriptions) == []
            await expect_error(
                grpc.StatusCode.NOT_FOUND,
                stub.GetQueueStats(EM.GetQueueStatsRequest(subscriber=subscriber)),
                "subscribe it first",
            )

    asyncio.run(scenario())


def test_bad_consume_streams_are_refused(config: MeshConfig) -> None:
    async def scenario() -> None:
        subscriber, publisher = names("orders"), names("customers")
        async with eventmanager(config) as (_, stub):
            await stub.Subscribe(
                EM.SubscribeRequest(subscriber=subscriber, publisher=publisher, entity_type="customer")
            )

            async def refused(code: grpc.StatusCode, *requests: EM.ConsumeRequest, mention: str) -> None:
                call = stub.Consume()
                for request in requests:
                    await call.write(request)
                with pytest.raises(aio.AioRpcError) as e:
                    await asyncio.wait_for(call.read(), WAIT_S)
                assert e.value.code() == code and mention in (e.value.details() or ""), e.value.details()

            start = EM.ConsumeRequest(start=EM.ConsumeStart(subscriber=subscriber))
            await refused(
                grpc.StatusCode.INVALID_ARGUMENT, EM.ConsumeRequest(ack=EM.Ack(delivery_id=1)), mention="first"
            )
            await refused(
                grpc.StatusCode.INVALID_ARGUMENT,
                EM.ConsumeRequest(start=EM.ConsumeStart(subscriber="Bad Name")),
                mention="subscriber",
            )
            await refused(
                grpc.StatusCode.INVALID_ARGUMENT,
                EM.ConsumeRequest(start=EM.ConsumeStart(subscriber=subscriber, prefetch=-1)),
                mention="prefetch",
            )
            await refused(
                grpc.StatusCode.NOT_FOUND,
                EM.ConsumeRequest(start=EM.ConsumeStart(subscriber=names("nobody"))),
                mention="subscribe it first",
            )
            await refused(
                grpc.StatusCode.INVALID_ARGUMENT, start, EM.ConsumeRequest(ack=EM.Ack(delivery_id=99)), mention="99"
            )
            await refused(grpc.StatusCode.INVALID_ARGUMENT, start, start, mention="ConsumeStart")
            await expect_error(
                grpc.StatusCode.INVALID_ARGUMENT,
                stub.ListDeadLetters(EM.ListDeadLettersRequest(subscriber=subscriber, max=-1)),
                "max",
            )
            await eventually(
                lambda: stub.GetQueueStats(EM.GetQueueStatsRequest(subscriber=subscriber)),
                lambda s: s.consumers == 0 and s.messages == 0 and s.dead_letters == 0,
                "untouched queue",
            )

    asyncio.run(scenario())
