"""The example every generated client has (clients/go, clients/ts,
clients/java), with the Python client: submit a word count and watch it,
download its result, read a bad request's field violation, and publish and
consume an entity event. It needs only ``pip install ./clients``.

The mesh comes from the environment (tests/e2e/client_programs.py describes
it): GRIDMESH_EDGE, GRIDMESH_CA_FILE, GRIDMESH_API_KEY (a submitter key),
GRIDMESH_PUBLISHER(_KEY), GRIDMESH_SUBSCRIBER(_KEY), GRIDMESH_TEXT. Each
step prints one JSON line.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import uuid
from typing import Any

from gridmesh.clients import EventClient, Operation, TaskClient, TaskError, new_event, payload_dict
from gridmesh.v1 import common_pb2


def step(name: str, **fields: Any) -> None:
    print(json.dumps({"step": name, **fields}), flush=True)


def main() -> int:
    env = os.environ
    edge = env["GRIDMESH_EDGE"]
    with TaskClient(edge, api_key=env["GRIDMESH_API_KEY"]) as tasks:
        task = tasks.submit("word_count", {"text": env["GRIDMESH_TEXT"]}, "clients-python")
        step("submitted", task_id=task.task_id)

        # The task's state now, then each change; the stream ends at a terminal state.
        states = [common_pb2.TaskState.Name(event.task.state) for event in tasks.watch(task.task_id)]
        step("watched", states=states)

        body = tasks.result(task.task_id)
        step("downloaded", bytes=len(body), sha256=hashlib.sha256(body).hexdigest(), result=json.loads(body))

        try:
            tasks.submit("word_count", {"text": 5}, "clients-python")
            raise SystemExit("a word_count with a number for text was accepted")
        except TaskError as e:
            violation = e.violations[0]
            step("refused", code=e.code_name, field=violation.field, description=violation.description)

    publisher, subscriber = env["GRIDMESH_PUBLISHER"], env["GRIDMESH_SUBSCRIBER"]
    entity_id = str(uuid.uuid4())
    with EventClient(edge, api_key=env["GRIDMESH_PUBLISHER_KEY"]) as events:
        events.publish(new_event(publisher, "customer", entity_id, "CREATE", 1, {"name": "Ada", "credit": 42}))
    step("published", entity_id=entity_id, version=1)

    with EventClient(edge, api_key=env["GRIDMESH_SUBSCRIBER_KEY"]) as events, events.consume(subscriber) as stream:
        for delivery in stream:
            stream.ack(delivery.delivery_id)
            if delivery.event.entity_id == entity_id:
                operation = Operation(delivery.event.operation).name
                step("consumed", entity_id=entity_id, operation=operation, payload=payload_dict(delivery.event))
                break
    return 0


if __name__ == "__main__":
    sys.exit(main())
