"""SPEC §3 "Event-driven replication", the pure rules: the subscription map,
routing keys and queue names under the namespace, what makes an
EntityEvent acceptable (issue 6's bad-input list), and version fencing."""

from datetime import UTC, datetime
from typing import Any

import pytest

from gridmesh.common.errors import InvalidArgument
from gridmesh.config import load_config
from gridmesh.core.replication import (
    DEFAULT_PREFETCH,
    MAX_BATCH_EVENTS,
    Operation,
    ReplicaAction,
    Subscription,
    SubscriptionKey,
    SubscriptionMap,
    Topology,
    binding_key,
    check_batch_size,
    check_dead_letter_count,
    check_event,
    check_prefetch,
    replica_action,
    routing_key,
)
from gridmesh.v1 import common_pb2

EVENT_ID = "6F9619FF-8B86-D011-B42D-00CF4FC964FF"
GOOD: dict[str, Any] = {
    "event_id": EVENT_ID,
    "publisher": "customers",
    "entity_type": "customer",
    "entity_id": "c-1",
    "operation": Operation.CREATE,
    "version": 1,
    "payload_fields": 2,
    "payload_bytes": 40,
    "max_payload_bytes": 100,
}


def key(publisher="customers", entity_type="customer", subscriber="orders"):
    return SubscriptionKey(publisher=publisher, entity_type=entity_type, subscriber=subscriber)


# -- the map -------------------------------------------------------------------


def test_map_routes_a_publishers_entity_type_to_each_subscriber_sorted():
    m = SubscriptionMap.from_znodes(
        {
            "customers": b"",
            "customers/customer": b"",
            "customers/customer/orders": b"",
            "customers/customer/billing": b"",
            "customers/address/orders": b"",
        }
    )
    assert m.subscribers_of("customers", "customer") == ("billing", "orders")
    assert m.subscribers_of("customers", "address") == ("orders",)
    assert m.subscribers_of("orders", "order") == ()
    assert len(m) == 3


def test_map_ignores_intermediate_and_invalid_znodes():
    m = SubscriptionMap.from_znodes({"customers": b"", "customers/customer": b"", "customers/customer/Bad Name": b""})
    assert len(m) == 0


def test_map_filters_by_publisher_and_subscriber():
    m = SubscriptionMap(
        Subscription(k, snapshot=False, created_at=datetime(2026, 1, 1, tzinfo=UTC))
        for k in (key(), key(subscriber="billing"), key(publisher="orders", entity_type="order", subscriber="billing"))
    )
    assert [s.key for s in m.select(publisher="customers")] == [key(subscriber="billing"), key()]
    assert [s.key.publisher for s in m.select(subscriber="billing")] == ["customers", "orders"]
    assert len(m.select(publisher="customers", subscriber="orders")) == 1
    assert key() in m and key(subscriber="nobody") not in m


def test_subscription_znode_data_round_trips_and_tolerates_garbage():
    created = datetime(2026, 5, 4, 3, 2, 1, tzinfo=UTC)
    sub = Subscription(key(), snapshot=True, created_at=created)
    assert Subscription.decode(key(), sub.encode()) == sub
    fallback = Subscription.decode(key(), b"not json")
    assert fallback.snapshot is False and fallback.key == key()
    assert Subscription.decode(key(), None).snapshot is False


def test_subscription_key_maps_to_its_znode_and_back():
    assert key().znode == "customers/customer/orders"
    assert SubscriptionKey.from_znode("customers/customer/orders") == key()
    assert SubscriptionKey.from_znode("customers/customer") is None


@pytest.mark.parametrize("field", ["publisher", "entity_type", "subscriber"])
@pytest.mark.parametrize("bad", ["", "Customers", "1st", "a.b", "a*", "a" * 64, "a b"])
def test_subscription_names_must_match_the_name_pattern(field, bad):
    names = {"publisher": "customers", "entity_type": "customer", "subscriber": "orders", field: bad}
    with pytest.raises(InvalidArgument) as e:
        SubscriptionKey.checked(**names)
    assert e.value.field == field


# -- broker names --------------------------------------------------------------


def test_routing_key_is_publisher_entity_type_and_lowercase_operation():
    assert routing_key("customers", "customer", Operation.CREATE) == "customers.customer.create"
    assert routing_key("customers", "customer", Operation.DELETE) == "customers.customer.delete"
    assert binding_key("customers", "customer") == "customers.customer.*"


