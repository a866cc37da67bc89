"""What Envoy's transcoder would let through from an HTTP/JSON body
without a word: above all a field the request message does not have, which
it drops (its ``request_validation_options`` cover methods, query parameters
and path/body collisions only: envoyproxy/envoy#46623).

The edge asks the authorizer (:mod:`gridmesh.edge.authz`) about the body of
every JSON call before the transcoder reads it; :meth:`JsonBodies.violations`
finds the call's HTTP binding and walks the body against the request
message. Each of these is refused with 400 and a ``google.rpc.BadRequest``
naming it, at any depth:

- a key that names no field (by its proto or its JSON name);
- a field the path binds, sent again in a ``body: "*"`` body (the OpenAPI
  document leaves those out of the body too);
- an enum number the enum does not define (the transcoder keeps any int32);
- an object for a Timestamp, a Duration or a wrapper, which the proto3 JSON
  mapping writes as one value (``"1.5s"``) and the transcoder would read as
  the message's own fields (``{"seconds": 1}``, its unknown keys dropped).

Struct, Value, ListValue and Any take any JSON, as do map keys. What is no
JSON, or a value of another wrong type, is left to the transcoder, which
refuses it with its own 400.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any

from google.protobuf import descriptor_pb2

from gridmesh.edge.httprules import FREE_FORM, HTTP_BODY, STRING_TYPES, WRAPPERS, Binding, Field, Types, bindings

MAX_REPORTED = 10
"""Violations named in one refusal, at most (the walk stops there)."""


@dataclass(frozen=True)
class Violation:
    field: str
    """The field's path in the request message: ``task.colour``, ``requests[1].colour``."""
    description: str


class JsonBodies:
    """The JSON bodies the edge's HTTP bindings take, by request message."""

    def __init__(self, descriptor_set: bytes, also: Collection[str] = ()) -> None:
        """The bindings the edge routes and those of the services ``also`` names (the demo's)."""
        files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set)
        self._types = Types(files)
        self._bindings = [b for b in bindings(files, also) if b.rule.body]

    def violations(self, verb: str, path: str, body: bytes) -> list[Violation]:
        """What is wrong with the body of a call (its HTTP method, its path
        without the query) that the transcoder would let through: the fields
        its request message does not have, and well-known values written as
        objects."""
        binding = next((b for b in self._bindings if b.matches(verb, path)), None)
        if binding is None or not body.strip():
            return []
        try:
            value = json.loads(body)
        except (ValueError, RecursionError):
            return []  # the transcoder says what is wrong with it
        return list(itertools.islice(self._walk_body(binding, value), MAX_REPORTED))

    def _walk_body(self, binding: Binding, value: Any) -> Iterator[Violation]:
        request = binding.method.input_type
        if binding.rule.body == "*":
            bound = {v for v in binding.variables if "." not in v}
            yield from self._walk_message(request, value, "", bound=bound)
            return
        field = next(f for f in self._types.messages[request].field if f.name == binding.rule.body)
        yield from self._walk_field(field, value, field.name)

    def _walk_message(
        self, type_name: str, value: Any, prefix: str, bound: Collection[str] = ()
    ) -> Iterator[Violation]:
        if type_name in STRING_TYPES or type_name in WRAPPERS:
            if isinstance(value, dict):  # the transcoder would read it as the message's own fields
                kind = type_name.rpartition(".")[2]
                yield Violation(prefix.rstrip("."), f"{prefix.rstrip('.')}: a {kind} is one JSON value, not an object")
            return
        if type_name in FREE_FORM or type_name == HTTP_BODY:
            return
        if not isinstance(value, dict):
            return  # null is the default; any other value the transcoder refuses
        message = self._types.messages[type_name]
        by_name = {name: f for f in message.field for name in (f.name, f.json_name or f.name)}
        for key, item in value.items():
            path = f"{prefix}{key}"
            field = by_name.get(key)
            if field is None:
                yield Violation(path, f"{path}: unknown field ({type_name.lstrip('.')} has no field {key!r})")
            elif field.name in bound:
                yield Violation(path, f"{path}: the URL's path gives {field.name}; leave it out of the body")
            else:
                yield from self._walk_field(field, item, f"{prefix}{field.name}")

    def _walk_field(self, field: Field, value: Any, path: str) -> Iterator[Violation]:
        if field.type == Field.TYPE_ENUM:
            yield from self._enum_numbers(field, value, path)
            return
        if field.type != Field.TYPE_MESSAGE:
            return
        entry = self._types.map_entry(field)
        if entry is not None:
            if isinstance(value, dict):
                for key, item in value.items():
                    yield from self._walk_field(entry.field[1], item, f"{path}[{key!r}]")
            return
        if field.label == Field.LABEL_REPEATED:
            for index, item in enumerate(_flattened(value)):
                yield from self._walk_message(field.type_name, item, f"{path}[{index}].")
            return
        yield from self._walk_message(field.type_name, value, f"{path}.")

    def _enum_numbers(self, field: Field, value: Any, path: str) -> Iterator[Violation]:
        """An enum given by a number it does not define (the transcoder keeps
        any int32, as proto3's open enums do; an unknown name it refuses)."""
        enum = self._types.enums[field.type_name]
        repeated = field.label == Field.LABEL_REPEATED
        for index, item in enumerate(_flattened(value) if repeated else [value]):
            number = _number(item)
            if number is not None and all(v.number != number for v in enum.value):
                where = f"{path}[{index}]" if repeated else path
                names = ", ".join(v.name for v in enum.value)
                yield Violation(where, f"{where}: {number} is no {enum.name} (one of {names}, or its number)")


def _number(value: Any) -> int | None:
    """An integer given as a JSON number or as decimal text; None for anything else."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        return int(value)
    return None


_INTEGER = re.compile(r"[+-]?[0-9]+")


def _flattened(value: Any) -> Iterator[Any]:
    """The items of a repeated field as the transcoder reads them: a lone
    value is a list of one, and lists inside the list are flattened."""
    if isinstance(value, list):
        for item in value:
            yield from _flattened(item)
    elif value is not None:
        yield value
