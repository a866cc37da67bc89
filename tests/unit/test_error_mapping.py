"""STYLE §3 / issue 3: one error tree mapped to gRPC codes in one place; no
bare exception reaches a client as UNKNOWN."""

import asyncio

import grpc
import pytest
from google.api import httpbody_pb2
from google.rpc import error_details_pb2
from grpc import aio
from grpc_status import rpc_status

from gridmesh.common import errors
from gridmesh.grpc_support.server import build_grpc_server
from gridmesh.v1 import storekeeper_pb2, storekeeper_pb2_grpc


class Failing(storekeeper_pb2_grpc.StoreKeeperServicer):
    def __init__(self, error: Exception) -> None:
        self.error = error

    async def GetResultInfo(self, request, context):
        raise self.error

    async def GetResult(self, request, context):
        yield httpbody_pb2.HttpBody(data=b"first")
        raise self.error


async def _call(error: Exception) -> tuple[grpc.RpcError, grpc.RpcError]:
    servicer = Failing(error)
    host = build_grpc_server(
        "127.0.0.1:0",
        [lambda s: storekeeper_pb2_grpc.add_StoreKeeperServicer_to_server(servicer, s)],
        ["gridmesh.v1.StoreKeeper"],
        tls=None,
    )
    await host.server.start()
    try:
        async with aio.insecure_channel(f"127.0.0.1:{host.port}") as channel:
            stub = storekeeper_pb2_grpc.StoreKeeperStub(channel)
            with pytest.raises(grpc.RpcError) as unary:
                await stub.GetResultInfo(storekeeper_pb2.GetResultInfoRequest(task_id="x"))
            with pytest.raises(grpc.RpcError) as stream:
                async for _ in stub.GetResult(storekeeper_pb2.GetResultRequest(task_id="x")):
                    pass
            return unary.value, stream.value
    finally:
        await host.server.stop(0)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.InvalidArgument("params.ms: -1 is less than 0"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.NotFound("task 42 does not exist"), grpc.StatusCode.NOT_FOUND),
        (errors.FailedPrecondition("task is SUCCEEDED"), grpc.StatusCode.FAILED_PRECONDITION),
        (errors.AlreadyExists("exists"), grpc.StatusCode.ALREADY_EXISTS),
        (errors.ResourceExhausted("too big"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.OutOfRange("too old"), grpc.StatusCode.OUT_OF_RANGE),
        (errors.Unavailable("MySQL is unreachable"), grpc.StatusCode.UNAVAILABLE),
        (errors.NotLeader("standby"), grpc.StatusCode.UNAVAILABLE),
        (errors.Internal("MySQL refused the statement: Data too long"), grpc.StatusCode.INTERNAL),
    ],
)
def test_gridmesh_errors_map_to_their_status_with_the_message(error, code):
    unary, stream = asyncio.run(_call(error))
    for e in (unary, stream):
        assert e.code() == code
        assert e.details() == error.message


def test_unexpected_exception_is_internal_not_unknown():
    unary, stream = asyncio.run(_call(ZeroDivisionError("boom")))
    for e in (unary, stream):
        assert e.code() == grpc.StatusCode.INTERNAL
        assert "server log" in e.details()
        assert "boom" not in e.details()


def test_an_error_about_a_field_names_it_in_a_bad_request_detail():
    error = errors.InvalidArgument("params.text: 'text' is a required property", field="params.text")
    unary, stream = asyncio.run(_call(error))
    for e in (unary, stream):
        (detail,) = rpc_status.from_call(e).details
        bad_request = error_details_pb2.BadRequest()
        assert detail.Unpack(bad_request)
        assert [(v.field, v.description) for v in bad_request.field_violations] == [("params.text", error.message)]
