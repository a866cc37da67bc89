"""Logging of every gridmesh process: plain text lines, or one JSON object
per line (``log_format = "json"``) for a log pipeline to index.

Each record carries the context it was logged in — ``task_id``,
``worker_id``, ``subscriber`` — set with :func:`log_context`
where the work is known (a context variable each: an asyncio task, or a
thread, sees its own), and, with tracing on, the ``trace_id`` of the span
it was logged in. A JSON line has them as fields when set; a text line
ends with them as ``key=value``.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime

from gridmesh.observability import tracing

__all__ = ["CONTEXT_FIELDS", "configure_logging", "log_context", "set_log_context"]

CONTEXT_FIELDS = ("task_id", "worker_id", "subscriber")
"""What :func:`log_context` sets."""
RECORD_FIELDS = (*CONTEXT_FIELDS, "trace_id")
"""What a record may carry besides its message."""

_context: dict[str, contextvars.ContextVar[str]] = {
    name: contextvars.ContextVar(f"gridmesh_log_{name}", default="") for name in CONTEXT_FIELDS
}


@contextlib.contextmanager
def log_context(**fields: str) -> Iterator[None]:
    """Records logged inside carry ``fields`` (names from :data:`CONTEXT_FIELDS`)."""
    tokens = [(_context[name], _context[name].set(value)) for name, value in fields.items()]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def set_log_context(**fields: str) -> None:
    """Like :func:`log_context`, for the rest of the current context (e.g. a
    process's ``worker_id``, or an asyncio task that handles one task)."""
    for name, value in fields.items():
        _context[name].set(value)


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in _context.items():
            if not getattr(record, name, ""):
                setattr(record, name, var.get())
        if not getattr(record, "trace_id", ""):
            record.trace_id = tracing.current_trace_id()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``ts`` (UTC, RFC 3339), ``level``,
    ``logger``, ``component``, ``pid``, ``msg``, the context fields that are set, and
    ``exc`` with the traceback when there is one."""

    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "component": self.component,
            "pid": record.process,
            "msg": record.getMessage(),
        }
        for name in RECORD_FIELDS:
            if value := getattr(record, name, ""):
                line[name] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        context = " ".join(f"{n}={v}" for n in RECORD_FIELDS if (v := getattr(record, n, "")))
        return f"{text} [{context}]" if context else text


def configure_logging(level: str, fmt: str = "text", component: str = "") -> None:
    """The root logger of this process, to stderr (``gridmesh up`` appends it
    to ``<state_dir>/log/<component>.log``)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter(component) if fmt == "json" else TextFormatter())
    handler.addFilter(_ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
