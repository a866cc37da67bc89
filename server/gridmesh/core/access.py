"""Who may call what at the edge: API keys, roles, and the one table that
maps every public RPC to the roles allowed to call it.

A key is ``gmk_<id>_<secret>``: the id names it (in listings, revocations,
logs), the secret proves it. Only the SHA-256 of the secret is stored; the
secret has 256 bits of entropy, so a fast hash is the right one (as GitHub's
and Stripe's tokens are stored), and the whole key is shown once.

Envoy asks the authorizer (:mod:`gridmesh.edge.authz`) about each call by
its gRPC method path (after the JSON transcoder, so HTTP/JSON and gRPC are
decided alike); :func:`decide` is that decision. Fields bound to an identity
(the publisher of an event, the subscriber of a queue) are the service's to
check, with :func:`bound_name`, from the role the edge passes upstream.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from gridmesh.common.errors import InvalidArgument, PermissionDenied, Unauthenticated
from gridmesh.common.names import check_name

KEY_PREFIX = "gmk_"
_KEY_RE = re.compile(r"^gmk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
ROLE_HEADER = "x-gridmesh-role"
"""The verified role (``admin``, ``publisher:customers``, …) the edge passes
upstream; it overwrites whatever a client sent under that name."""
KEY_ID_HEADER = "x-gridmesh-key-id"
"""The id of the key a call through the edge was made with."""


class Role(enum.StrEnum):
    ADMIN = "admin"
    OPERATOR = "operator"
    SUBMITTER = "submitter"
    VIEWER = "viewer"
    PUBLISHER = "publisher"
    SUBSCRIBER = "subscriber"
    JOIN = "join"
    """A join token's key: valid once, for ``Enrollment/Join`` alone."""

    @property
    def bound(self) -> bool:
        """Whether a key of this role names the publisher or subscriber it acts as."""
        return self in (Role.PUBLISHER, Role.SUBSCRIBER)


@dataclass(frozen=True)
class Principal:
    """Who a key is: its role and, for publishers and subscribers, the name."""

    key_id: str
    role: Role
    name: str = ""

    def __str__(self) -> str:
        return f"{self.role}:{self.name}" if self.name else str(self.role)


@dataclass(frozen=True)
class KeyRecord:
    """A key as stored: never its secret, only the secret's digest."""

    key_id: str
    digest: str
    role: Role
    name: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    note: str = ""

    def usable(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)

    @property
    def principal(self) -> Principal:
        return Principal(self.key_id, self.role, self.name)


def _methods(service: str, *names: str) -> set[str]:
    return {f"gridmesh.v1.{service}/{name}" for name in names}


METRICS_QUERY = "v1/metrics/query_range"
"""Not an RPC: Prometheus's range queries, which the edge passes to the
Prometheus server ``up`` runs (the console's charts of slots and lag)."""
TRACES_QUERY = "v1/traces"
"""Not an RPC: a search of the traces the Jaeger ``up --tracing`` runs keeps
(the console's trace of a task)."""
_METRICS = {METRICS_QUERY, TRACES_QUERY}
_RESULTS = _methods("StoreKeeper", "GetResult", "GetResultInfo", "ListResults")
_SCHEDULES_READ = _methods("Scheduler", "ListSchedules", "GetSchedule")
_READ = (
    _methods("Scheduler", "GetTask", "ListTasks", "WatchTask", "WatchTasks", "ListTaskTypes", "ListWorkers", "GetStats")
    | _SCHEDULES_READ
    | _RESULTS
    | _methods("EventManager", "ListSubscriptions", "GetQueueStats", "ListDeadLetters")
    | _METRICS
)
_SUBMIT = (
    _methods("Scheduler", "SubmitTask", "SubmitTasks", "GetTask", "ListTasks", "WatchTask", "WatchTasks")
    | _methods("Scheduler", "CancelTask", "RerunTask", "RerunTasks", "ListTaskTypes")
    | _methods("Scheduler", "CreateSchedule", "PauseSchedule", "ResumeSchedule", "DeleteSchedule")
    | _SCHEDULES_READ
    | _RESULTS
)
_OPERATE = (
    _methods("Scheduler", "ListWorkers", "DrainNode", "GetStats", "ListTaskTypes")
    | _methods("EventManager", "ListSubscriptions", "GetQueueStats", "ListDeadLetters")
    | _METRICS
)
_PUBLISH = _methods("EventManager", "Publish", "PublishBatch")
_SUBSCRIBE = _methods(
    "EventManager", "Subscribe", "Unsubscribe", "Consume", "ConsumeBatches", "GetQueueStats", "ListDeadLetters"
)

