"""Python client library of gridmesh: task submission and watching, the
transactional outbox for publishers and the replica applier for subscribers."""

import importlib
from typing import TYPE_CHECKING, Any

from gridmesh.clients._channel import CA_FILE_VAR, edge_channel, edge_credentials, key_metadata
from gridmesh.clients._errors import ClientError, FieldViolation
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
    "ClientError",
    "Download",
    "FieldViolation",
    "TaskClient",
    "TaskError",
    "edge_channel",
    "edge_credentials",
    "is_terminal",
    "key_metadata",
    "submit_request",
]

# Event-driven replication: the EventManager client here; the transactional
# outbox and the replica applier keep their state in the service's own MySQL,
# so they need pymysql: ``pip install 'gridmesh-client[outbox]'``. They load on
# first use, and ``import gridmesh.clients`` works without pymysql.
from gridmesh.clients.events import EventClient, EventError, EventStream, Operation, new_event, payload_dict

if TYPE_CHECKING:
    from gridmesh.clients.outbox import Outbox, OutboxEntry, OutboxRelay
    from gridmesh.clients.replica import ApplierStats, ReplicaApplier, ReplicaTable

_NEEDS_PYMYSQL = {
    "Outbox": "outbox",
    "OutboxEntry": "outbox",
    "OutboxRelay": "outbox",
    "ApplierStats": "replica",
    "ReplicaApplier": "replica",
    "ReplicaTable": "replica",
}


def __getattr__(name: str) -> Any:
    module = _NEEDS_PYMYSQL.get(name)
    if module is None:
        raise AttributeError(f"module 'gridmesh.clients' has no attribute {name!r}")
    try:
        loaded = importlib.import_module(f"gridmesh.clients.{module}")
    except ModuleNotFoundError as e:
        if e.name != "pymysql":
            raise
        raise ModuleNotFoundError(
            f"gridmesh.clients.{name} keeps its state in MySQL and needs pymysql: "
            "pip install 'gridmesh-client[outbox]'",
            name="pymysql",
        ) from e
    return getattr(loaded, name)


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
