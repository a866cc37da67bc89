"""The edge's authorizer: Envoy's ``ext_authz`` asks it about every call to a
gridmesh service (Envoy's ``envoy.service.auth.v3.Authorization`` API).

It reads the key the call presents (``authorization: Bearer <key>``, or
``x-api-key``), finds it among the keys it holds in memory (the whole key
table, read again every ``auth.refresh_s``, so a revocation applies within
that interval and a check never waits on MySQL), and decides by the call's
gRPC method path (:func:`gridmesh.core.access.decide`). Allowed: Envoy
passes the call on with the verified role in ``x-gridmesh-role`` (replacing
whatever the client sent there) and without the key. Refused: 401 or 403 —
UNAUTHENTICATED or PERMISSION_DENIED for gRPC, the JSON status for
HTTP/JSON — and the call reaches nothing.

Asked with the context extension ``check: json-body`` (Envoy does, for
every HTTP/JSON call, with its body, before the transcoder reads it), it
checks instead that the body names only fields the request message has
(:mod:`gridmesh.edge.jsonbody`): an unknown one (or a Timestamp or Duration
written as an object) is refused with 400 and a ``google.rpc.BadRequest``
naming it, as the services refuse a bad field.

It also serves ``gridmesh.v1.Enrollment/Join`` (routed by the edge, after
the same check): a new worker host trades a join token — a key of the
``join`` role, valid once — and a certificate signing request for a worker
certificate signed by the mesh's CA, whose key it needs in ``tls.dir``.

    python -m gridmesh.edge.authz
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.type.v3 import http_status_pb2
from google.rpc import status_pb2
from grpc import aio

from gridmesh.adapters import pki
from gridmesh.common.errors import (
    ConfigError,
    FailedPrecondition,
    GridmeshError,
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
)
from gridmesh.config import MeshConfig
from gridmesh.core.access import (
    KEY_ID_HEADER,
    ROLE_HEADER,
    KeyRecord,
    PeerRole,
    Role,
    decide,
    key_from_headers,
    matches,
    parse_key,
)
from gridmesh.edge.envoy import DEMO_SERVICES, JSON_BODY_CHECK, descriptor_set_path
from gridmesh.edge.jsonbody import JsonBodies
from gridmesh.edge.keys import KeyStore
from gridmesh.grpc_support.server import (
    build_grpc_server,
    export_metrics,
    run_process,
    serve_until_signal,
)
from gridmesh.grpc_support.tls import MeshTls, edge_role
from gridmesh.v1 import enrollment_pb2, enrollment_pb2_grpc

log = logging.getLogger(__name__)

SERVICE = external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"].full_name
CREDENTIAL_HEADERS = ("authorization", "x-api-key")
LARGE_BODY_BYTES = 64 * 1024
"""A JSON body over this is checked in a thread (parsing a few MiB takes tens of ms)."""
TRANSCODED_HEADER = "x-envoy-original-path"
"""Set by the JSON transcoder: the call came in as HTTP/JSON."""
_HTTP = {Unauthenticated: http_status_pb2.Unauthorized, PermissionDenied: http_status_pb2.Forbidden}
_GRPC = {Unauthenticated: grpc.StatusCode.UNAUTHENTICATED, PermissionDenied: grpc.StatusCode.PERMISSION_DENIED}


class Keys:
    """The key table as last read."""

    def __init__(self) -> None:
        self._by_id: dict[str, KeyRecord] = {}
        self.loaded = False

    def replace(self, records: list[KeyRecord]) -> None:
        self._by_id = {r.key_id: r for r in records}
        self.loaded = True

    def verify(self, key: str, now: datetime) -> KeyRecord:
        """The usable record of ``key``; :class:`Unauthenticated` if none."""
        key_id, secret = parse_key(key)
        record = self._by_id.get(key_id)
        if record is None or not matches(record, secret):
            raise Unauthenticated(f"unknown API key {key_id}")
        if record.revoked_at is not None:
            if record.role is Role.JOIN:
                raise Unauthenticated(f"the join token {key_id} was used already or revoked")
            raise Unauthenticated(f"the API key {key_id} was revoked")
        if not record.usable(now):
            raise Unauthenticated(f"the API key {key_id} expired")
        return record


def _header(key: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=key, value=value),
        append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
    )


def _caller(keys: Keys, headers: Mapping[str, str], now: datetime) -> KeyRecord:
    """The record of the key a call presents; :class:`Unauthenticated` if none is usable."""
    return keys.verify(key_from_headers(headers.get("authorization", ""), headers.get("x-api-key", "")), now)


def check(keys: Keys, request: external_auth_pb2.CheckRequest, now: datetime) -> external_auth_pb2.CheckResponse:
    """The answer to one ``Check``: allowed with the verified role, or refused."""
    http = request.attributes.request.http
    headers = http.headers
    method = http.path.split("?", 1)[0]
    try:
        record = _caller(keys, headers, now)
        decide(record.principal, method)
    except (Unauthenticated, PermissionDenied) as refused:
        return _denied(refused, as_json=TRANSCODED_HEADER in headers or method.startswith("/v1/"))
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=grpc.StatusCode.OK.value[0]),
        ok_response=external_auth_pb2.OkHttpResponse(
            headers=[_header(ROLE_HEADER, str(record.principal)), _header(KEY_ID_HEADER, record.key_id)],
            headers_to_remove=list(CREDENTIAL_HEADERS),
        ),
    )


def check_json_body(
    keys: Keys, bodies: JsonBodies, request: external_auth_pb2.CheckRequest, now: datetime
) -> external_auth_pb2.CheckResponse:
    """The answer to a ``Check`` of an HTTP/JSON call's body: allowed as it
    is, or refused with 400 naming each field its request message lacks. A
    caller without a usable key learns nothing of the API: 401 first, as
    :func:`check` would answer (which decides the call's method after the
    transcoder)."""
    http = request.attributes.request.http
    try:
        _caller(keys, http.headers, now)
    except Unauthenticated as refused:
        return _denied(refused, as_json=True)
    found = bodies.violations(http.method, http.path.split("?", 1)[0], http.raw_body)  # pack_as_bytes
    if not found:
        return external_auth_pb2.CheckResponse(status=status_pb2.Status(code=grpc.StatusCode.OK.value[0]))
    code = grpc.StatusCode.INVALID_ARGUMENT.value[0]
    message = found[0].description + (f" (and {len(found) - 1} more)" if len(found) > 1 else "")
    violations = [{"field": v.field, "description": v.description} for v in found]
    details = [{"@type": "type.googleapis.com/google.rpc.BadRequest", "field_violations": violations}]
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=code, message=message),
        denied_response=external_auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=http_status_pb2.BadRequest),
            headers=[_header("content-type", "application/json")],
            body=json.dumps({"code": code, "message": message, "details": details}),
        ),
    )


def _denied(error: GridmeshError, *, as_json: bool) -> external_auth_pb2.CheckResponse:
    """A refusal: for an HTTP/JSON call the JSON status every error of the
    API has; for a gRPC call the plain message (Envoy sends it as the
    grpc-message of UNAUTHENTICATED or PERMISSION_DENIED)."""
    kind = type(error)
    code = _GRPC[kind].value[0]
    if as_json:
        body = json.dumps({"code": code, "message": error.message, "details": []})
        headers = [_header("content-type", "application/json")]
    else:
        body, headers = error.message, [_header("content-type", "text/plain")]
    if kind is Unauthenticated:
        headers.append(_header("www-authenticate", 'Bearer realm="gridmesh"'))
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=code, message=error.message),
        denied_response=external_auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=_HTTP[kind]), headers=headers, body=body
        ),
    )


class AuthorizationServicer(external_auth_pb2_grpc.AuthorizationServicer):
    def __init__(self, keys: Keys, bodies: JsonBodies) -> None:
        self._keys = keys
        self._bodies = bodies

    async def Check(
        self, request: external_auth_pb2.CheckRequest, context: aio.ServicerContext
    ) -> external_auth_pb2.CheckResponse:
        if request.attributes.context_extensions.get("check") == JSON_BODY_CHECK:
            now = datetime.now(UTC)
            if len(request.attributes.request.http.raw_body) > LARGE_BODY_BYTES:  # not on the event loop
                return await asyncio.to_thread(check_json_body, self._keys, self._bodies, request, now)
            return check_json_body(self._keys, self._bodies, request, now)
        return check(self._keys, request, datetime.now(UTC))


class EnrollmentServicer(enrollment_pb2_grpc.EnrollmentServicer):
    """Join: the call's join token used up, then a worker certificate."""

    def __init__(self, store: KeyStore, ca: pki.CertificateAuthority | None, zookeeper_password: str) -> None:
        self._store = store
        self._ca = ca
        self._zookeeper_password = zookeeper_password

    async def Join(
        self, request: enrollment_pb2.JoinRequest, context: aio.ServicerContext
    ) -> enrollment_pb2.JoinResponse:
        metadata = dict(context.invocation_metadata() or ())
        key_id = metadata.get(KEY_ID_HEADER, "")
        if edge_role(context) != Role.JOIN or not key_id:
            raise PermissionDenied("Join takes a join token (`gridmesh worker join-token`)")
        if self._ca is None:
            raise FailedPrecondition("the edge does not hold the mesh's CA key (ca.key in tls.dir): it cannot sign")
        try:
            csr = request.csr_pem.encode()
            pki.check_signing_request(csr)
        except ValueError as e:
            raise InvalidArgument(f"csr_pem: {e}", field="csr_pem") from None
        if not await asyncio.to_thread(self._store.use_join_token, key_id):
            raise Unauthenticated(f"the join token {key_id} was used already, revoked or expired")
        certificate = self._ca.sign_request(csr, PeerRole.WORKER)
        log.info("join token %s used: issued a worker certificate", key_id)
        return enrollment_pb2.JoinResponse(
            certificate_pem=certificate.decode(),
            ca_certificate_pem=self._ca.cert_pem.decode(),
            zookeeper_password=self._zookeeper_password,
        )


