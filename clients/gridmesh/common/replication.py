"""The replication rules a replica applier shares with the EventManager:
the CRUD operation of an event, and the version-fencing rule every replica
applies (SPEC §3 "Event-driven replication"). The EventManager's own rules
(the subscription map, the RabbitMQ topology) are in
``gridmesh.core.replication``.
"""

from __future__ import annotations

import enum


class Operation(enum.IntEnum):
    """The CRUD operation of an event; values are those of the protobuf enum."""

    UNSPECIFIED = 0
    CREATE = 1
    UPDATE = 2
    DELETE = 3


class ReplicaAction(enum.Enum):
    UPSERT = "upsert"
    """Write the payload as the replica's row, with the event's version."""
    DELETE = "delete"
    """Remove the row, keeping the version as a tombstone."""
    SKIP = "skip"
    """The replica already holds this version or a newer one: ack and do nothing."""


def replica_action(operation: Operation, version: int, stored_version: int | None) -> ReplicaAction:
    """What a replica does with an event, given the version it holds for the
    entity (None = never seen; a deleted entity keeps its version as a
    tombstone, so a late CREATE or UPDATE cannot resurrect it).

    Only a strictly newer version is applied: duplicates and re-ordered
    deliveries never move a replica backwards.
    """
    if stored_version is not None and version <= stored_version:
        return ReplicaAction.SKIP
    return ReplicaAction.DELETE if operation is Operation.DELETE else ReplicaAction.UPSERT


__all__ = ["Operation", "ReplicaAction", "replica_action"]
