"""Wrapping a server's method handlers: what an ``aio`` server interceptor
does when it needs the call's context (grpc's interceptor API hands it only
the method name and metadata, so it wraps the handler instead)."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc import aio

Behavior = Callable[..., Any]
Wrap = Callable[[Behavior, str], Behavior]
"""``(behavior, method) -> behavior``: ``behavior(request, context)`` returns
an awaitable (unary responses) or an async iterator (streamed responses)."""


def is_async(handler: grpc.RpcMethodHandler) -> bool:
    behavior = handler.unary_unary or handler.stream_unary or handler.unary_stream or handler.stream_stream
    return inspect.iscoroutinefunction(behavior) or inspect.isasyncgenfunction(behavior)


def rewrap(handler: grpc.RpcMethodHandler, method: str, unary: Wrap, responses: Wrap) -> grpc.RpcMethodHandler:
    """``handler`` with its behavior wrapped: by ``unary`` when it answers once,
    by ``responses`` when it streams its answers."""
    kw: dict[str, Any] = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary(handler.unary_unary, method), **kw)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary(handler.stream_unary, method), **kw)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(responses(handler.unary_stream, method), **kw)
    return grpc.stream_stream_rpc_method_handler(responses(handler.stream_stream, method), **kw)


Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]]


class WrappingInterceptor(aio.ServerInterceptor):
    """Wraps the behavior of each async handler: with :meth:`wrap_unary`
    when it answers once, :meth:`wrap_responses` when it streams. Generated
    base-class methods (sync) answer UNIMPLEMENTED themselves and pass as
    they are."""

    @staticmethod
    def wrap_unary(behavior: Behavior, method: str) -> Behavior:
        raise NotImplementedError

    @staticmethod
    def wrap_responses(behavior: Behavior, method: str) -> Behavior:
        raise NotImplementedError

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or not is_async(handler):
            return handler
        return rewrap(handler, handler_call_details.method, self.wrap_unary, self.wrap_responses)
