"""Task types: what a task may be asked to do, and with which params.

A :class:`TaskType` names a plain function ``run(params) -> result`` that a
worker runs in one of its pool processes, with a JSON Schema that the
Scheduler enforces on submit. The built-ins live in
:mod:`gridmesh.core.builtin_tasks`; plugins add more through the entry-point
group ``gridmesh.task_types`` (each entry point names a ``TaskType``)::

    [project.entry-points."gridmesh.task_types"]
    resize = "my_pkg.tasks:RESIZE"
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import jsonschema

from gridmesh.common.errors import InvalidArgument, NotFound
from gridmesh.core.tasks import RetryPolicy

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "gridmesh.task_types"

TaskFunction = Callable[[dict[str, Any]], Any]


@dataclass(frozen=True)
class TaskType:
    name: str
    """The name clients submit, e.g. ``word_count``."""
    description: str
    """One line shown by ``ListTaskTypes``."""
    params_schema: Mapping[str, Any]
    """JSON Schema (draft 2020-12) the params must satisfy."""
    run: TaskFunction
    """Runs in a worker's pool process; returns a JSON-serialisable result."""
    run_timeout_s: float = 0.0
    """How long one attempt may run before its process is killed, unless a
    submit gives its own (0: no limit)."""
    retry: RetryPolicy | None = None
    """How a failed attempt is tried again, unless a submit gives its own
    (None: a task that raises fails at once)."""
    _validator: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        jsonschema.Draft202012Validator.check_schema(self.params_schema)
        object.__setattr__(self, "_validator", jsonschema.Draft202012Validator(self.params_schema))

    def check_params(self, params: Mapping[str, Any]) -> None:
        """Raise :class:`InvalidArgument` naming the offending param."""
        errors = sorted(self._validator.iter_errors(params), key=lambda e: (list(e.absolute_path), e.message))
        if not errors:
            return
        error = errors[0]
        path = [str(p) for p in error.absolute_path]
        if error.validator == "required" and isinstance(error.instance, Mapping):
            # Name the missing property itself, so a form can show the message next to it.
            path += [next(name for name in error.validator_value if name not in error.instance)]
        where = ".".join(["params", *path])
        hint = self.params_schema.get("description")
        message = f"{where}: {error.message} (task type {self.name!r}"
        message += f": {hint})" if hint else ")"
        raise InvalidArgument(message, field=where)


class TaskTypeRegistry:
    """The fixed, discoverable set of task types of one process."""

    def __init__(self, task_types: Iterable[TaskType] = ()) -> None:
        self._types: dict[str, TaskType] = {}
        for task_type in task_types:
            self.add(task_type)

    def add(self, task_type: TaskType) -> None:
        if task_type.name in self._types:
            raise ValueError(f"task type {task_type.name!r} is registered twice")
        self._types[task_type.name] = task_type

    def get(self, name: str) -> TaskType:
        try:
            return self._types[name]
        except KeyError:
            known = ", ".join(sorted(self._types))
            if not name:
                raise InvalidArgument(f"task_type is required; known types: {known}", field="task_type") from None
            raise InvalidArgument(f"task_type {name!r} is unknown; known types: {known}", field="task_type") from None

    def lookup(self, name: str) -> TaskType:
        """Like :meth:`get` but ``NotFound`` (for workers asked to run a type they lack)."""
        if name not in self._types:
            raise NotFound(f"task type {name!r} is not installed on this node")
        return self._types[name]

    def __iter__(self) -> Any:
        return iter(sorted(self._types.values(), key=lambda t: t.name))

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def names(self) -> list[str]:
        return sorted(self._types)

    def validate(self, name: str, params: Mapping[str, Any], max_bytes: int) -> TaskType:
        """Check a submit: known type, params within ``max_bytes`` and the schema."""
        task_type = self.get(name)
        size = len(json.dumps(params, separators=(",", ":")).encode())
        if size > max_bytes:
            raise InvalidArgument(f"params are {size} bytes; the limit is {max_bytes} bytes", field="params")
        task_type.check_params(params)
        return task_type


def default_registry(load_plugins: bool = True) -> TaskTypeRegistry:
    """The built-in task types plus every installed plugin."""
    from gridmesh.core.builtin_tasks import BUILTIN_TASK_TYPES

    registry = TaskTypeRegistry(BUILTIN_TASK_TYPES)
    if load_plugins:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                task_type = ep.load()
            except Exception:
                log.exception("task type plugin %s could not be loaded; skipped", ep.value)
                continue
            if not isinstance(task_type, TaskType):
                log.error("entry point %s is not a gridmesh TaskType; skipped", ep.value)
                continue
            registry.add(task_type)
    return registry
