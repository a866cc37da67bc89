"""Tracing's helpers (observability.tracing), the pieces of config that
turn it on, and the Envoy and Jaeger configuration built from them. The
trace across the mesh's processes is tested against a real Jaeger in
tests/e2e/test_tracing.py."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gridmesh.config import ConfigError, load_config
from gridmesh.edge.envoy import build_envoy_config
from gridmesh.observability import jaeger, tracing
from gridmesh.observability.logs import JsonFormatter, _ContextFilter

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on in this process, into memory (as ``configure`` would, with an OTLP exporter)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing._state.update(provider=provider, tracer=provider.get_tracer("test"))
    try:
        yield exporter
    finally:
        tracing._state.clear()


def test_off_nothing_is_made_and_no_context_is_kept():
    assert not tracing.enabled()
    with tracing.span("x", parent=TRACEPARENT) as made:
        assert made == ""
        assert tracing.current() == "" and tracing.current_trace_id() == ""
    assert tracing.record("y", parent=TRACEPARENT, start=datetime.now(UTC)) == ""
    assert tracing.grpc_interceptor({"/a/b"}) is None


def test_a_span_continues_its_parent_and_names_itself_for_the_next_hop(spans):
    with tracing.span("run", parent=TRACEPARENT, attributes={"gridmesh.task_id": "t"}) as made:
        assert tracing.current() == made
        with tracing.span("inner") as inner:  # no parent given: the current span
            pass
    version, trace_id, span_id, flags = made.split("-")
    assert (version, trace_id, flags) == ("00", "0af7651916cd43dd8448eb211c80319c", "01")
    run, nested = {s.name: s for s in spans.get_finished_spans()}["run"], spans.get_finished_spans()[0]
    assert run.parent is not None and f"{run.parent.span_id:016x}" == "b7ad6b7169203331"
    assert f"{run.context.span_id:016x}" == span_id
    assert nested.name == "inner" and nested.parent.span_id == run.context.span_id
    assert inner.split("-")[1] == trace_id


def test_a_recorded_span_keeps_its_times_and_needs_a_parent(spans):
    start = datetime(2026, 12, 5, 6, 0, tzinfo=UTC)
    made = tracing.record("dispatch", parent=TRACEPARENT, start=start, end=start + timedelta(milliseconds=250))
    (span,) = spans.get_finished_spans()
    assert made.split("-")[2] == f"{span.context.span_id:016x}"
    assert span.start_time == 1_796_450_400_000_000_000 and span.end_time - span.start_time == 250_000_000
    assert tracing.record("orphan", parent="", start=start) == ""  # would start a trace of its own
    assert len(spans.get_finished_spans()) == 1


def test_a_malformed_parent_starts_a_new_trace(spans):
    with tracing.span("run", parent="not-a-traceparent") as made:
        pass
    assert made and made.split("-")[1] != "0af7651916cd43dd8448eb211c80319c"
    assert spans.get_finished_spans()[0].parent is None


def sampled(traceparent: str) -> bool:
    """The W3C flags' sampled bit (the others, e.g. "random", say nothing of it)."""
    return bool(int(traceparent.rsplit("-", 1)[1], 16) & 1)


def test_a_trace_is_kept_or_not_where_it_starts_and_its_spans_follow():
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(0.0)))  # as sample_ratio = 0 makes it
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing._state.update(provider=provider, tracer=provider.get_tracer("test"))
    try:
        with tracing.span("submit") as dropped, tracing.span("inner") as inner:  # a new trace: not sampled
            pass
        assert not sampled(dropped) and not sampled(inner) and inner.split("-")[1] == dropped.split("-")[1]
        assert not sampled(tracing.record("dispatch", parent=dropped, start=datetime.now(UTC)))
        assert exporter.get_finished_spans() == ()
        with tracing.span("run", parent=TRACEPARENT) as kept:  # the caller kept its trace: so do we
            pass
        assert sampled(kept) and [s.name for s in exporter.get_finished_spans()] == ["run"]
    finally:
        tracing._state.clear()


def test_log_records_carry_the_trace_id_of_their_span(spans):
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", (), None)
    with tracing.span("run", parent=TRACEPARENT):
        _ContextFilter().filter(record)
    assert '"trace_id": "0af7651916cd43dd8448eb211c80319c"' in JsonFormatter("worker").format(record)


def test_tracing_config_and_what_it_turns_on_at_envoy_and_jaeger():
    assert load_config({}).tracing.enabled is False
    own = load_config({"GRIDMESH_TRACING_ENABLED": "true", "GRIDMESH_TRACING_ENDPOINT": "otel.example:4317"})
    assert own.tracing.collector == "otel.example:4317" and not jaeger.runs_jaeger(own)
    local = load_config({"GRIDMESH_TRACING_ENABLED": "1", "GRIDMESH_TRACING_OTLP_PORT": "14317"})
    assert local.tracing.collector == "127.0.0.1:14317" and jaeger.runs_jaeger(local)
    with pytest.raises(ConfigError, match=r"tracing\.endpoint"):
        load_config({"GRIDMESH_TRACING_ENDPOINT": "http://collector"})
    with pytest.raises(ConfigError, match=r"tracing\.sample_ratio"):
        load_config({"GRIDMESH_TRACING_SAMPLE_RATIO": "1.5"})
    sampled = load_config({"GRIDMESH_TRACING_ENABLED": "1", "GRIDMESH_TRACING_SAMPLE_RATIO": "0.1"})
    hcm_of = build_envoy_config(sampled, descriptor="x.pb")["static_resources"]["listeners"][0]
    assert hcm_of["filter_chains"][0]["filters"][0]["typed_config"]["tracing"]["random_sampling"]["value"] == 10.0

    off = build_envoy_config(load_config({}), descriptor="x.pb")
    on = build_envoy_config(own, descriptor="x.pb")
    hcm = on["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["tracing"]["provider"]["name"] == "envoy.tracers.opentelemetry"
    (collector,) = [c for c in on["static_resources"]["clusters"] if c["name"] == "otlp"]
    address = collector["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert address["socket_address"] == {"address": "otel.example", "port_value": 4317}
    assert collector["type"] == "STRICT_DNS"
    off_hcm = off["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert "tracing" not in off_hcm and all(c["name"] != "otlp" for c in off["static_resources"]["clusters"])

    built = jaeger.build_config(local)
    assert built["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"] == "127.0.0.1:14317"
    assert built["extensions"]["jaeger_query"]["http"]["endpoint"] == "127.0.0.1:16686"
