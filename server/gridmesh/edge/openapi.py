"""The edge's HTTP/JSON API as an OpenAPI 3.1 document, generated from the
``google.api.http`` annotations of the descriptor set the edge's
``grpc_json_transcoder`` is configured with (nothing in it is written by hand).

It describes what the transcoder does, as checked against a live edge:

- every annotated method of the services Envoy routes (:data:`envoy.TRANSCODED_SERVICES`;
  of the StoreKeeper only :data:`envoy.PUBLIC_STOREKEEPER`) is one operation,
  its ``operationId`` the gRPC method's name;
- ``{field}`` in the path template is a path parameter; with ``body: "*"`` the
  request body is the request message without the path's fields, with
  ``body: "field"`` it is that field; every other field of a message with no
  ``*`` body is a query parameter (scalars, enums, repeated scalars, and the
  well-known types written as one string such as Timestamp; a nested message's
  fields as ``outer.inner``);
- responses are what the transcoder prints: proto field names,
  every field without presence (``always_print_primitive_fields``), 64-bit
  integers as strings, enums by name, Timestamp as RFC 3339, Duration as
  ``"1.5s"``, Struct as an object, Value as any JSON value, Empty as ``{}``;
  an ``HttpBody`` answer is its raw bytes with its own content type; a
  server stream is newline-delimited JSON, one message a line (Envoy labels
  it ``application/json``; the operation carries ``x-newline-delimited: true``);
- request bodies are what its JSON parser accepts (the proto3 JSON mapping):
  either name of a field (``task_type`` or ``taskType``), ``null`` for any field,
  integers as numbers or decimal strings, enums by name or number, booleans
  also as ``"true"``/``"1"``..., a lone value for a repeated field (and lists
  in its list, flattened); a field the message does not have is refused
  with 400 naming it, by the edge before the transcoder would drop it
  (:mod:`gridmesh.edge.jsonbody`), so no request schema allows additional
  properties (but Struct, Value and Any, which hold any JSON);
- every error is ``{"code", "message", "details"}`` (``code`` a google.rpc.Code),
  under the HTTP status Envoy maps the gRPC code to.

Comments are not in the descriptor set (it has no SourceCodeInfo), so the
operations carry no prose of their own.
"""

from __future__ import annotations

import importlib.metadata
import json
import urllib.parse
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from google.api import http_pb2
from google.protobuf import descriptor_pb2
from google.rpc import code_pb2

from gridmesh.edge import envoy
from gridmesh.edge.httprules import HTTP_BODY, STRING_TYPES, WRAPPERS, Binding, Field, Types, bindings

Schema = dict[str, Any]

OPENAPI_VERSION = "3.1.0"
SCHEMAS = "#/components/schemas/"
INPUT = "-input"
"""Suffix of the schema of a message or enum as a request carries it (the
lenient JSON the transcoder reads); the plain name is how responses print it."""
ERROR_SCHEMA = "Error"
SECURITY_SCHEME = "bearer"

_INT_STRING = r"^[+-]?[0-9]+$"
_FLOAT_STRING = (
    r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"
    r"|^[+-]?0[xX]([0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)([pP][+-]?[0-9]+)?$"
    r"|^(NaN|-?Infinity)$"
)
"""Decimal (and C hexadecimal) floating-point text, NaN and ±Infinity: what
the transcoder takes for a double or float given as a string."""
_BOOL_STRING = r"^([Tt]([Rr][Uu][Ee])?|[Yy]([Ee][Ss])?|1|[Ff]([Aa][Ll][Ss][Ee])?|[Nn][Oo]?|0)$"
"""The words the transcoder reads as a boolean from a query parameter or a
JSON string (absl's SimpleAtob: true/t/yes/y/1, false/f/no/n/0, any case)."""
_DURATION_OUT = r"^-?[0-9]+(\.[0-9]+)?s$"
_DURATION_IN = r"^[+-]?[0-9]+(\.[0-9]*)?s$"

_INT_RANGES: dict[int, tuple[int, int, str]] = {
    Field.TYPE_INT32: (-(2**31), 2**31 - 1, "int32"),
    Field.TYPE_SINT32: (-(2**31), 2**31 - 1, "int32"),
    Field.TYPE_SFIXED32: (-(2**31), 2**31 - 1, "int32"),
    Field.TYPE_UINT32: (0, 2**32 - 1, "uint32"),
    Field.TYPE_FIXED32: (0, 2**32 - 1, "uint32"),
    Field.TYPE_INT64: (-(2**63), 2**63 - 1, "int64"),
    Field.TYPE_SINT64: (-(2**63), 2**63 - 1, "int64"),
    Field.TYPE_SFIXED64: (-(2**63), 2**63 - 1, "int64"),
    Field.TYPE_UINT64: (0, 2**64 - 1, "uint64"),
    Field.TYPE_FIXED64: (0, 2**64 - 1, "uint64"),
}
_64_BIT = {"int64", "uint64"}
_FLOATS: dict[int, str] = {Field.TYPE_DOUBLE: "double", Field.TYPE_FLOAT: "float"}


