"""Trace context in the clients, when OpenTelemetry is installed (it is
optional: without it, nothing here does anything).

A call made inside a span carries it as ``traceparent`` metadata, so the
mesh's spans of that call (Envoy's, the service's, and those of the work it
starts) join the caller's trace; a replica applier applies each delivery in
a span that continues the EventManager's. Spans are recorded only where the
process configured an OpenTelemetry SDK; elsewhere they are no-ops.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

try:
    from opentelemetry import propagate, trace
except ImportError:  # pragma: no cover - tracing is optional
    propagate = trace = None  # type: ignore[assignment]

TRACEPARENT = "traceparent"


def available() -> bool:
    return trace is not None


def outgoing_metadata() -> list[tuple[str, str]]:
    """The current span's trace context as gRPC metadata (none outside a span)."""
    if propagate is None:
        return []
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return list(carrier.items())


@contextlib.contextmanager
def applying(what: str, trace_parents: Sequence[str], attributes: dict[str, Any]) -> Iterator[None]:
    """A span named ``what`` around the block for each distinct trace
    context in ``trace_parents`` (a batch may hold events of several
    traces), each a child of its own."""
    parents = [p for p in dict.fromkeys(trace_parents) if p]
    if trace is None or not parents:
        yield
        return
    tracer = trace.get_tracer("gridmesh.clients")
    with contextlib.ExitStack() as spans:
        for parent in parents:
            context = propagate.extract({TRACEPARENT: parent})
            spans.enter_context(
                tracer.start_as_current_span(what, context=context, kind=trace.SpanKind.CONSUMER, attributes=attributes)
            )
        yield
