"""What every gridmesh gRPC process shares: an ``aio`` server with the
error interceptor, health checking and reflection, and the shutdown order of
STYLE §11 (health NOT_SERVING → stop taking work → ``server.stop(grace)`` →
close adapters) on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from gridmesh.adapters import prometheus
from gridmesh.config import MeshConfig, load_config
from gridmesh.grpc_support.errors import ErrorMappingInterceptor
from gridmesh.grpc_support.metrics import MessageCountingInterceptor
from gridmesh.grpc_support.tls import MeshTls, PeerCheckInterceptor
from gridmesh.observability import tracing
from gridmesh.observability.logs import configure_logging
from gridmesh.v1 import eventmanager_pb2, scheduler_pb2, storekeeper_pb2

log = logging.getLogger(__name__)

# The public API of the mesh: what the edge routes. Every process describes
# all of it (and nothing else: not the worker protocol, not a node's Worker
# service) through reflection, so `grpcurl <edge> list` shows what a client
# can call whichever backend Envoy sends the reflection call to.
MESH_SERVICES: tuple[str, ...] = (
    scheduler_pb2.DESCRIPTOR.services_by_name["Scheduler"].full_name,
    storekeeper_pb2.DESCRIPTOR.services_by_name["StoreKeeper"].full_name,
    eventmanager_pb2.DESCRIPTOR.services_by_name["EventManager"].full_name,
)

TRACED_METHODS: frozenset[str] = frozenset(
    f"/{service.full_name}/{method.name}"
    for module in (scheduler_pb2, storekeeper_pb2, eventmanager_pb2)
    for service in module.DESCRIPTOR.services_by_name.values()
    if service.full_name in MESH_SERVICES
    for method in service.methods
    if not method.client_streaming and not method.server_streaming
)
"""The calls that get a server span (with tracing on): the public API's
unary calls. Streams are traced by what they carry (assignments, results,
deliveries), not as calls that may last for hours."""

Registration = Callable[[aio.Server], None]
ShutdownStep = Callable[[], Awaitable[None]]

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class GrpcHost:
    """A built (not yet started) server and what its shutdown needs."""

    server: aio.Server
    port: int
    health: health.aio.HealthServicer
    services: tuple[str, ...]
    """Fully-qualified names of the services this process implements."""
    stop_taking_work: list[ShutdownStep] = field(default_factory=list)
    close_adapters: list[ShutdownStep] = field(default_factory=list)

    async def set_serving(self, serving: bool) -> None:
        status = SERVING if serving else NOT_SERVING
        for name in ("", *self.services):
            await self.health.set(name, status)


def build_grpc_server(
    address: str,
    registrations: Iterable[Registration],
    services: Sequence[str],
    *,
    tls: MeshTls | None,
    extra_interceptors: Sequence[aio.ServerInterceptor] = (),
    options: Sequence[tuple[str, int]] = (),
) -> GrpcHost:
    """An aio server bound to ``address`` (port 0 = any free port) with the
    given servicers, health (every service NOT_SERVING until
    :meth:`GrpcHost.set_serving`) and reflection. With ``tls``, it takes only
    mutual-TLS connections from the mesh's CA, and each call only from a
    peer whose role may make it; without, plaintext from anyone."""
    checks = [PeerCheckInterceptor()] if tls is not None else []
    traced = tracing.grpc_interceptor(TRACED_METHODS)  # outermost: its span covers the rest
    server = aio.server(
        interceptors=[
            *([traced] if traced is not None else []),
            MessageCountingInterceptor(),
            ErrorMappingInterceptor(),
            *checks,
            *extra_interceptors,
        ],
        options=[("grpc.so_reuseport", 0), *options],
    )
    for register in registrations:
        register(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*MESH_SERVICES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server,
    )
    port = (
        server.add_insecure_port(address) if tls is None else server.add_secure_port(address, tls.server_credentials())
    )
    if port == 0:
        raise OSError(f"cannot listen on {address}: the address is in use or not local")
    return GrpcHost(server=server, port=port, health=health_servicer, services=tuple(services))


def run_process(serve: Callable[[MeshConfig], Coroutine[Any, Any, None]], component: str) -> None:
    """A service process's ``main()``: its config from the environment,
    logging, then ``serve`` until a signal ends it."""
    config = load_config(os.environ)
    configure_logging(config.log_level, config.log_format, component)
    tracing.configure(config.tracing, component)
    asyncio.run(serve(config))


def export_metrics(host: GrpcHost, config: MeshConfig, component: str) -> None:
    """Serve this process's Prometheus metrics (unless turned off) while
    ``host`` runs, published as the file_sd target ``<component>-<port>``."""
    endpoint = prometheus.start(config, component, host.port)
    if endpoint is not None:
        host.close_adapters.append(endpoint.close)


async def serve_until_signal(
    host: GrpcHost,
    *,
    grace_s: float = 10.0,
    ready: ShutdownStep | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Start ``host``, mark it SERVING (or run ``ready``), wait for
    SIGTERM/SIGINT (or ``stop``), then shut down in order. Idempotent against
    repeated signals."""
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await host.set_serving(False)  # known to health checks from the first moment
    await host.server.start()
    if ready is None:
        await host.set_serving(True)
    elif not await _ready_unless_stopped(ready, stop):
        log.info("stopped before it was ready")
        await shutdown(host, grace_s=grace_s)
        return
    log.info("serving %s on port %d", ", ".join(host.services), host.port)
    await stop.wait()
    await shutdown(host, grace_s=grace_s)


async def _ready_unless_stopped(ready: ShutdownStep, stop: asyncio.Event) -> bool:
    """Run ``ready`` (e.g. a worker registering, retried until a Scheduler
    answers) unless ``stop`` is set first; then it is cancelled: a signal
    must end a process that never became ready."""
    readying = asyncio.ensure_future(ready())
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({readying, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if readying.done():
        readying.result()  # re-raise what made it fail
        return True
    readying.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await readying
    return False


async def shutdown(host: GrpcHost, *, grace_s: float) -> None:
    """Health NOT_SERVING → stop taking work → server.stop(grace) → close adapters."""
    log.info("shutting down: health NOT_SERVING, draining for up to %.0f s", grace_s)
    await host.health.enter_graceful_shutdown()
    for step in host.stop_taking_work:
        await _run_step(step)
    await host.server.stop(grace_s)
    for step in host.close_adapters:
        await _run_step(step)
    log.info("stopped")


async def _run_step(step: ShutdownStep) -> None:
    try:
        await step()
    except Exception:
        log.exception("shutdown step %s failed; continuing", getattr(step, "__qualname__", step))


def channel_options() -> list[tuple[str, int]]:
    """Client channel options shared by the mesh's own clients."""
    return [("grpc.keepalive_time_ms", 20_000), ("grpc.keepalive_timeout_ms", 10_000)]


__all__ = [
    "MESH_SERVICES",
    "NOT_SERVING",
    "SERVING",
    "GrpcHost",
    "build_grpc_server",
    "channel_options",
    "serve_until_signal",
    "shutdown",
]
