"""The EventManager: the publisher→subscriber map in ZooKeeper, event
publishing with publisher confirms and delivery through RabbitMQ topic
routing to per-subscriber work queues (SPEC §3 "Event-driven replication")."""

from gridmesh.eventmanager._service import EventManager, PublishOutcome, QueueStats
from gridmesh.eventmanager._servicer import EventManagerServicer
from gridmesh.eventmanager.app import EventManagerProcess, build_server, serve

__all__ = [
    "EventManager",
    "EventManagerProcess",
    "EventManagerServicer",
    "PublishOutcome",
    "QueueStats",
    "build_server",
    "serve",
]