_HTTP_STATUS: dict[int, int] = {
    code_pb2.CANCELLED: 499,
    code_pb2.UNKNOWN: 500,
    code_pb2.INVALID_ARGUMENT: 400,
    code_pb2.DEADLINE_EXCEEDED: 504,
    code_pb2.NOT_FOUND: 404,
    code_pb2.ALREADY_EXISTS: 409,
    code_pb2.PERMISSION_DENIED: 403,
    code_pb2.RESOURCE_EXHAUSTED: 429,
    code_pb2.FAILED_PRECONDITION: 400,
    code_pb2.ABORTED: 409,
    code_pb2.OUT_OF_RANGE: 400,
    code_pb2.UNIMPLEMENTED: 501,
    code_pb2.INTERNAL: 500,
    code_pb2.UNAVAILABLE: 503,
    code_pb2.DATA_LOSS: 500,
    code_pb2.UNAUTHENTICATED: 401,
}
"""The HTTP status Envoy answers a gRPC error code with (``convert_grpc_status``)."""
_EDGE_WHY: dict[int, str] = {
    400: "a request the transcoder cannot read (malformed JSON, a value of the wrong type, an unknown query "
    "parameter), or a JSON body field the request message does not have (its details name it)",
    401: "no API key, or a malformed, unknown or revoked one",
    404: "no API route matches the method and path",
    413: f"a request body over the edge's limit of {envoy.MAX_JSON_BODY_BYTES} bytes",
    500: "Envoy's own failure",
    502: "the service's answer could not be read",
    503: "no healthy backend, or the authorizer did not answer",
    504: "the backend did not answer in time",
}
_EDGE_STATUS: dict[int, tuple[int, str]] = {
    status: (code, _EDGE_WHY[status])
    for status, code in {
        **envoy.LOCAL_REPLY_CODES,
        401: code_pb2.UNAUTHENTICATED,
        404: code_pb2.NOT_FOUND,
        413: code_pb2.RESOURCE_EXHAUSTED,
    }.items()
}
"""What Envoy itself answers (the code, in the same JSON shape), besides the services' errors."""


def _has_presence(field: Field) -> bool:
    """Fields the transcoder leaves out when unset; it prints every other one."""
    return (field.label != Field.LABEL_REPEATED and field.type == Field.TYPE_MESSAGE) or field.HasField("oneof_index")


def _nullable(schema: Schema) -> Schema:
    """``schema`` or JSON null (the parser takes null for any field: its default)."""
    kind = schema.get("type")
    if isinstance(kind, str) and set(schema) <= {"type", "format", "pattern", "contentEncoding"}:
        return {**schema, "type": [kind, "null"]}
    if "anyOf" in schema:
        return {"anyOf": [*schema["anyOf"], {"type": "null"}]}
    return {"anyOf": [schema, {"type": "null"}]}


