"""Python client library of gridmesh: task submission and watching, the
transactional outbox for publishers and the replica applier for subscribers."""

from gridmesh.clients._channel import CA_FILE_VAR, edge_channel, edge_credentials, key_metadata
from gridmesh.clients.tasks import (
    DEFAULT_TARGET,
    TERMINAL_STATES,
    Download,
    TaskClient,
    TaskError,
    is_terminal,
    submit_request,
)

__all__ = [
    "CA_FILE_VAR",
    "DEFAULT_TARGET",
    "TERMINAL_STATES",
    "Download",
    "TaskClient",
    "TaskError",
    "edge_channel",
    "edge_credentials",
    "is_terminal",
    "key_metadata",
    "submit_request",
]

# Event-driven replication: EventManager client, transactional outbox, replica applier.
from gridmesh.clients.events import EventClient, EventError, EventStream, Operation, new_event, payload_dict
from gridmesh.clients.outbox import Outbox, OutboxEntry, OutboxRelay
from gridmesh.clients.replica import ApplierStats, ReplicaApplier, ReplicaTable

__all__ += [
    "ApplierStats",
    "EventClient",
    "EventError",
    "EventStream",
    "Operation",
    "Outbox",
    "OutboxEntry",
    "OutboxRelay",
    "ReplicaApplier",
    "ReplicaTable",
    "new_event",
    "payload_dict",
]
