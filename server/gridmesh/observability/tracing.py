"""Traces (OpenTelemetry): one per task and one per replicated event.

W3C trace context (a ``traceparent``) comes in with a public call: from the
client, or from Envoy when the client sent none. Where no call carries the
work on, the context travels with it:

- a task: in its row (``Task.trace_parent``), in the worker's assignment,
  into the task process, with the result to the StoreKeeper and with the
  completion back to the Scheduler;
- a replicated event: in the RabbitMQ message's headers and in each
  ``Delivery``;
- either: in the headers of the Kafka life-cycle events.

Each process exports its spans over OTLP/gRPC to ``tracing.collector``
(:func:`configure`, called once by the process's ``main()``; what is
still buffered goes out as the process exits). Off (the
default), nothing here creates a span or keeps a context: :func:`span`
yields ``""``, and a ``""`` parent is carried on unchanged.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Collection, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from grpc import aio
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gridmesh.common.errors import ConfigError
from gridmesh.config import TracingConfig

__all__ = [
    "TRACEPARENT",
    "SpanKind",
    "configure",
    "current",
    "current_trace_id",
    "enabled",
    "grpc_interceptor",
    "record",
    "span",
]

log = logging.getLogger(__name__)

TRACEPARENT = "traceparent"
"""The W3C header (and gRPC metadata key, and message header) name."""

EXPORT_DELAY_MS = 500
"""How long finished spans wait to be sent in one batch (the SDK's default is 5 s)."""

_PROPAGATOR = TraceContextTextMapPropagator()
_state: dict[str, Any] = {}
"""``tracer`` and ``provider`` once :func:`configure` turned tracing on."""


def configure(config: TracingConfig, component: str) -> None:
    """Export this process's spans as service ``gridmesh-<component>`` if
    tracing is on; otherwise nothing (every span is then a no-op)."""
    if not config.enabled or _state:
        return
    # Imported only when on: a process that does not trace never loads the SDK or its exporter.
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    except ImportError as e:  # xds-protos unpacked its older copy of these protos over opentelemetry-proto's
        raise ConfigError(
            f"tracing cannot export spans ({e}): reinstall OpenTelemetry's protos over xds-protos's older copy: "
            "pip install --no-deps --force-reinstall opentelemetry-proto==$(pip show opentelemetry-proto | "
            "sed -n 's/^Version: //p')  (./dev does this)"
        ) from None
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    provider = TracerProvider(
        resource=Resource.create({SERVICE_NAME: f"gridmesh-{component}"}),
        # A trace is kept or not where it starts; every later span follows its parent's flag.
        sampler=ParentBased(TraceIdRatioBased(config.sample_ratio)),
    )
    exporter = OTLPSpanExporter(endpoint=config.collector, insecure=True)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=EXPORT_DELAY_MS))
    trace.set_tracer_provider(provider)
    _state.update(provider=provider, tracer=provider.get_tracer("gridmesh"))
    log.info("tracing: spans go to %s over OTLP/gRPC", config.collector)


def enabled() -> bool:
    return bool(_state)


def _context(parent: str) -> Any:
    return _PROPAGATOR.extract({TRACEPARENT: parent}) if parent else None


def _traceparent(span: trace.Span) -> str:
    context = span.get_span_context()
    if not context.is_valid:
        return ""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _ns(at: datetime | None) -> int | None:
    """Nanoseconds since the epoch, exact (a float's would be off by a few hundred)."""
    return (at - _EPOCH) // timedelta(microseconds=1) * 1000 if at is not None else None


@contextlib.contextmanager
def span(
    name: str,
    *,
    parent: str = "",
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, str | int | float | bool] | None = None,
) -> Iterator[str]:
    """A span around the block, child of ``parent`` (a traceparent; ``""``:
    the current span, if any), current inside it. Yields its traceparent,
    for the next hop; ``""`` when tracing is off."""
    tracer = _state.get("tracer")
    if tracer is None:
        yield ""
        return
    with tracer.start_as_current_span(name, context=_context(parent), kind=kind, attributes=attributes) as s:
        yield _traceparent(s)


def record(
    name: str,
    *,
    parent: str,
    start: datetime,
    end: datetime | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, str | int | float | bool] | None = None,
) -> str:
    """A span that already happened (e.g. a task's wait in the queue),
    child of ``parent``; its traceparent (``""`` when tracing is off or
    there is no parent: such a span would start a trace of its own)."""
    tracer = _state.get("tracer")
    if tracer is None or not parent:
        return ""
    s = tracer.start_span(name, context=_context(parent), kind=kind, attributes=attributes, start_time=_ns(start))
    s.end(end_time=_ns(end))
    return _traceparent(s)


def current() -> str:
    """The current span's traceparent (``""``: none, or tracing is off)."""
    if not _state:
        return ""
    return _traceparent(trace.get_current_span())


def current_trace_id() -> str:
    """The current span's trace id, 32 hex digits (``""``: none, or tracing is off)."""
    if not _state:
        return ""
    context = trace.get_current_span().get_span_context()
    return f"{context.trace_id:032x}" if context.is_valid else ""


def grpc_interceptor(methods: Collection[str]) -> aio.ServerInterceptor | None:
    """A server span for each call of ``methods`` (``/package.Service/Method``),
    child of the caller's ``traceparent`` metadata; None when tracing is off.
    Only calls that start work belong here: a stream that lives as long as a
    connection would be one span for ever."""
    provider = _state.get("provider")
    if provider is None:
        return None
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    wanted = frozenset(methods)
    return aio_server_interceptor(tracer_provider=provider, filter_=lambda details: details.method in wanted)