_JOIN = _methods("Enrollment", "Join")

PUBLIC_METHODS: frozenset[str] = frozenset(_READ | _SUBMIT | _OPERATE | _PUBLISH | _SUBSCRIBE | _JOIN)
"""Every RPC the edge routes to a gridmesh service (``Service/Method``)."""

ALLOWED: dict[Role, frozenset[str]] = {
    Role.ADMIN: PUBLIC_METHODS - _JOIN,  # a join token is used up by its Join: an admin key is not one
    Role.OPERATOR: frozenset(_OPERATE),
    Role.SUBMITTER: frozenset(_SUBMIT),
    Role.VIEWER: frozenset(_READ),
    Role.PUBLISHER: frozenset(_PUBLISH),
    Role.SUBSCRIBER: frozenset(_SUBSCRIBE),
    Role.JOIN: frozenset(_JOIN),
}
"""The roles of SPEC's security table: what each may call."""

ANY_KEY_PREFIXES = ("grpc.reflection.", "gridmesh.demo.")
"""Paths any valid key may call: reflection (what the edge serves) and the
replication demo's own services."""


def new_key() -> tuple[str, str, str]:
    """A fresh key: ``(key id, digest to store, the whole key to show once)``."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return key_id, digest(secret), f"{KEY_PREFIX}{key_id}_{secret}"


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_key(text: str) -> tuple[str, str]:
    """``(key id, secret)`` of a well-formed key; :class:`Unauthenticated` if not."""
    match = _KEY_RE.match(text.strip())
    if match is None:
        raise Unauthenticated("the API key is malformed: expected gmk_<id>_<secret>, as `gridmesh keys create` prints")
    return match.group(1), match.group(2)


def matches(record: KeyRecord, secret: str) -> bool:
    return hmac.compare_digest(record.digest, digest(secret))


def key_from_headers(authorization: str, api_key: str) -> str:
    """The key a call presents: ``authorization: Bearer <key>`` or ``x-api-key``."""
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthenticated("the authorization header must be 'Bearer <API key>'")
        return value.strip()
    if api_key:
        return api_key.strip()
    raise Unauthenticated(
        "no credential: send 'authorization: Bearer <API key>' (see `gridmesh keys create`, or "
        "the admin key `gridmesh up` wrote)"
    )


def decide(principal: Principal, method: str) -> None:
    """Returns if ``principal`` may call ``method`` (``/Service/Method``);
    :class:`PermissionDenied` naming the roles that may, if not."""
    path = method.lstrip("/")
    if path in ALLOWED[principal.role] or (principal.role is not Role.JOIN and path.startswith(ANY_KEY_PREFIXES)):
        return
    if path not in PUBLIC_METHODS:
        raise PermissionDenied(f"{path} is not served at the edge")
    may = sorted(str(role) for role, methods in ALLOWED.items() if path in methods)
    raise PermissionDenied(
        f"key {principal.key_id} has the role {principal.role}; {path} needs one of: {', '.join(may)}"
    )


def check_role(role: str, name: str) -> tuple[Role, str]:
    """A role and its bound name as ``keys create`` takes them, checked."""
    try:
        checked = Role(role)
    except ValueError:
        raise InvalidArgument(
            f"unknown role {role!r}; roles: {', '.join(r.value for r in Role)}", field="role"
        ) from None
    if checked is Role.JOIN:
        raise InvalidArgument("join tokens come from `gridmesh worker join-token`", field="role")
    if checked.bound and not name:
        raise InvalidArgument(f"a {checked} key names the {checked} it acts as", field=str(checked))
    if not checked.bound and name:
        raise InvalidArgument(f"only publisher and subscriber keys name whom they act as, not {checked}", field="role")
    return checked, check_name(name, str(checked)) if name else ""


def bound_name(role_header: str, role: Role) -> str | None:
    """The name a call through the edge is bound to for ``role``
    (``publisher:customers`` → ``customers``), ``""`` for a role that is not
    bound (admin may act as anyone), or ``None`` when the call did not come
    through the edge (no header: a process of the mesh itself)."""
    if not role_header:
        return None
    kind, _, name = role_header.partition(":")
    if kind == role.value:
        return name
    return ""


def check_bound(role_header: str, role: Role, requested: str) -> None:
    """A publisher key publishes only as its publisher, a subscriber key
    consumes only as its subscriber; :class:`PermissionDenied` otherwise."""
    name = bound_name(role_header, role)
    if name and name != requested:
        raise PermissionDenied(f"this key acts as {role} {name!r}, not {requested!r}", field=str(role))


class PeerRole(enum.StrEnum):
    """What a process of the mesh is, as its certificate names it (mutual
    TLS inside the mesh; see :mod:`gridmesh.grpc_support.tls`)."""

    SCHEDULER = "scheduler"
    STOREKEEPER = "storekeeper"
    WORKER = "worker"
    EVENTMANAGER = "eventmanager"
    EDGE = "edge"
    """Envoy: every public call, on behalf of the key the authorizer verified."""
    AUTHZ = "authz"
    """The edge's authorizer."""
    ADMIN = "admin"
    """Operator tools on a mesh host: ``gridmesh status``, the bench, the tests."""
    KAFKA = "kafka"
    """A Kafka broker ``gridmesh up`` runs (Kafka's TLS, not a gRPC peer)."""
    ANALYTICS = "analytics"
    """The analytics job, a Kafka client (not a gRPC peer)."""