class _Builder:
    def __init__(self, types: Types) -> None:
        self.types = types
        self.schemas: dict[str, Schema] = {}

    # -- schemas ---------------------------------------------------------

    def ref(self, type_name: str, *, input: bool) -> Schema:
        """A reference to the schema of a message or enum (made on first use)."""
        name = type_name.lstrip(".") + (INPUT if input else "")
        if name not in self.schemas:
            self.schemas[name] = {}  # a placeholder: messages may refer to themselves
            if type_name in self.types.enums:
                self.schemas[name] = self._enum(self.types.enums[type_name], input=input)
            else:
                self.schemas[name] = self._message(type_name, input=input)
        return {"$ref": SCHEMAS + name}

    def _enum(self, enum: descriptor_pb2.EnumDescriptorProto, *, input: bool) -> Schema:
        names = [value.name for value in enum.value]
        if not input:
            return {"type": "string", "enum": names}
        numbers = sorted({value.number for value in enum.value})
        by_number = {"type": "integer", "enum": numbers}
        return {"anyOf": [{"type": "string", "enum": names}, by_number, _number_text(numbers)]}

    def _message(self, type_name: str, *, input: bool) -> Schema:
        message = self.types.messages[type_name]
        properties: dict[str, Schema] = {}
        required: list[str] = []
        for field in message.field:
            schema = self.field(field, input=input)
            properties[field.name] = schema
            if input and field.json_name and field.json_name != field.name:
                properties[field.json_name] = schema  # the parser takes either name
            if not input and not _has_presence(field):
                required.append(field.name)
        schema = {"type": "object", "properties": properties}
        if input:
            schema["additionalProperties"] = False  # the edge refuses a field the message lacks (jsonbody)
        if required:
            schema["required"] = required
        return schema

    def field(self, field: Field, *, input: bool) -> Schema:
        """A field's value as the transcoder prints it (``input``: as it reads it)."""
        entry = self.types.map_entry(field)
        if entry is not None:
            key, value = entry.field
            keys = {"propertyNames": self.scalar(key, input=False)} if key.type != Field.TYPE_STRING else {}
            mapped: Schema = {"type": "object", "additionalProperties": self.field(value, input=input), **keys}
            return _nullable(mapped) if input else mapped
        single = self.singular(field, input=input)
        if field.label != Field.LABEL_REPEATED:
            return single
        if not input:
            return {"type": "array", "items": single}
        # A lone value stands for a list of one, null (or a null item) for none,
        # and a list in the list for its items (the parser flattens them).
        items = {"anyOf": [*_alternatives(single), {"type": "array"}]} if single != {} else single
        return {"anyOf": [{"type": "array", "items": items}, *_alternatives(single)]}

    def singular(self, field: Field, *, input: bool) -> Schema:
        schema = self.scalar(field, input=input)
        return _nullable(schema) if input and schema != {} else schema

    def scalar(self, field: Field, *, input: bool) -> Schema:
        if field.type == Field.TYPE_ENUM:
            return self.ref(field.type_name, input=input)
        if field.type in (Field.TYPE_MESSAGE, Field.TYPE_GROUP):
            return self.message_value(field.type_name, input=input)
        return _primitive(field.type, input=input)

    def message_value(self, type_name: str, *, input: bool) -> Schema:
        if type_name in WRAPPERS:
            return _primitive(WRAPPERS[type_name], input=input)
        if type_name == ".google.protobuf.Timestamp":
            return {"type": "string", "format": "date-time"}
        if type_name == ".google.protobuf.Duration":
            return {"type": "string", "pattern": _DURATION_IN if input else _DURATION_OUT}
        if type_name == ".google.protobuf.FieldMask":
            return {"type": "string"}
        if type_name == ".google.protobuf.Struct":
            return {"type": "object"}
        if type_name == ".google.protobuf.Empty":
            return {"type": "object", **({"additionalProperties": False} if input else {})}
        if type_name == ".google.protobuf.ListValue":
            return {"type": "array"}
        if type_name == ".google.protobuf.Value":
            return {}
        if type_name == ".google.protobuf.Any":
            return {"type": "object", "properties": {"@type": {"type": "string"}}, "required": ["@type"]}
        return self.ref(type_name, input=input)

    # -- operations ------------------------------------------------------

    def query_parameters(self, type_name: str, skip: set[str], prefix: str = "", depth: int = 0) -> Iterator[Schema]:
        """The request fields a URL's query carries (``outer.inner`` for a nested message's)."""
        for field in self.types.messages[type_name].field:
            name = prefix + field.name
            if name in skip or self.types.map_entry(field) is not None:
                continue
            is_message = field.type == Field.TYPE_MESSAGE and field.type_name not in (*WRAPPERS, *STRING_TYPES)
            if is_message:
                if field.label != Field.LABEL_REPEATED and depth < 3 and not field.type_name.startswith(".google."):
                    yield from self.query_parameters(field.type_name, skip, f"{name}.", depth + 1)
                continue
            schema = self.scalar(field, input=True)
            if field.label == Field.LABEL_REPEATED:
                yield {"name": name, "in": "query", "schema": {"type": "array", "items": schema}, "explode": True}
            else:
                yield {"name": name, "in": "query", "schema": schema}

    def operation(self, binding: Binding) -> Schema:
        """The OpenAPI operation of an HTTP binding of a method."""
        method, rule, variables = binding.method, binding.rule, binding.variables
        request = self.types.messages[method.input_type]
        fields = {field.name: field for field in request.field}
        parameters: list[Schema] = []
        for variable in variables:
            field = self._path_field(method.input_type, variable)
            parameters.append(
                {"name": variable, "in": "path", "required": True, "schema": self.scalar(field, input=True)}
            )
        operation: Schema = {
            "operationId": method.name + (f"_{binding.index}" if binding.index else ""),
            "tags": [binding.service.rpartition(".")[2]],
            "x-grpc-method": f"/{binding.service}/{method.name}",
        }
        bound = set(variables)
        if rule.body == "*":
            top = {variable for variable in variables if "." not in variable}
            body = self._without(method.input_type, top) if top else self.ref(method.input_type, input=True)
            operation["requestBody"] = _json_body(body)
        else:
            if rule.body:
                operation["requestBody"] = _json_body(self.field(fields[rule.body], input=True))
                bound.add(rule.body)
            parameters += self.query_parameters(method.input_type, bound)
        if parameters:
            operation["parameters"] = parameters
        operation["responses"] = {"200": self._answer(method, rule), **_error_responses()}
        return operation

    def _path_field(self, type_name: str, variable: str) -> Field:
        *outer, last = variable.split(".")
        for name in outer:
            type_name = next(f for f in self.types.messages[type_name].field if f.name == name).type_name
        return next(f for f in self.types.messages[type_name].field if f.name == last)

    def _without(self, type_name: str, names: set[str]) -> Schema:
        """A request message's input schema without the fields its path binds."""
        full = self._message(type_name, input=True)
        dropped = names | {f.json_name for f in self.types.messages[type_name].field if f.name in names}
        return {**full, "properties": {k: v for k, v in full["properties"].items() if k not in dropped}}

    def _answer(self, method: descriptor_pb2.MethodDescriptorProto, rule: http_pb2.HttpRule) -> Schema:
        output = method.output_type
        if output == HTTP_BODY:
            return {
                "description": "The bytes as they are, with their own content type"
                + (" (streamed in chunks)" if method.server_streaming else ""),
                "content": {"*/*": {"schema": {}}},
            }
        if rule.response_body:
            field = next(f for f in self.types.messages[output].field if f.name == rule.response_body)
            schema = self.field(field, input=False)
        else:
            schema = self.message_value(output, input=False)
        if method.server_streaming:
            return {
                "description": "A stream: newline-delimited JSON, one message of this schema a line, as they "
                "come; it ends when the call does (an error after the first message ends it early: over "
                "HTTP/2 the grpc-status trailer tells)",
                "content": {"application/json": {"schema": schema}},
                "x-newline-delimited": True,
            }
        return {"description": "OK", "content": {"application/json": {"schema": schema}}}