def test_exchange_and_queues_live_under_the_namespace():
    plain = Topology(prefix=load_config({}).prefixed, max_deliveries=5)
    assert plain.exchange == "gridmesh.db-events"
    assert plain.queue("orders") == "gridmesh.replica.orders"
    assert plain.dead_letter_queue("orders") == "gridmesh.replica.orders.dlq"
    spaced = Topology(prefix=load_config({"GRIDMESH_NAMESPACE": "t1"}).prefixed, max_deliveries=5)
    assert spaced.exchange == "t1.gridmesh.db-events"
    assert spaced.dead_letter_queue("orders") == "t1.gridmesh.replica.orders.dlq"


@pytest.mark.parametrize(("deliveries", "limit"), [(1, 0), (2, 1), (5, 4)])
def test_delivery_limit_allows_exactly_max_deliveries(deliveries, limit):
    assert Topology(prefix=str, max_deliveries=deliveries).delivery_limit == limit


def test_operation_values_are_those_of_the_protobuf_enum():
    for op in Operation:
        proto_name = "OPERATION_UNSPECIFIED" if op is Operation.UNSPECIFIED else op.name
        assert common_pb2.Operation.Value(proto_name) == op.value


# -- events --------------------------------------------------------------------


def test_a_valid_event_is_accepted_with_its_id_canonical():
    assert check_event(**GOOD) == (EVENT_ID.lower(), Operation.CREATE)
    assert check_event(**{**GOOD, "operation": Operation.DELETE, "payload_fields": 0, "payload_bytes": 0})[1] == (
        Operation.DELETE
    )


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        ({"event_id": ""}, "event_id", "required"),
        ({"event_id": "not-a-uuid"}, "event_id", "not a UUID"),
        ({"publisher": "Customers"}, "publisher", "not a valid name"),
        ({"entity_type": "cust.omer"}, "entity_type", "not a valid name"),
        ({"entity_id": ""}, "entity_id", "required"),
        ({"entity_id": "x" * 256}, "entity_id", "limit is 255"),
        ({"operation": 0}, "operation", "required"),
        ({"operation": 9}, "operation", "unknown"),
        ({"version": 0}, "version", "positive"),
        ({"version": -3}, "version", "positive"),
        ({"operation": Operation.DELETE}, "payload", "empty for DELETE"),
        ({"payload_fields": 0, "payload_bytes": 0}, "payload", "required for CREATE"),
        ({"operation": Operation.UPDATE, "payload_fields": 0}, "payload", "required for UPDATE"),
        ({"payload_bytes": 101}, "payload", "limit is 100"),
    ],
)
def test_a_bad_event_is_refused_naming_the_field(change, field, says):
    with pytest.raises(InvalidArgument) as e:
        check_event(**{**GOOD, **change})
    assert e.value.field == field
    assert says in e.value.message


def test_batch_prefetch_and_dead_letter_limits():
    check_batch_size(MAX_BATCH_EVENTS)
    with pytest.raises(InvalidArgument):
        check_batch_size(MAX_BATCH_EVENTS + 1)
    assert check_prefetch(0) == DEFAULT_PREFETCH
    assert check_prefetch(7) == 7
    for bad in (-1, 10**6):
        with pytest.raises(InvalidArgument):
            check_prefetch(bad)
        with pytest.raises(InvalidArgument):
            check_dead_letter_count(bad)
    assert check_dead_letter_count(0) > 0


# -- version fencing -----------------------------------------------------------


@pytest.mark.parametrize(
    ("operation", "version", "stored", "action"),
    [
        (Operation.CREATE, 1, None, ReplicaAction.UPSERT),
        (Operation.UPDATE, 3, None, ReplicaAction.UPSERT),  # re-ordered: the update came first
        (Operation.UPDATE, 3, 2, ReplicaAction.UPSERT),
        (Operation.UPDATE, 2, 2, ReplicaAction.SKIP),  # duplicate
        (Operation.CREATE, 1, 2, ReplicaAction.SKIP),  # late, older
        (Operation.DELETE, 4, 3, ReplicaAction.DELETE),
        (Operation.DELETE, 4, 4, ReplicaAction.SKIP),
        (Operation.UPDATE, 3, 4, ReplicaAction.SKIP),  # the tombstone's version fences a late update
    ],
)
def test_replicas_apply_only_strictly_newer_versions(operation, version, stored, action):
    assert replica_action(operation, version, stored) is action
