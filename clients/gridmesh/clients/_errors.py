"""The one error shape of the client library: a gRPC status's code name, its
message, and the field violations of its ``google.rpc.BadRequest`` detail.

The mesh sends that detail with every ``INVALID_ARGUMENT`` that concerns a
field (``params.text``, ``result_dir``, ...), in the standard
``grpc-status-details-bin`` trailer; :meth:`ClientError.from_rpc_error`
reads it, so callers need no grpcio-status.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

import grpc
from google.rpc import error_details_pb2, status_pb2

STATUS_DETAILS_KEY = "grpc-status-details-bin"
_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request: its path (``params.text``) and what is wrong."""

    field: str
    description: str


class ClientError(Exception):
    """A call to the mesh failed.

    ``code_name`` is the gRPC status code's name (``"NOT_FOUND"``,
    ``"INVALID_ARGUMENT"``, ``"UNAVAILABLE"``, ...) and ``message`` the
    server's explanation, shown to users as it is. ``violations`` names the
    request's bad fields when the server said which. When the error came from
    gRPC, the :class:`grpc.RpcError` is the exception's ``__cause__``.
    """

    def __init__(self, code_name: str, message: str, violations: tuple[FieldViolation, ...] = ()) -> None:
        super().__init__(f"{code_name}: {message}")
        self.code_name = code_name
        self.message = message
        self.violations = violations

    @property
    def field(self) -> str | None:
        """The first bad field's path, if the server named one."""
        return self.violations[0].field if self.violations else None

    @classmethod
    def from_status(cls, status: status_pb2.Status) -> Self:
        """The error a ``google.rpc.Status`` describes (e.g. one item of a batch)."""
        return cls(_CODE_NAMES.get(status.code, "UNKNOWN"), status.message, _violations(status))

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> Self:
        """The code, message and field violations of a failed call (``UNKNOWN`` if it has none)."""
        if not isinstance(error, grpc.Call):
            return cls("UNKNOWN", str(error) or "UNKNOWN")
        code = error.code()
        name = code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
        violations: tuple[FieldViolation, ...] = ()
        for key, value in error.trailing_metadata() or ():
            if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
                violations = _violations(status_pb2.Status.FromString(value))
        return cls(name, error.details() or name, violations)


def _violations(status: status_pb2.Status) -> tuple[FieldViolation, ...]:
    found: list[FieldViolation] = []
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            found.extend(FieldViolation(v.field, v.description) for v in bad_request.field_violations)
    return tuple(found)