def _primitive(kind: int, *, input: bool) -> Schema:
    if kind in _INT_RANGES:
        low, high, name = _INT_RANGES[kind]
        if not input and name in _64_BIT:
            return {"type": "string", "format": name, "pattern": r"^-?[0-9]+$" if low else r"^[0-9]+$"}
        number: Schema = {"type": "integer", "format": name, "minimum": low, "maximum": high}
        if input and name in _64_BIT:
            # A JSON number past int64 is read as a double: below -2^63 by up to 1024 it rounds into range.
            number = {"type": "integer", "minimum": low - 1024 if low else low, "maximum": high}
        return {"anyOf": [number, {"type": "string", "pattern": _INT_STRING}]} if input else number
    if kind in _FLOATS:
        number = {"type": "number", "format": _FLOATS[kind]}
        text = {"type": "string", "pattern": _FLOAT_STRING} if input else {"enum": ["NaN", "Infinity", "-Infinity"]}
        return {"anyOf": [number, text]}
    if kind == Field.TYPE_BOOL:
        boolean: Schema = {"type": "boolean"}
        return {"anyOf": [boolean, {"type": "string", "pattern": _BOOL_STRING}]} if input else boolean
    if kind == Field.TYPE_BYTES:
        return {"type": "string", "contentEncoding": "base64"}
    return {"type": "string"}


def _number_text(numbers: list[int]) -> Schema:
    """An enum's numbers as decimal text (``"3"``, ``"+03"``)."""
    positive = "|".join(str(n) for n in numbers if n >= 0)
    negative = "|".join(str(-n) for n in numbers if n <= 0)
    options = [f"\\+?0*({positive})" if positive else "", f"-0*({negative})" if negative else ""]
    return {"type": "string", "pattern": "^(" + "|".join(o for o in options if o) + ")$"}


def _alternatives(schema: Schema) -> list[Schema]:
    return list(schema["anyOf"]) if set(schema) == {"anyOf"} else [schema]


def _json_body(schema: Schema) -> Schema:
    # Not required: no body is the empty message.
    return {"required": False, "content": {"application/json": {"schema": schema}}}