def _zookeeper_password(config: MeshConfig) -> str:
    """What a joining worker gets for ZooKeeper ("" where this host has not got it)."""
    try:
        return config.zookeeper_password
    except ConfigError:
        log.warning("no ZooKeeper password here: joining worker hosts must be given it by hand")
        return ""


async def keep_reading(store: KeyStore, keys: Keys, interval_s: float) -> None:
    """Read the key table every ``interval_s`` (a failed read keeps the last)."""
    while True:
        try:
            keys.replace(await asyncio.to_thread(store.all))
        except GridmeshError as e:
            log.warning("could not read the API keys (keeping the last ones): %s", e.message)
        await asyncio.sleep(interval_s)


async def serve(config: MeshConfig) -> None:
    store = await asyncio.to_thread(KeyStore.open, config)
    keys = Keys()
    bodies = JsonBodies(descriptor_set_path().read_bytes(), also=DEMO_SERVICES if config.demo.enabled else ())
    tls = MeshTls.load(config, PeerRole.AUTHZ)
    enrollment = EnrollmentServicer(
        store,
        pki.CertificateAuthority.load(config.tls_path) if tls is not None else None,
        _zookeeper_password(config),
    )
    host = build_grpc_server(
        f"{config.auth.host}:{config.auth.port}",
        [
            lambda server: external_auth_pb2_grpc.add_AuthorizationServicer_to_server(
                AuthorizationServicer(keys, bodies), server
            ),
            lambda server: enrollment_pb2_grpc.add_EnrollmentServicer_to_server(enrollment, server),
        ],
        (SERVICE,),
        tls=tls,
    )
    reading: asyncio.Task[None] | None = None

    async def ready() -> None:
        nonlocal reading
        reading = asyncio.create_task(keep_reading(store, keys, config.auth.refresh_s))
        while not keys.loaded:
            await asyncio.sleep(0.05)
        await host.set_serving(True)

    async def close_adapters() -> None:
        if reading is not None:
            reading.cancel()
        await asyncio.to_thread(store.close)

    host.close_adapters.append(close_adapters)
    export_metrics(host, config, "authz")
    await serve_until_signal(host, ready=ready)


def main(argv: list[str] | None = None) -> None:
    run_process(serve, "authz")


if __name__ == "__main__":
    main(sys.argv[1:])
