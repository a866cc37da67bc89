"""Issue 14 "Logs": JSON lines carrying the work's context, and
``gridmesh logs`` showing and following the processes' logs."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import threading
from pathlib import Path

from gridmesh.cli import logs
from gridmesh.observability.logs import JsonFormatter, TextFormatter, _ContextFilter, log_context, set_log_context


def _record(message: str) -> logging.LogRecord:
    record = logging.LogRecord("gridmesh.worker", logging.WARNING, __file__, 1, message, (), None)
    _ContextFilter().filter(record)
    return record


def test_a_json_line_carries_the_context_it_was_logged_in():
    with log_context(worker_id="w1-50061", task_id="t-1"):
        line = json.loads(JsonFormatter("worker").format(_record("stalled")))
    assert line["msg"] == "stalled" and line["level"] == "WARNING" and line["component"] == "worker"
    assert (line["worker_id"], line["task_id"]) == ("w1-50061", "t-1")
    assert "subscriber" not in line and line["ts"].endswith("Z")
    outside = json.loads(JsonFormatter("worker").format(_record("idle")))
    assert "task_id" not in outside and "worker_id" not in outside


def test_a_text_line_ends_with_its_context():
    with log_context(subscriber="billing"):
        assert TextFormatter().format(_record("consuming")).endswith("consuming [subscriber=billing]")
    assert TextFormatter().format(_record("plain")).endswith("gridmesh.worker plain")


def test_each_asyncio_task_keeps_its_own_task_id():
    seen: dict[str, str] = {}

    async def handle(task_id: str) -> None:
        set_log_context(task_id=task_id)
        await asyncio.sleep(0)
        seen[task_id] = json.loads(JsonFormatter("worker").format(_record("done"))).get("task_id", "")

    async def main() -> None:
        await asyncio.gather(handle("a"), handle("b"))

    asyncio.run(main())
    assert seen == {"a": "a", "b": "b"}


def test_logs_shows_the_last_lines_of_each_and_follows_what_is_appended(tmp_path: Path):
    scheduler, worker = tmp_path / "scheduler.log", tmp_path / "worker-1.log"
    scheduler.write_text("".join(f"s{i}\n" for i in range(30)))
    worker.write_text("w0\n")
    out = io.StringIO()
    appended = threading.Event()
    polls = iter(range(100))

    def keep_going() -> bool:
        if next(polls) == 2:
            with worker.open("a") as f:
                f.write("w1\nw2 half")  # the unfinished line waits for its end
            appended.set()
        return not (appended.is_set() and "w1" in out.getvalue())

    logs.show(logs.log_files(tmp_path), 2, follow=True, out=out, keep_going=keep_going)
    lines = out.getvalue().splitlines()
    assert lines[:3] == ["scheduler      | s28", "scheduler      | s29", "worker-1       | w0"]
    assert lines[3:] == ["worker-1       | w1"]
    assert logs.last_lines(tmp_path / "absent.log", 5) == []
