"""The one place where gridmesh errors become gRPC status codes.

:class:`ErrorMappingInterceptor` wraps every handler of a server: a
:class:`~gridmesh.common.errors.GridmeshError` aborts the call with the code of
:data:`STATUS_CODES` and its message; any other exception is logged with its
traceback and answered ``INTERNAL`` with a message naming the log, so no bare
exception reaches a client as ``UNKNOWN``. Envoy's ``grpc_json_transcoder``
turns these codes into HTTP statuses (INVALID_ARGUMENT 400, NOT_FOUND 404,
FAILED_PRECONDITION 400, ALREADY_EXISTS 409, UNAVAILABLE 503, ...).

An error about one request field also carries a ``google.rpc.BadRequest``
field violation in the status details (AIP-193), so a form can show the
message next to the field it concerns; over HTTP/JSON it arrives as
``details[].fieldViolations[].field``.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc import aio
from grpc_status import rpc_status

from gridmesh.common import errors
from gridmesh.grpc_support.handlers import WrappingInterceptor

log = logging.getLogger(__name__)

STATUS_CODES: dict[type[errors.GridmeshError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.ConfigError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.OutOfRange: grpc.StatusCode.OUT_OF_RANGE,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.Internal: grpc.StatusCode.INTERNAL,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
}


def status_code(error: errors.GridmeshError) -> grpc.StatusCode:
    """The gRPC code of ``error`` (its nearest mapped base class)."""
    for cls in type(error).__mro__:
        if cls in STATUS_CODES:
            return STATUS_CODES[cls]
    return grpc.StatusCode.INTERNAL


def error_of(code: int, message: str) -> errors.GridmeshError:
    """The gridmesh error a peer's answer code stands for (the inverse of
    :func:`status_code`; a code without its own class is :class:`Internal`)."""
    for cls, status in STATUS_CODES.items():
        if status.value[0] == code and cls is not errors.ConfigError:
            return cls(message)
    return errors.Internal(message)


def status_proto(error: errors.GridmeshError) -> status_pb2.Status:
    """``error`` as a ``google.rpc.Status``, with a field violation if it names
    a field: what a call would have failed with, as a value (the per-item
    answers of a batch carry it)."""
    status = status_pb2.Status(code=status_code(error).value[0], message=error.message)
    if error.field is not None:
        violation = error_details_pb2.BadRequest.FieldViolation(field=error.field, description=error.message)
        status.details.add().Pack(error_details_pb2.BadRequest(field_violations=[violation]))
    return status


def status_details(error: errors.GridmeshError) -> tuple[tuple[str, bytes], ...]:
    """Trailing metadata carrying the field ``error`` concerns, if it names one."""
    if error.field is None:
        return ()
    return tuple(rpc_status.to_status(status_proto(error)).trailing_metadata)


async def _abort(context: aio.ServicerContext, exc: BaseException, method: str) -> None:
    if isinstance(exc, errors.GridmeshError):
        await context.abort(status_code(exc), exc.message, status_details(exc))
    log.exception("unexpected error in %s", method, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method}; the server log has the details")


def _wrap_unary(behavior: Callable[..., Awaitable[Any]], method: str) -> Callable[..., Awaitable[Any]]:
    async def handler(request: Any, context: aio.ServicerContext) -> Any:
        try:
            return await behavior(request, context)
        except aio.AbortError:
            raise
        except Exception as exc:
            await _abort(context, exc, method)

    return handler


def _wrap_stream(behavior: Callable[..., AsyncIterator[Any]], method: str) -> Callable[..., AsyncIterator[Any]]:
    async def handler(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            async for response in behavior(request, context):
                yield response
        except aio.AbortError:
            raise
        except Exception as exc:
            await _abort(context, exc, method)

    return handler


def _wrap_responses(behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
    """A response-streaming handler is either an async generator or a
    coroutine that writes with ``context.write`` (as grpc's own health
    ``Watch`` does)."""
    return _wrap_stream(behavior, method) if inspect.isasyncgenfunction(behavior) else _wrap_unary(behavior, method)


class ErrorMappingInterceptor(WrappingInterceptor):
    """Maps exceptions raised by handlers to gRPC statuses (see module doc)."""

    wrap_unary = staticmethod(_wrap_unary)
    wrap_responses = staticmethod(_wrap_responses)