_ANY_PEER = frozenset(PeerRole)
_CLIENT_SIDE = frozenset({PeerRole.EDGE, PeerRole.ADMIN})

PEER_ALLOWED: dict[str, frozenset[PeerRole]] = {
    # the most specific entry (a method before its service) wins
    "gridmesh.v1.Scheduler/GetTask": _CLIENT_SIDE | {PeerRole.STOREKEEPER},
    "gridmesh.v1.Scheduler/": _CLIENT_SIDE,
    "gridmesh.v1.WorkQueue/ReportCompletions": frozenset({PeerRole.STOREKEEPER}),
    "gridmesh.v1.WorkQueue/": frozenset({PeerRole.WORKER}),
    "gridmesh.v1.StoreKeeper/StoreResult": frozenset({PeerRole.WORKER}),
    "gridmesh.v1.StoreKeeper/StoreResults": frozenset({PeerRole.WORKER}),
    "gridmesh.v1.StoreKeeper/ExpireResults": frozenset({PeerRole.SCHEDULER}),
    "gridmesh.v1.StoreKeeper/": _CLIENT_SIDE,
    "gridmesh.v1.EventManager/": _CLIENT_SIDE,
    "gridmesh.v1.Worker/": frozenset({PeerRole.ADMIN}),
    "envoy.service.auth.v3.Authorization/": frozenset({PeerRole.EDGE}),
    "gridmesh.v1.Enrollment/": frozenset({PeerRole.EDGE}),
    "grpc.health.v1.Health/": _ANY_PEER,
    "grpc.reflection.": _ANY_PEER,
}
"""Which component may call which RPC of another (``Service/Method`` or a
prefix): workers the worker protocol and result writes, the StoreKeeper its
completion reports, the edge and local operator tools the public API."""


def check_peer(peer: str, method: str) -> None:
    """Returns if a component whose certificate names ``peer`` may call
    ``method`` (``/Service/Method``); :class:`PermissionDenied` naming the
    roles that may, if not."""
    path = method.lstrip("/")
    entry = next((prefix for prefix in _PEER_PREFIXES if path.startswith(prefix)), None)
    allowed = PEER_ALLOWED[entry] if entry is not None else frozenset()
    if peer in allowed:
        return
    may = ", ".join(sorted(allowed)) or "none: it is not an RPC of the mesh"
    raise PermissionDenied(f"a {peer or 'certificate without a role'} peer may not call {path}; needs one of: {may}")


_PEER_PREFIXES = sorted(PEER_ALLOWED, key=len, reverse=True)
