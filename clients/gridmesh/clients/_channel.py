"""What every gridmesh client shares: the channel it may own (TLS to the
edge), and the API key it presents there."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Self

import grpc

from gridmesh.clients import _tracing

API_KEY_VAR = "GRIDMESH_API_KEY"
"""Where a client finds its API key when none is given."""
CA_FILE_VAR = "GRIDMESH_CA_FILE"
"""Where a client finds the CA certificate it checks the edge's certificate
against when none is given (``gridmesh up`` prints it: ``<state_dir>/tls/ca.crt``);
unset, the system's trusted roots."""


def edge_credentials(ca_file: str | None = None) -> grpc.ChannelCredentials:
    """TLS to the edge, trusting ``ca_file`` (default: ``$GRIDMESH_CA_FILE``,
    else the system's roots)."""
    path = ca_file if ca_file is not None else os.environ.get(CA_FILE_VAR, "")
    roots = Path(path).expanduser().read_bytes() if path else None
    return grpc.ssl_channel_credentials(root_certificates=roots)


def edge_channel(
    target: str, *, ca_file: str | None = None, plaintext: bool = False, options: Sequence[tuple[str, int]] = ()
) -> grpc.Channel:
    """A channel to the edge at ``target``: TLS (see :func:`edge_credentials`),
    or plaintext when the edge is configured without TLS (``plaintext``)."""
    if plaintext:
        return grpc.insecure_channel(target, options=list(options))
    return grpc.secure_channel(target, edge_credentials(ca_file), options=list(options))


def key_metadata(key: str | None) -> tuple[tuple[str, str], ...]:
    """gRPC metadata presenting ``key`` at the edge (none without a key)."""
    key = (key or "").strip()
    return (("authorization", f"Bearer {key}"),) if key else ()


class _CallDetails(NamedTuple):
    method: str
    timeout: float | None
    metadata: Sequence[tuple[str, str]] | None
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None


class _EdgeMetadata(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds ``authorization: Bearer <key>`` (with a key) and the caller's
    trace context (inside a span, with OpenTelemetry installed) to every call."""

    def __init__(self, key: str) -> None:
        self._metadata = key_metadata(key)

    def _with_key(self, details: grpc.ClientCallDetails) -> _CallDetails:
        return _CallDetails(
            details.method,
            details.timeout,
            [*(details.metadata or ()), *self._metadata, *_tracing.outgoing_metadata()],
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def _call(self, continuation: Callable[..., Any], details: grpc.ClientCallDetails, request: Any) -> Any:
        return continuation(self._with_key(details), request)

    intercept_unary_unary = _call
    intercept_unary_stream = _call
    intercept_stream_unary = _call
    intercept_stream_stream = _call


class ChannelClient:
    """Opens a channel to ``target`` unless one is given; :meth:`close`
    closes only a channel it opened (idempotent); usable with ``with``.
    Every call presents ``api_key`` (default: ``$GRIDMESH_API_KEY``, if set).
    The channel it opens is TLS, trusting ``ca_file`` (default:
    ``$GRIDMESH_CA_FILE``, else the system's roots), unless ``plaintext``."""

    def __init__(
        self,
        target: str,
        channel: grpc.Channel | None,
        rpc_timeout_s: float | None,
        options: Sequence[tuple[str, int]] = (),
        api_key: str | None = None,
        ca_file: str | None = None,
        plaintext: bool = False,
    ) -> None:
        self.target = target
        self._owns_channel = channel is None
        self._own = (
            channel
            if channel is not None
            else edge_channel(target, ca_file=ca_file, plaintext=plaintext, options=options)
        )
        key = api_key if api_key is not None else os.environ.get(API_KEY_VAR, "")
        wanted = key.strip() or _tracing.available()
        self._channel = grpc.intercept_channel(self._own, _EdgeMetadata(key.strip())) if wanted else self._own
        self._timeout = rpc_timeout_s

    def close(self) -> None:
        """Closes the channel if this client opened it. Idempotent."""
        if self._owns_channel:
            self._own.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
