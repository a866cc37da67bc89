"""What a client submits, and the rules it must keep to be accepted.

:class:`SubmitRequest` is one task as a client asks for it. :func:`check_task`
checks what it asks of the task itself (type, params, result_dir, attempts,
run_timeout, result_ttl, retry policy); :func:`admit` checks that, and its
timing and idempotency key against the clock. Both are pure: the
:class:`~gridmesh.core.scheduler.SchedulerCore` admits every submit, and the
schedules (:mod:`gridmesh.core.schedules`) check a schedule's task when it is
created. Every refusal is :class:`InvalidArgument` naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from gridmesh.common.errors import InvalidArgument
from gridmesh.common.names import check_result_dir
from gridmesh.core.tasks import Priority, RetryPolicy
from gridmesh.core.tasktypes import TaskTypeRegistry

MAX_ATTEMPTS_LIMIT = 20
MAX_IDEMPOTENCY_KEY_CHARS = 255
MIN_RESULT_TTL_S = 1.0
MAX_RESULT_TTL_S = 3660 * 86_400.0
MAX_BACKOFF_S = 86_400.0
MAX_RUN_TIMEOUT_S = 7 * 86_400.0
MAX_DELAY_S = 366 * 86_400.0
"""How far ahead a task may be delayed."""


@dataclass(frozen=True)
class SubmitRequest:
    task_type: str
    params: dict[str, object]
    result_dir: str
    priority: Priority = Priority.UNSPECIFIED
    idempotency_key: str = ""
    max_attempts: int = 0
    run_timeout_s: float = 0.0
    """0: the task type's default."""
    deadline: datetime | None = None
    """The latest time the task may start (None: no deadline)."""
    not_before: datetime | None = None
    """Not dispatched before this time (a delayed task)."""
    delay_s: float = 0.0
    """Or: not dispatched before this long after the submit."""
    retry: RetryPolicy | None = None
    """None: the task type's."""
    result_ttl_s: float = 0.0
    """How long the finished task and its result are kept (0: the mesh's default)."""
    trace_parent: str = ""
    """The W3C trace context of the submit (``""``: not traced)."""


@dataclass(frozen=True)
class Admitted:
    """What :func:`admit` made of a request's checked fields."""

    result_dir: str
    """Normalised."""
    max_attempts: int
    """The request's, or the mesh's default."""
    not_before: datetime | None
    """When the task becomes due (None: at once)."""


def admit(
    request: SubmitRequest,
    types: TaskTypeRegistry,
    now: datetime,
    *,
    max_params_bytes: int,
    default_max_attempts: int,
) -> Admitted:
    """Check all of ``request`` at ``now``: the task (:func:`check_task`), when
    it becomes due, its deadline and its idempotency key."""
    result_dir, max_attempts = check_task(
        request, types, max_params_bytes=max_params_bytes, default_max_attempts=default_max_attempts
    )
    not_before = due_time(request, now)
    if request.deadline is not None and request.deadline <= now:
        raise InvalidArgument(
            f"deadline {request.deadline.isoformat()} has passed; it must be in the future", field="deadline"
        )
    if request.deadline is not None and not_before is not None and request.deadline <= not_before:
        raise InvalidArgument(
            f"deadline {request.deadline.isoformat()} is not after the task's due time {not_before.isoformat()}",
            field="deadline",
        )
    key = request.idempotency_key
    if len(key) > MAX_IDEMPOTENCY_KEY_CHARS:
        raise InvalidArgument(
            f"idempotency_key is {len(key)} characters; the limit is {MAX_IDEMPOTENCY_KEY_CHARS}",
            field="idempotency_key",
        )
    return Admitted(result_dir, max_attempts, not_before)


def check_task(
    request: SubmitRequest, types: TaskTypeRegistry, *, max_params_bytes: int, default_max_attempts: int
) -> tuple[str, int]:
    """What a submit asks of the task itself (its type, params, result_dir,
    attempts, run_timeout, result_ttl, retry policy), as the checked
    ``(result_dir, max_attempts)``."""
    types.validate(request.task_type, request.params, max_params_bytes)
    result_dir = check_result_dir(request.result_dir)
    max_attempts = request.max_attempts or default_max_attempts
    if not 1 <= max_attempts <= MAX_ATTEMPTS_LIMIT:
        raise InvalidArgument(
            f"max_attempts must be between 1 and {MAX_ATTEMPTS_LIMIT}, got {request.max_attempts}",
            field="max_attempts",
        )
    check_run_timeout(request.run_timeout_s)
    if not (request.result_ttl_s == 0 or MIN_RESULT_TTL_S <= request.result_ttl_s <= MAX_RESULT_TTL_S):
        raise InvalidArgument(
            f"result_ttl must be between {MIN_RESULT_TTL_S:g} s and {MAX_RESULT_TTL_S / 86_400:.0f} days "
            f"(or unset: the mesh's default), got {request.result_ttl_s:g} s",
            field="result_ttl",
        )
    if request.retry is not None:
        check_retry(request.retry)
    return result_dir, max_attempts


def due_time(request: SubmitRequest, now: datetime) -> datetime | None:
    """When a delayed task becomes due (None: at once)."""
    if request.not_before is not None and request.delay_s:
        raise InvalidArgument("give not_before or delay, not both", field="delay")
    if not 0 <= request.delay_s <= MAX_DELAY_S or request.delay_s != request.delay_s:
        raise InvalidArgument(
            f"delay must be between 0 and {MAX_DELAY_S / 86_400:.0f} days, got {request.delay_s:g} s", field="delay"
        )
    if request.delay_s:
        return now + timedelta(seconds=request.delay_s)
    if request.not_before is not None and request.not_before > now + timedelta(seconds=MAX_DELAY_S):
        raise InvalidArgument(
            f"not_before is more than {MAX_DELAY_S / 86_400:.0f} days away: {request.not_before.isoformat()}",
            field="not_before",
        )
    return request.not_before


def check_retry(policy: RetryPolicy) -> None:
    """A retry policy's numbers are in range and its error names are type names."""

    def bad(field: str, message: str) -> InvalidArgument:
        return InvalidArgument(f"retry.{field} {message}", field=f"retry.{field}")

    if not 1 <= policy.max_attempts <= MAX_ATTEMPTS_LIMIT:
        raise bad("max_attempts", f"must be between 1 and {MAX_ATTEMPTS_LIMIT}, got {policy.max_attempts}")
    if not 0 < policy.initial_backoff_s <= MAX_BACKOFF_S:
        raise bad("initial_backoff", f"must be more than 0 and at most {MAX_BACKOFF_S:.0f} s")
    if not policy.initial_backoff_s <= policy.max_backoff_s <= MAX_BACKOFF_S:
        raise bad("max_backoff", f"must be at least initial_backoff and at most {MAX_BACKOFF_S:.0f} s")
    if not 1 <= policy.multiplier <= 10:
        raise bad("multiplier", f"must be between 1 and 10, got {policy.multiplier:g}")
    for name in policy.non_retryable_errors:
        if not name.isidentifier():
            raise bad("non_retryable_errors", f"names error types such as ValueError, not {name!r}")


def check_run_timeout(seconds: float) -> None:
    """A run_timeout is positive and at most a week (0: none given)."""
    if seconds < 0 or seconds > MAX_RUN_TIMEOUT_S or seconds != seconds:
        raise InvalidArgument(
            f"run_timeout must be between 0 (none: the task type's default) and {MAX_RUN_TIMEOUT_S:.0f} s, "
            f"got {seconds:g} s",
            field="run_timeout",
        )
