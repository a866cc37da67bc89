"""A client that traces, run by tests/e2e/test_tracing.py in a process of
its own (its OpenTelemetry SDK must not trace the test session's own code).

With the mesh's environment (``GRIDMESH_*``, tracing on), it submits a
word count inside a span of its own and waits for it on the watch stream,
then publishes an event inside another span and consumes it as
``subscriber``, applying it in the span a replica applier makes. It prints
what the test looks up in the trace store, as JSON.

    python -m tests.e2e.traced_client SUBSCRIBER
"""

from __future__ import annotations

import json
import os
import sys

from gridmesh.cli import mesh
from gridmesh.clients import _tracing
from gridmesh.clients.events import new_event
from gridmesh.config import load_config
from gridmesh.core.replication import Operation
from gridmesh.observability import tracing
from gridmesh.v1 import common_pb2


def _trace_id(traceparent: str) -> str:
    return traceparent.split("-")[1]


def main(subscriber: str) -> None:
    config = load_config(os.environ)
    tracing.configure(config.tracing, "test-client")
    found: dict[str, object] = {}
    with mesh.task_client(config) as tasks:
        with tracing.span("client submits", kind=tracing.SpanKind.CLIENT) as submitted:
            task = tasks.submit("word_count", {"text": "to be or not to be"}, "traced")
        done = tasks.wait(task.task_id, timeout=60)
        assert done.state == common_pb2.SUCCEEDED, done
        found["task"] = {"trace_id": _trace_id(submitted), "span_id": submitted.split("-")[2], "task_id": task.task_id}
    with mesh.event_client(config) as events:
        events.subscribe(subscriber, "traced", "thing")
        with tracing.span("client publishes", kind=tracing.SpanKind.CLIENT) as published:
            event = new_event("traced", "thing", "t-1", Operation.CREATE, 1, {"name": "Ada"})
            events.publish(event)
        with events.consume(subscriber) as stream:
            delivery = next(iter(stream))
            with _tracing.applying(f"apply to {subscriber}", [delivery.traceparent], {}):
                stream.ack(delivery.delivery_id)
        found["event"] = {
            "trace_id": _trace_id(published),
            "span_id": published.split("-")[2],
            "event_id": event.event_id,
            "delivered_in": delivery.traceparent,
        }
    print(json.dumps(found), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
