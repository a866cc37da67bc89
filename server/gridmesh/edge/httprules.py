"""The HTTP/JSON API as the descriptor set's ``google.api.http`` rules
define it, and as Envoy's transcoder routes it: which RPCs have a binding,
at which method and path template, with which body. The OpenAPI document
(:mod:`gridmesh.edge.openapi`) and the edge's check of JSON bodies
(:mod:`gridmesh.edge.jsonbody`) both read it from here.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2

from gridmesh.edge import envoy

Field = descriptor_pb2.FieldDescriptorProto

WRAPPERS: dict[str, int] = {
    ".google.protobuf.DoubleValue": Field.TYPE_DOUBLE,
    ".google.protobuf.FloatValue": Field.TYPE_FLOAT,
    ".google.protobuf.Int64Value": Field.TYPE_INT64,
    ".google.protobuf.UInt64Value": Field.TYPE_UINT64,
    ".google.protobuf.Int32Value": Field.TYPE_INT32,
    ".google.protobuf.UInt32Value": Field.TYPE_UINT32,
    ".google.protobuf.BoolValue": Field.TYPE_BOOL,
    ".google.protobuf.StringValue": Field.TYPE_STRING,
    ".google.protobuf.BytesValue": Field.TYPE_BYTES,
}
STRING_TYPES = {".google.protobuf.Timestamp", ".google.protobuf.Duration", ".google.protobuf.FieldMask"}
"""Well-known messages written as one JSON string (so also one query parameter)."""
FREE_FORM = {".google.protobuf.Struct", ".google.protobuf.Value", ".google.protobuf.ListValue", ".google.protobuf.Any"}
"""Well-known messages whose JSON is any object (or value) the caller likes."""
HTTP_BODY = ".google.api.HttpBody"


def routed(service: str, method: str) -> bool:
    """Whether Envoy routes this RPC of the public API (see :mod:`gridmesh.edge.envoy`)."""
    if service not in envoy.TRANSCODED_SERVICES:
        return False
    return service != "gridmesh.v1.StoreKeeper" or method in envoy.PUBLIC_STOREKEEPER


class Types:
    """Every message and enum of a descriptor set, by full name (``.pkg.Name``)."""

    def __init__(self, files: descriptor_pb2.FileDescriptorSet) -> None:
        self.messages: dict[str, descriptor_pb2.DescriptorProto] = {}
        self.enums: dict[str, descriptor_pb2.EnumDescriptorProto] = {}
        for file in files.file:
            prefix = f".{file.package}" if file.package else ""
            for enum in file.enum_type:
                self.enums[f"{prefix}.{enum.name}"] = enum
            for message in file.message_type:
                self._add(prefix, message)

    def _add(self, prefix: str, message: descriptor_pb2.DescriptorProto) -> None:
        name = f"{prefix}.{message.name}"
        self.messages[name] = message
        for enum in message.enum_type:
            self.enums[f"{name}.{enum.name}"] = enum
        for nested in message.nested_type:
            self._add(name, nested)

    def map_entry(self, field: Field) -> descriptor_pb2.DescriptorProto | None:
        """The key/value entry of a map field; None for any other field."""
        if field.type != Field.TYPE_MESSAGE or field.label != Field.LABEL_REPEATED:
            return None
        entry = self.messages[field.type_name]
        return entry if entry.options.map_entry else None


@dataclass(frozen=True)
class Binding:
    """One HTTP binding of an RPC: its rule or one of its ``additional_bindings``."""

    service: str
    """The service's full name, ``gridmesh.v1.Scheduler``."""
    method: descriptor_pb2.MethodDescriptorProto
    rule: http_pb2.HttpRule
    index: int
    """0 for the method's rule, n for its n-th additional binding."""
    verb: str
    """The HTTP method, lower case."""
    path: str
    """The path template as OpenAPI writes it: ``/v1/tasks/{task_id}:cancel``."""
    variables: tuple[str, ...]
    """The fields the path binds, in order."""

    @functools.cached_property
    def pattern(self) -> re.Pattern[str]:
        """The path template as a regular expression. A variable is one
        segment without a colon: the transcoder takes the text after the last
        segment's colon for the custom verb (``:cancel``) before it matches
        variables."""
        return re.compile("[^/:]+".join(re.escape(literal) for literal in _VARIABLE.split(self.path)))

    def matches(self, verb: str, path: str) -> bool:
        """Whether a request (its method, its path without the query) is this binding's."""
        return verb.lower() == self.verb and self.pattern.fullmatch(path) is not None


def bindings(files: descriptor_pb2.FileDescriptorSet, also: Collection[str] = ()) -> Iterator[Binding]:
    """The bindings of the RPCs the edge routes (:func:`routed`) and of every
    RPC of the services ``also`` names, in the order of the descriptor set."""
    for file in files.file:
        for service in file.service:
            full = f"{file.package}.{service.name}"
            for method in service.method:
                if not method.options.HasExtension(annotations_pb2.http):
                    continue
                if not (routed(full, method.name) or full in also):
                    continue
                rule = method.options.Extensions[annotations_pb2.http]
                for index, one in enumerate((rule, *rule.additional_bindings)):
                    kind = one.WhichOneof("pattern")
                    template = one.custom.path if kind == "custom" else getattr(one, kind or "get")
                    verb = (one.custom.kind if kind == "custom" else kind or "get").lower()
                    path, variables = _template_path(template)
                    yield Binding(full, method, one, index, verb, path, tuple(variables))


def _template_path(template: str) -> tuple[str, list[str]]:
    """The OpenAPI path of an HTTP rule's template, and its variables
    (``{name}`` or ``{name=*}``: one path segment)."""
    variables: list[str] = []
    out = []
    rest = template
    while "{" in rest:
        before, _, after = rest.partition("{")
        inner, _, rest = after.partition("}")
        name, _, pattern = inner.partition("=")
        if pattern not in ("", "*"):
            raise ValueError(f"path template {template!r}: only one-segment variables are mapped, not {inner!r}")
        variables.append(name)
        out.append(f"{before}{{{name}}}")
    return "".join(out) + rest, variables


_VARIABLE = re.compile(r"\{[^}]*\}")