def error_code_statuses() -> dict[int, set[int]]:
    """Each HTTP status an error comes with, and the google.rpc codes its body may carry."""
    statuses: dict[int, set[int]] = defaultdict(set)
    for code, status in _HTTP_STATUS.items():
        statuses[status].add(code)
    for status, (code, _) in _EDGE_STATUS.items():
        statuses[status].add(code)
    return dict(sorted(statuses.items()))


def _error_responses() -> dict[str, Schema]:
    return {str(status): {"$ref": f"#/components/responses/{status}"} for status in error_code_statuses()}


def _error_components() -> dict[str, Schema]:
    responses = {}
    for status in error_code_statuses():
        codes = [code_pb2.Code.Name(code) for code, http in _HTTP_STATUS.items() if http == status]
        parts = [", ".join(codes)] if codes else []
        if status in _EDGE_STATUS:
            code, why = _EDGE_STATUS[status]
            parts.append(f"the edge's own {code_pb2.Code.Name(code)}: {why}")
        responses[str(status)] = {
            "description": "; or ".join(parts),
            "content": {"application/json": {"schema": {"$ref": SCHEMAS + ERROR_SCHEMA}}},
        }
    return responses


ERROR = {
    "type": "object",
    "required": ["code", "message", "details"],
    "properties": {
        "code": {"type": "integer", "description": "a google.rpc.Code"},
        "message": {"type": "string"},
        "details": {
            "type": "array",
            "items": {"type": "object", "properties": {"@type": {"type": "string"}}, "required": ["@type"]},
            "description": "google.protobuf.Any messages, e.g. a google.rpc.BadRequest naming the field",
        },
    },
}


def _extra_paths() -> dict[str, Schema]:
    """The two public documents Envoy serves itself."""
    errors = {"404": {"$ref": "#/components/responses/404"}}
    return {
        envoy.OPENAPI_PATH: {
            "get": {
                "operationId": "GetOpenApi",
                "tags": ["Edge"],
                "security": [],
                "responses": {
                    "200": {"description": "This document", "content": {"application/json": {"schema": {}}}},
                    **errors,
                },
            }
        },
        envoy.CA_PATH: {
            "get": {
                "operationId": "GetCaCertificate",
                "tags": ["Edge"],
                "security": [],
                "description": "The mesh's CA certificate (PEM), with tls.enabled; 404 without",
                "responses": {
                    "200": {"description": "PEM", "content": {"application/x-pem-file": {"schema": {}}}},
                    **errors,
                },
            }
        },
    }


def build_openapi(descriptor_set: bytes, server_url: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the edge at ``server_url`` (``https://host:port``),
    from a serialized FileDescriptorSet with its imports
    (:func:`gridmesh.edge.envoy.descriptor_set_path`)."""
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set)
    builder = _Builder(Types(files))
    paths: dict[str, dict[str, Schema]] = {}
    tags = []
    for binding in bindings(files):
        if binding.verb in paths.setdefault(binding.path, {}):
            raise ValueError(f"{binding.verb.upper()} {binding.path}: mapped by two methods")
        paths[binding.path][binding.verb] = builder.operation(binding)
        if (tag := binding.service.rpartition(".")[2]) not in tags:
            tags.append(tag)
    paths.update(_extra_paths())
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "gridmesh",
            "version": importlib.metadata.version("gridmesh"),
            "description": "The HTTP/JSON API of the mesh's edge (Envoy's gRPC-JSON transcoder), generated from "
            "the google.api.http annotations of its descriptor set. Every call but the edge's own documents "
            "needs an API key. A JSON body field the request message does not have is refused (400, naming it).",
        },
        "servers": [{"url": _server(server_url)}],
        "security": [{SECURITY_SCHEME: []}],
        "tags": [{"name": name} for name in [*tags, "Edge"]],
        "paths": paths,
        "components": {
            "securitySchemes": {
                SECURITY_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key (gmk_<id>_<secret>): `gridmesh keys create`, or the admin key "
                    "`gridmesh up` wrote",
                }
            },
            "schemas": {ERROR_SCHEMA: ERROR, **dict(sorted(builder.schemas.items()))},
            "responses": _error_components(),
        },
    }


def _server(url: str) -> str:
    """``url``, or ``/`` (where the document was read from) when the edge
    binds every address: ``https://0.0.0.0:8080`` reaches nothing from
    another machine."""
    return "/" if urllib.parse.urlsplit(url).hostname in ("0.0.0.0", "::") else url


def render_openapi(descriptor_set: bytes, server_url: str) -> str:
    """:func:`build_openapi` as the JSON text the edge serves."""
    return json.dumps(build_openapi(descriptor_set, server_url), separators=(",", ":"))
