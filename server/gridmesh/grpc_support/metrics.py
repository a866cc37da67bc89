"""gRPC server metrics with the names of go-grpc-prometheus (which Grafana's
gRPC dashboards and most operators already know): calls started, and
messages received and sent, per service, method and type.

Messages are counted where each one passes anyway, in the method handler's
request deserializer and response serializer, so counting adds no wrapper
around stream iterators and no await to the message path. Every message
between two gridmesh processes has a gRPC server at one end, so the sum over
the mesh's processes counts each message once (``gridmesh bench`` reports it
per task).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc import aio
from prometheus_client import Counter

LABELS = ("grpc_service", "grpc_method", "grpc_type")

STARTED = Counter("grpc_server_started_total", "RPCs started on the server.", LABELS)
RECEIVED = Counter("grpc_server_msg_received_total", "RPC stream messages received on the server.", LABELS)
SENT = Counter("grpc_server_msg_sent_total", "RPC stream messages sent by the server.", LABELS)


def _rpc_type(handler: grpc.RpcMethodHandler) -> str:
    if handler.request_streaming:
        return "bidi_stream" if handler.response_streaming else "client_stream"
    return "server_stream" if handler.response_streaming else "unary"


def _counting(inner: Callable[[Any], Any] | None, count: Callable[[], None]) -> Callable[[Any], Any]:
    if inner is None:  # a generic handler: bytes pass unchanged

        def passthrough(message: Any) -> Any:
            count()
            return message

        return passthrough

    def counted(message: Any) -> Any:
        count()
        return inner(message)

    return counted


class MessageCountingInterceptor(aio.ServerInterceptor):
    """Counts calls and messages of every method this server implements."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        service, _, name = handler_call_details.method.lstrip("/").rpartition("/")
        labels = (service, name, _rpc_type(handler))
        STARTED.labels(*labels).inc()
        return handler._replace(
            request_deserializer=_counting(handler.request_deserializer, RECEIVED.labels(*labels).inc),
            response_serializer=_counting(handler.response_serializer, SENT.labels(*labels).inc),
        )
