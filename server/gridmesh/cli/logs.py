"""``gridmesh logs``: the output of the processes ``gridmesh up`` started on
this host, one component's or all of them, optionally followed as it grows."""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

FOLLOW_POLL_S = 0.2


def last_lines(path: Path, n: int) -> list[str]:
    """The last ``n`` lines of ``path`` (none if it does not exist)."""
    try:
        with path.open(errors="replace") as f:
            return list(deque(f, maxlen=n)) if n > 0 else []
    except FileNotFoundError:
        return []


def show(
    paths: Sequence[Path],
    lines: int,
    follow: bool,
    out: TextIO = sys.stdout,
    keep_going: Callable[[], bool] = lambda: True,
) -> None:
    """The last ``lines`` lines of each of ``paths`` (prefixed by its name when
    there are several), then, with ``follow``, whatever is appended to any of
    them until ``keep_going()`` is false (Ctrl-C ends ``gridmesh logs -f``)."""
    several = len(paths) > 1

    def emit(path: Path, line: str) -> None:
        out.write(f"{path.stem:<14} | {line}" if several else line)
        if not line.endswith("\n"):
            out.write("\n")

    offsets = {}
    for path in paths:
        for line in last_lines(path, lines):
            emit(path, line)
        offsets[path] = path.stat().st_size if path.exists() else 0
    out.flush()
    while follow and keep_going():
        for path in paths:
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            if size < offsets[path]:  # truncated or replaced: start over
                offsets[path] = 0
            if size > offsets[path]:
                with path.open("rb") as f:
                    f.seek(offsets[path])
                    chunk = f.read()
                complete = chunk.rfind(b"\n") + 1  # a line still being written waits for its end
                offsets[path] += complete
                for line in chunk[:complete].decode(errors="replace").splitlines(keepends=True):
                    emit(path, line)
                out.flush()
        time.sleep(FOLLOW_POLL_S)


def log_files(log_dir: Path) -> list[Path]:
    """Every process log under ``log_dir``, by name."""
    return sorted(p for p in log_dir.glob("*.log") if p.is_file()) if log_dir.is_dir() else []


__all__ = ["last_lines", "log_files", "show"]
