"""The client-facing Scheduler servicer: converts protobuf ↔ core and delegates."""

from __future__ import annotations

from grpc import aio

from gridmesh.core.tasktypes import TaskTypeRegistry
from gridmesh.grpc_support.convert import dict_to_struct
from gridmesh.v1 import scheduler_pb2, scheduler_pb2_grpc


class SchedulerServicer(scheduler_pb2_grpc.SchedulerServicer):
    def __init__(self, registry: TaskTypeRegistry) -> None:
        self._registry = registry

    async def ListTaskTypes(
        self, request: scheduler_pb2.ListTaskTypesRequest, context: aio.ServicerContext
    ) -> scheduler_pb2.ListTaskTypesResponse:
        return scheduler_pb2.ListTaskTypesResponse(
            task_types=[
                scheduler_pb2.TaskTypeInfo(
                    name=t.name, description=t.description, params_schema=dict_to_struct(dict(t.params_schema))
                )
                for t in self._registry
            ]
        )
