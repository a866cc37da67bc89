"""Mutual TLS between the processes of the mesh.

Each process presents the certificate of its role (:class:`PeerRole`) from
``tls.dir`` and trusts only the mesh's CA: a plaintext client, or one whose
certificate another CA signed, is refused at the handshake. A client checks
that the service it reached holds the certificate of the role it expects
(``<role>.gridmesh.internal``), and a service takes each call only from a
peer whose role :func:`~gridmesh.core.access.check_peer` allows
(:class:`PeerCheckInterceptor`).

With ``tls.enabled = false`` every function here falls back to plaintext,
and the services trust whoever reaches them.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc import aio

from gridmesh.adapters import pki
from gridmesh.common.errors import ConfigError
from gridmesh.config import MeshConfig
from gridmesh.core.access import ROLE_HEADER, PeerRole, check_peer
from gridmesh.grpc_support.handlers import Behavior, WrappingInterceptor

Options = Sequence[tuple[str, Any]]


@dataclass(frozen=True)
class MeshTls:
    """One process's side of the mesh's mutual TLS: the CA it trusts and the
    certificate and key of its role."""

    role: PeerRole
    ca: bytes
    cert: bytes
    key: bytes

    @classmethod
    def load(cls, config: MeshConfig, role: PeerRole) -> MeshTls | None:
        """``role``'s files from ``config.tls_path``; ``None`` when TLS is off.
        :class:`ConfigError` naming what is missing, if anything is."""
        return cls.from_dir(config.tls_path, role) if config.tls.enabled else None

    @classmethod
    def from_dir(cls, directory: Path, role: PeerRole) -> MeshTls:
        """``role``'s files in ``directory``; :class:`ConfigError` naming what is missing."""
        paths = pki.role_files(directory, role)
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise ConfigError(
                f"mutual TLS is on (tls.enabled) but {', '.join(missing)} is missing: `gridmesh up` creates "
                "a local CA and the certificates, or place your own there (tls.dir)"
            )
        try:
            ca, cert, key = (p.read_bytes() for p in paths)
        except OSError as e:
            raise ConfigError(f"cannot read the {role} certificate files in {directory}: {e}") from None
        return cls(role, ca, cert, key)

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials([(self.key, self.cert)], root_certificates=self.ca, require_client_auth=True)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )


def _peer_options(peer: PeerRole, options: Options) -> list[tuple[str, Any]]:
    # The name checked against the service's certificate: its role, wherever it runs.
    return [*options, ("grpc.ssl_target_name_override", pki.role_dns_name(peer))]


def aio_channel(target: str, tls: MeshTls | None, peer: PeerRole, options: Options = ()) -> aio.Channel:
    """An ``aio`` channel to the ``peer`` component at ``target``."""
    if tls is None:
        return aio.insecure_channel(target, options=list(options))
    return aio.secure_channel(target, tls.channel_credentials(), options=_peer_options(peer, options))


def channel(target: str, tls: MeshTls | None, peer: PeerRole, options: Options = ()) -> grpc.Channel:
    """A blocking channel to the ``peer`` component at ``target``."""
    if tls is None:
        return grpc.insecure_channel(target, options=list(options))
    return grpc.secure_channel(target, tls.channel_credentials(), options=_peer_options(peer, options))


def peer_role(context: aio.ServicerContext) -> str | None:
    """The role the caller's certificate names; ``None`` over plaintext."""
    auth = context.auth_context()
    if not auth.get("transport_security_type"):
        return None
    names = auth.get("x509_common_name") or [b""]
    return names[0].decode(errors="replace")


def edge_role(context: aio.ServicerContext) -> str:
    """The role (``admin``, ``publisher:customers``, …) of the key a call
    through the edge was made with, taken from :data:`ROLE_HEADER` only when
    the caller is the edge itself; ``admin`` for a local operator tool; ``""``
    (a process of the mesh) otherwise. Over plaintext (TLS off) the header is
    trusted as it comes."""
    peer = peer_role(context)
    if peer is None or peer == PeerRole.EDGE:
        return next((value for key, value in context.invocation_metadata() or () if key == ROLE_HEADER), "")
    return "admin" if peer == PeerRole.ADMIN else ""


def _checked(behavior: Behavior, method: str) -> Behavior:
    async def handler(request: Any, context: aio.ServicerContext) -> Any:
        _check(context, method)
        return await behavior(request, context)

    return handler


def _checked_responses(behavior: Behavior, method: str) -> Behavior:
    if not inspect.isasyncgenfunction(behavior):
        return _checked(behavior, method)

    async def handler(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
        _check(context, method)
        async for response in behavior(request, context):
            yield response

    return handler


def _check(context: aio.ServicerContext, method: str) -> None:
    peer = peer_role(context)
    if peer is not None:
        check_peer(peer, method)


class PeerCheckInterceptor(WrappingInterceptor):
    """Refuses (PERMISSION_DENIED, naming the roles that may) a call from a
    peer whose certificate's role may not make it."""

    wrap_unary = staticmethod(_checked)
    wrap_responses = staticmethod(_checked_responses)


__all__ = ["MeshTls", "PeerCheckInterceptor", "aio_channel", "channel", "edge_role", "peer_role"]
