"""Python client library of gridmesh: task submission and watching, the
transactional outbox for publishers and the replica applier for subscribers."""

from gridmesh.clients.tasks import DEFAULT_TARGET, TERMINAL_STATES, Download, TaskClient, TaskError, is_terminal

__all__ = ["DEFAULT_TARGET", "TERMINAL_STATES", "Download", "TaskClient", "TaskError", "is_terminal"]
