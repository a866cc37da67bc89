"""The built-in task types of SPEC §3.

Each function runs in a worker's pool process and returns a JSON-serialisable
result. ``burn`` is the fixed pure-Python loop the peer benchmarks use.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from typing import Any

from gridmesh.core.tasktypes import TaskType

BURN_ITERS_PER_UNIT = 96_000
MAX_SLEEP_MS = 3_600_000
MAX_BURN_MS = 600_000
MAX_BURN_UNITS = 60_000
MAX_PRIMES_N = 50_000_000
MAX_TEXT_CHARS = 1_000_000


def noop(params: dict[str, Any]) -> None:
    return None


def echo(params: dict[str, Any]) -> dict[str, Any]:
    return params


def sleep(params: dict[str, Any]) -> dict[str, Any]:
    time.sleep(params["ms"] / 1000)
    return {"slept_ms": params["ms"]}


def burn_units(units: int) -> int:
    """One loop of ``units`` x 96,000 iterations of ``x += i * i``: exactly the peers' ``burn``."""
    x = 0
    for i in range(BURN_ITERS_PER_UNIT * units):
        x += i * i
    return x


def burn(params: dict[str, Any]) -> dict[str, Any]:
    if "units" in params:
        return {"units": params["units"], "x": burn_units(params["units"])}
    deadline = time.perf_counter() + params["ms"] / 1000
    x = loops = 0
    while time.perf_counter() < deadline:
        for i in range(1000):
            x += i * i
        loops += 1
    return {"ms": params["ms"], "iterations": loops * 1000}


_WORD_RE = re.compile(r"[\w']+")


def word_count(params: dict[str, Any]) -> dict[str, Any]:
    words = [w.lower() for w in _WORD_RE.findall(params["text"])]
    counts = Counter(words)
    return {"words": len(words), "unique": len(counts), "counts": dict(counts.most_common())}


def primes(params: dict[str, Any]) -> dict[str, Any]:
    n = params["n"]
    if n < 2:
        return {"n": n, "count": 0}
    sieve = bytearray([1]) * (n + 1)
    sieve[0] = sieve[1] = 0
    for p in range(2, int(n**0.5) + 1):
        if sieve[p]:
            sieve[p * p :: p] = bytes(len(range(p * p, n + 1, p)))
    return {"n": n, "count": sum(sieve)}


class TaskFailed(Exception):
    """What ``fail`` raises unless told another type."""


_FAIL_TYPES: dict[str, type[Exception]] = {
    "TaskFailed": TaskFailed,
    "ValueError": ValueError,
    "RuntimeError": RuntimeError,
    "KeyError": KeyError,
}


def fail(params: dict[str, Any]) -> dict[str, Any]:
    raise _FAIL_TYPES[params.get("error", "TaskFailed")](params.get("message", "failed on purpose"))


def _int(maximum: int, what: str) -> dict[str, Any]:
    return {"type": "integer", "minimum": 0, "maximum": maximum, "description": what}


BUILTIN_TASK_TYPES = (
    TaskType(
        name="noop",
        description="Returns at once; any params are accepted and ignored.",
        params_schema={"type": "object"},
        run=noop,
    ),
    TaskType(
        name="echo",
        description="Returns its params unchanged.",
        params_schema={"type": "object"},
        run=echo,
    ),
    TaskType(
        name="sleep",
        description="Sleeps for ms milliseconds.",
        params_schema={
            "type": "object",
            "properties": {"ms": _int(MAX_SLEEP_MS, "milliseconds to sleep")},
            "required": ["ms"],
            "additionalProperties": False,
            "description": 'give {"ms": N}',
        },
        run=sleep,
    ),
    TaskType(
        name="burn",
        description="Burns CPU in pure Python: ms milliseconds, or units x 96,000 iterations of x += i * i.",
        params_schema={
            "type": "object",
            "properties": {
                "ms": _int(MAX_BURN_MS, "milliseconds of CPU"),
                "units": _int(MAX_BURN_UNITS, "units of 96,000 loop iterations"),
            },
            "minProperties": 1,
            "maxProperties": 1,
            "additionalProperties": False,
            "description": 'give exactly one of {"ms": N} or {"units": N}',
        },
        run=burn,
    ),
    TaskType(
        name="word_count",
        description="Counts the words of text (case-insensitive).",
        params_schema={
            "type": "object",
            "properties": {"text": {"type": "string", "maxLength": MAX_TEXT_CHARS}},
            "required": ["text"],
            "additionalProperties": False,
            "description": 'give {"text": "..."}',
        },
        run=word_count,
    ),
    TaskType(
        name="fail",
        description="Raises error(message): to try retry policies and failure handling.",
        params_schema={
            "type": "object",
            "properties": {
                "error": {"enum": sorted(_FAIL_TYPES), "description": "the exception type raised"},
                "message": {"type": "string", "maxLength": 1000},
            },
            "additionalProperties": False,
            "description": 'give {"error": "ValueError", "message": "..."} (both optional)',
        },
        run=fail,
    ),
    TaskType(
        name="primes",
        description="Counts the primes <= n.",
        params_schema={
            "type": "object",
            "properties": {"n": _int(MAX_PRIMES_N, "upper bound")},
            "required": ["n"],
            "additionalProperties": False,
            "description": 'give {"n": N}',
        },
        run=primes,
    ),
)
