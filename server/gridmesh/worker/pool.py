"""A pool of task processes: each task runs in exactly one OS process.

Each :class:`Slot` owns one long-lived child process (started from a
forkserver, so the node's gRPC threads are never forked) and talks to it over
a pipe. :meth:`Slot.run` awaits the child's answer or its death: a dead
child (crash, ``kill -9``, OOM) is seen at once as EOF on the pipe, reported
as a crash, and replaced by a fresh process for the next task.
A crash therefore kills one task only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from dataclasses import dataclass
from typing import Any

from gridmesh.config import TracingConfig

log = logging.getLogger(__name__)

_CONTEXT = multiprocessing.get_context("forkserver")
TRACEPARENT_VAR = "TRACEPARENT"
_PRELOAD = ["gridmesh.core.builtin_tasks", "gridmesh.core.tasktypes", "json"]


@dataclass(frozen=True)
class SlotResult:
    kind: str
    """``ok`` (payload = the result as JSON bytes), ``error`` (payload = the
    error text), ``crash`` (the process died; payload = why) or ``stopped``
    (killed on purpose by :meth:`Slot.kill`)."""
    payload: bytes
    pid: int


def _child_main(conn: multiprocessing.connection.Connection, traced: TracingConfig | None) -> None:
    """The task process: run (task_type, params, traceparent) requests until the pipe closes.

    Traced, each task is a span of its trace, and ``$TRACEPARENT`` names it
    while the task runs, for whatever the task starts to continue (the
    environment carrier of OpenTelemetry's specification)."""
    from gridmesh.core.tasktypes import default_registry
    from gridmesh.observability import tracing

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the node decides when tasks stop
    if traced is not None:
        tracing.configure(traced, "task")
    registry = default_registry()
    while True:
        try:
            task_type, params, trace_parent = conn.recv()
        except (EOFError, OSError):
            return
        with tracing.span(f"execute {task_type}", parent=trace_parent) as span:
            if span:
                os.environ[TRACEPARENT_VAR] = span
            try:
                result = registry.lookup(task_type).run(params)
                answer = ("ok", json.dumps(result, separators=(",", ":")).encode())
            except Exception as e:
                answer = ("error", f"{type(e).__name__}: {e}".encode())
            finally:
                os.environ.pop(TRACEPARENT_VAR, None)
        conn.send(answer)


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "the task process died"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"the task process was killed by {name}"
    return f"the task process exited with status {code}"


class Slot:
    """One task process and its pipe. Not thread-safe: one task at a time."""

    def __init__(self, index: int, tracing: TracingConfig | None = None) -> None:
        self.index = index
        self._tracing = tracing
        self._process: Any = None
        self._conn: multiprocessing.connection.Connection | None = None
        self._stopping = False
        self._lock = threading.Lock()
        self._spawn()

    def _spawn(self) -> None:
        parent, child = _CONTEXT.Pipe()
        process = _CONTEXT.Process(
            target=_child_main, args=(child, self._tracing), name=f"gridmesh-task-{self.index}", daemon=True
        )
        process.start()
        child.close()
        with self._lock:
            self._process, self._conn = process, parent

    @property
    def pid(self) -> int:
        return int(self._process.pid) if self._process is not None else 0

    async def run(self, task_type: str, params: dict[str, Any], trace_parent: str = "") -> SlotResult:
        """Run one task in this slot's process (its span a child of
        ``trace_parent``, when traced). The answer is awaited as the
        pipe becoming readable (no thread in between); a dead process is seen
        at once as EOF on the pipe."""
        loop = asyncio.get_running_loop()
        if self._process is None or not self._process.is_alive():
            await loop.run_in_executor(None, self._spawn)
        conn, pid = self._conn, self.pid
        assert conn is not None
        self._stopping = False
        try:
            conn.send((task_type, params, trace_parent))
            readable: asyncio.Future[None] = loop.create_future()

            def wake() -> None:
                if not readable.done():
                    readable.set_result(None)

            loop.add_reader(conn.fileno(), wake)
            try:
                await readable
            finally:
                loop.remove_reader(conn.fileno())
            kind, payload = conn.recv()
            return SlotResult(kind, payload, pid)
        except (EOFError, OSError):
            return await loop.run_in_executor(None, self._died, pid)

    def _died(self, pid: int) -> SlotResult:
        """The task process ended while running a task: say why, replace it."""
        self._process.join(5)
        why = _describe_exit(self._process.exitcode)
        stopped = self._stopping
        self._spawn()
        return SlotResult("stopped" if stopped else "crash", f"{why} (pid {pid})".encode(), pid)

    def kill(self) -> None:
        """Stop the running task now (its process is replaced)."""
        self._stopping = True
        with self._lock:
            process = self._process
        if process is not None and process.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)

    def close(self) -> None:
        with self._lock:
            process, conn = self._process, self._conn
            self._process = self._conn = None
        if conn is not None:
            conn.close()
        if process is not None:
            process.join(2)
            if process.is_alive():
                process.kill()
                process.join(2)


class ProcessPool:
    def __init__(self, slots: int, tracing: TracingConfig | None = None) -> None:
        """``slots`` task processes; with ``tracing`` (on), each exports its tasks' spans."""
        _CONTEXT.set_forkserver_preload(_PRELOAD)
        self.slots = [Slot(i, tracing) for i in range(slots)]
        self._free = list(reversed(self.slots))

    def acquire(self) -> Slot:
        """A free slot; the caller must :meth:`release` it."""
        return self._free.pop()

    def release(self, slot: Slot) -> None:
        self._free.append(slot)

    @property
    def free(self) -> int:
        return len(self._free)

    def close(self) -> None:
        for slot in self.slots:
            slot.close()
