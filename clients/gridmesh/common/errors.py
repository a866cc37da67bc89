"""The one error tree of gridmesh.

Adapters turn vendor exceptions into these; ``grpc_support.errors`` maps
each class to one gRPC status code (and Envoy maps that to HTTP). The
message is shown to the caller as it is, so it says what is wrong and, where
it helps, what to do.
"""

from __future__ import annotations


class GridmeshError(Exception):
    """Base of every error gridmesh raises on purpose."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        """The request field the error concerns, when there is one."""


class InvalidArgument(GridmeshError):
    """The request is malformed; retrying it unchanged will fail again."""


class NotFound(GridmeshError):
    """The named task, result, subscription or worker does not exist."""


class AlreadyExists(GridmeshError):
    """The thing to create exists already."""


class FailedPrecondition(GridmeshError):
    """The request is well-formed but the system is not in a state to do it
    (e.g. cancelling a finished task, a report on a lease that was lost)."""


class ResourceExhausted(GridmeshError):
    """A size or rate limit was hit."""


class OutOfRange(GridmeshError):
    """A position older than what the mesh still keeps (e.g. a watch resumed
    after retention deleted changes since): list again instead."""


class Unavailable(GridmeshError):
    """A backing service (MySQL, RabbitMQ, ZooKeeper, Kafka) or a peer is
    unreachable; retrying later may succeed."""


class Internal(GridmeshError):
    """A bug, or a value a backing service refused (e.g. MySQL rejecting a
    column value); retrying unchanged fails again. The log has the details."""


class Unauthenticated(GridmeshError):
    """The call carries no credential, or one that is malformed, unknown,
    expired or revoked."""


class PermissionDenied(GridmeshError):
    """The caller's role may not make this call (or not with these fields)."""


class NotLeader(Unavailable):
    """This Scheduler is a standby; the leader serves requests."""


class ConfigError(GridmeshError):
    """A configuration value is unknown or malformed (raised before start)."""
