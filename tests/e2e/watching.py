"""A client's view of a mesh under faults: resuming watches of terminal
notices (gRPC through the client library, HTTP/JSON as curl in a loop), each
on a thread of its own, and batches of no-op tasks submitted while
the mesh may answer UNAVAILABLE (the kill tests of test_faults and test_restart)."""

from __future__ import annotations

import contextlib
import http.client
import threading
import time
from datetime import datetime
from types import TracebackType
from typing import Self

from gridmesh.clients import TaskClient, TaskError, submit_request
from tests.helpers import ndjson, wait_for


class TerminalNotices:
    """Every terminal notice one ``TaskClient.watch_all(terminal_only)``
    stream delivers, in order (a task id once per notice)."""

    def __init__(self, edge: str) -> None:
        self.edge = edge
        self.ids: list[str] = []
        self.late_s: dict[str, float] = {}
        """How long after a task finished its notice arrived (same machine's clock)."""
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        with TaskClient(self.edge) as client:
            for event in client.watch_all(terminal_only=True):
                self._seen(event.task.task_id, event.task.finished_at.ToNanoseconds() / 1e9)
                if self._done.is_set():
                    return

    def _seen(self, task_id: str, finished_at: float) -> None:
        self.ids.append(task_id)
        self.late_s.setdefault(task_id, time.time() - finished_at)

    def __enter__(self) -> Self:
        self._thread.start()
        with TaskClient(self.edge) as client:

            def live() -> bool:
                """A probe task's notice arrived: the watch is live. One
                finished before the watch first connected (the edge may be
                briefly without a healthy Scheduler after a restart) is never
                sent to a watch that starts live: then probe again."""
                probe = wait_for("a probe task to be accepted", lambda: submit_noops(client, 1, "watching"), 60)[0]
                deadline = time.monotonic() + 3
                while probe not in self.ids and time.monotonic() < deadline:
                    time.sleep(0.05)
                return probe in self.ids

            wait_for("the watch to be live", live, timeout=60)
        return self

    def wait_for_all(self, ids: list[str], timeout: float = 120) -> None:
        wait_for("every terminal notice", lambda: set(ids) <= set(self.ids), timeout=timeout)

    def catch_up_s(self, ids: list[str]) -> float:
        """The longest a notice of ``ids`` arrived after its task finished:
        for tasks that finished while the stream was broken, how long the
        resuming client took to catch up."""
        return max(self.late_s[i] for i in ids)

    def of(self, ids: list[str]) -> list[str]:
        """The notices of ``ids``, repeats included."""
        wanted = set(ids)
        return [i for i in self.ids if i in wanted]

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self._done.set()
        with TaskClient(self.edge) as client, contextlib.suppress(TaskError):
            client.submit("noop", {}, "watching")  # wakes the watch so that it ends
        self._thread.join(timeout=30)


class NdjsonNotices(TerminalNotices):
    """The same over HTTP/JSON, as a shell loop around curl does it:
    ``GET /v1/tasks:watch?terminal_only=true`` (newline-delimited JSON), and
    whenever the response breaks off or is refused, the same again with
    ``resume_after=`` the last position received."""

    def __init__(self, edge: str) -> None:
        super().__init__(edge)
        self.position = 0
        self.reconnects = 0

    def _watch(self) -> None:
        while not self._done.is_set():
            path = "/v1/tasks:watch?terminal_only=true"
            if self.position:
                path += f"&resume_after={self.position}"
            try:
                for event in ndjson(self.edge, path, timeout=600):
                    if "task" not in event:  # the stream's closing error (the edge lost its upstream)
                        break
                    finished = datetime.fromisoformat(event["task"]["finished_at"]).timestamp()
                    self._seen(event["task"]["task_id"], finished)
                    self.position = int(event["position"])
                    if self._done.is_set():
                        return
            except (OSError, http.client.HTTPException, ValueError):
                pass  # refused (503), reset or cut short: resume
            self.reconnects += 1
            self._done.wait(0.2)


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
