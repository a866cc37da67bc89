"""A client's view of a mesh under faults: one resuming watch of terminal
notices on a thread of its own, and batches of no-op tasks submitted while
the mesh may answer UNAVAILABLE (the kill tests of test_faults and test_restart)."""

from __future__ import annotations

import contextlib
import threading
from types import TracebackType

from gridmesh.clients import TaskClient, TaskError, submit_request
from tests.helpers import wait_for


class TerminalNotices:
    """Every terminal notice one ``TaskClient.watch_all(terminal_only)``
    stream delivers, in order (a task id once per notice)."""

    def __init__(self, edge: str) -> None:
        self.edge = edge
        self.ids: list[str] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        with TaskClient(self.edge) as client:
            for event in client.watch_all(terminal_only=True):
                self.ids.append(event.task.task_id)
                if self._done.is_set():
                    return

    def __enter__(self) -> TerminalNotices:
        self._thread.start()
        with TaskClient(self.edge) as client:
            probe = client.submit("noop", {}, "watching").task_id
        wait_for("the watch to be live", lambda: probe in self.ids)
        return self

    def wait_for_all(self, ids: list[str], timeout: float = 120) -> None:
        wait_for("every terminal notice", lambda: set(ids) <= set(self.ids), timeout=timeout)

    def of(self, ids: list[str]) -> list[str]:
        """The notices of ``ids``, repeats included."""
        wanted = set(ids)
        return [i for i in self.ids if i in wanted]

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self._done.set()
        with TaskClient(self.edge) as client, contextlib.suppress(TaskError):
            client.submit("noop", {}, "watching")  # wakes the watch so that it ends
        self._thread.join(timeout=30)


def submit_noops(client: TaskClient, n: int, result_dir: str) -> list[str] | None:
    """The ids of ``n`` no-op tasks submitted in one batch; None while the
    mesh answers UNAVAILABLE (for ``wait_for``)."""
    try:
        answers = client.submit_many([submit_request("noop", {}, result_dir) for _ in range(n)])
    except TaskError as e:
        assert e.code_name == "UNAVAILABLE", e
        return None
    tasks = [a for a in answers if not isinstance(a, TaskError)]
    assert len(tasks) == n, answers
    return [t.task_id for t in tasks]
