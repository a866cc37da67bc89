"""Result storage rules: where a task's result lives, what is recorded about
it, what a store request may carry, and how result listings are paged.

Pure domain: no gRPC, no MySQL, no file system.

A task's result is stored at ``<storage root>/<result_dir>/<task_id>.json``
(SPEC §3). The task id is a UUID and the directory passed
:func:`~gridmesh.common.names.check_result_dir`, so the relative path built by
:func:`result_path` never contains ``..``, never starts with ``/`` and uses
only ``[A-Za-z0-9_.-]`` and ``/``: it cannot leave the storage root.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from gridmesh.common.errors import InvalidArgument, ResourceExhausted
from gridmesh.common.names import check_result_dir, check_uuid

RESULT_SUFFIX = ".json"
DEFAULT_CONTENT_TYPE = "application/json"
CHUNK_BYTES = 64 * 1024
"""Size of the pieces a stored result is read and streamed back in."""
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_CONTENT_TYPE_CHARS = 255

# type "/" subtype, then optional parameters (RFC 9110 tokens; printable ASCII).
_TOKEN = r"[A-Za-z0-9!#$%&'*+.^_`|~-]+"
_CONTENT_TYPE_RE = re.compile(rf"^{_TOKEN}/{_TOKEN}(\s*;[\x20-\x7e]*)?$")
_PAGE_TOKEN_VERSION = 1


@dataclass(frozen=True)
class StoredResult:
    """What the index records about one stored result."""

    task_id: str
    """Canonical (lower-case) UUID of the task."""
    result_dir: str
    """Normalised directory under the storage root."""
    path: str
    """``<result_dir>/<task_id>.json``, relative to the storage root."""
    size_bytes: int
    sha256: str
    """Hex digest of the stored bytes."""
    content_type: str
    stored_at: datetime
    """When the file became durable (UTC, microsecond precision)."""
    expired_at: datetime | None = None
    """When retention deleted the file (the entry stays, to say so)."""

    @property
    def key(self) -> ResultKey:
        """Position of this result in listings."""
        return ResultKey(self.result_dir, self.stored_at, self.task_id)


@dataclass(frozen=True)
class Lease:
    """The lease a worker held on the task whose result it hands over: the
    result completes the task only if this lease is still current."""

    worker_id: str
    fencing_token: int
    started_at: datetime | None = None
    trace_parent: str = ""
    """The run's span, which the store continues (``""``: not traced)."""


class Completions(Protocol):
    """The Scheduler, as the StoreKeeper reports completions to it."""

    async def check(self, task_id: str, lease: Lease) -> None:
        """Returns if a completion on ``lease`` would be taken (or was
        already); :class:`FailedPrecondition` if the lease is not current.
        Changes nothing."""
        ...

    async def report(self, result: StoredResult, lease: Lease) -> None:
        """Report ``result`` (durable) as the task's success; returns once
        the Scheduler committed it. :class:`FailedPrecondition` if it refused
        the lease; :class:`Unavailable` if the outcome is unknown."""
        ...

    async def committed(self, task_id: str) -> StoredResult | None:
        """The result the Scheduler committed for ``task_id`` (its task row:
        SUCCEEDED with the result's path, size and digest), or None if it
        has none; :class:`Unavailable` if no Scheduler answers."""
        ...


@dataclass(frozen=True, order=True)
class ResultKey:
    """Listing order: by directory, then oldest first, then task id."""

    result_dir: str
    stored_at: datetime
    task_id: str


@dataclass(frozen=True)
class StoreRequest:
    """A validated store request."""

    task_id: str
    result_dir: str
    content: bytes
    content_type: str

    @property
    def path(self) -> str:
        return result_path(self.result_dir, self.task_id)


@dataclass(frozen=True)
class ListQuery:
    """A validated listing request."""

    result_dir: str
    """Empty = every directory."""
    page_size: int
    after: ResultKey | None
    """Resume after this key (from the page token); None = from the start."""


@dataclass(frozen=True)
class ResultPage:
    results: tuple[StoredResult, ...]
    next_page_token: str
    """Empty when this is the last page."""


def result_filename(task_id: str) -> str:
    return f"{task_id}{RESULT_SUFFIX}"


def result_path(result_dir: str, task_id: str) -> str:
    """``<result_dir>/<task_id>.json`` of an already validated directory and id."""
    return f"{result_dir}/{result_filename(task_id)}"


def check_task_id(value: str) -> str:
    return check_uuid(value, "task_id")


def check_content_type(value: str) -> str:
    """``type/subtype[; params]``; empty means :data:`DEFAULT_CONTENT_TYPE`.
    It is sent back as an HTTP header by Envoy, so only printable ASCII."""
    if not value:
        return DEFAULT_CONTENT_TYPE
    if len(value) > MAX_CONTENT_TYPE_CHARS or not _CONTENT_TYPE_RE.match(value):
        raise InvalidArgument(
            f"content_type {value[:80]!r} is not a media type "
            "such as 'application/json' or 'text/plain; charset=utf-8'",
            field="content_type",
        )
    return value


def check_store_request(
    task_id: str, result_dir: str, content: bytes, content_type: str, *, max_bytes: int
) -> StoreRequest:
    """Validate everything a store request carries, cheapest checks first."""
    task_id = check_task_id(task_id)
    result_dir = check_result_dir(result_dir)
    content_type = check_content_type(content_type)
    if len(content) > max_bytes:
        raise ResourceExhausted(
            f"content is {len(content)} bytes; the limit is {max_bytes} bytes (storekeeper.max_result_bytes)",
            field="content",
        )
    return StoreRequest(task_id, result_dir, content, content_type)


def check_list_query(result_dir: str, page_size: int, page_token: str) -> ListQuery:
    """``result_dir`` empty or a valid directory; ``page_size`` 0 = default,
    more than :data:`MAX_PAGE_SIZE` is reduced to it; ``page_token`` empty or
    one issued for the same ``result_dir``."""
    if result_dir:
        result_dir = check_result_dir(result_dir)
    if page_size < 0:
        raise InvalidArgument(f"page_size must not be negative, got {page_size}", field="page_size")
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    after = decode_page_token(page_token, result_dir) if page_token else None
    return ListQuery(result_dir, size, after)


def page_of(rows: list[StoredResult], query: ListQuery) -> ResultPage:
    """The page for ``query`` from up to ``page_size + 1`` rows in key order
    (the extra row only says that there is a next page)."""
    results = tuple(rows[: query.page_size])
    more = len(rows) > query.page_size
    token = encode_page_token(results[-1].key, query.result_dir) if more and results else ""
    return ResultPage(results, token)


def encode_page_token(after: ResultKey, result_dir: str) -> str:
    """An opaque token: URL-safe base64 of the last key returned and of the
    listing's directory filter (so it cannot be replayed on another listing)."""
    payload = [_PAGE_TOKEN_VERSION, result_dir, after.result_dir, _to_micros(after.stored_at), after.task_id]
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str, result_dir: str) -> ResultKey:
    """The key a token encodes; :class:`InvalidArgument` if it was not issued
    by :func:`encode_page_token` for the same ``result_dir`` filter."""
    bad = InvalidArgument(
        "page_token is not valid: pass the next_page_token of the previous response unchanged", field="page_token"
    )
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        version, listed_dir, key_dir, micros, task_id = json.loads(raw)
    except (binascii.Error, ValueError, TypeError):
        raise bad from None
    if version != _PAGE_TOKEN_VERSION or not all(isinstance(v, str) for v in (listed_dir, key_dir, task_id)):
        raise bad
    if not isinstance(micros, int) or isinstance(micros, bool) or micros < 0:
        raise bad
    if listed_dir != result_dir:
        raise InvalidArgument(
            f"page_token belongs to a listing of result_dir {listed_dir!r}, not {result_dir!r}", field="page_token"
        )
    try:
        key_dir = check_result_dir(key_dir)
        task_id = check_task_id(task_id)
        stored_at = _from_micros(micros)
    except (InvalidArgument, ValueError, OverflowError):
        raise bad from None
    if result_dir and key_dir != result_dir:
        raise bad
    return ResultKey(key_dir, stored_at, task_id)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _to_micros(value: datetime) -> int:
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _from_micros(micros: int) -> datetime:
    return datetime.fromtimestamp(micros // 1_000_000, UTC).replace(microsecond=micros % 1_000_000)


__all__ = [
    "CHUNK_BYTES",
    "DEFAULT_CONTENT_TYPE",
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "RESULT_SUFFIX",
    "Completions",
    "Lease",
    "ListQuery",
    "ResultKey",
    "ResultPage",
    "StoreRequest",
    "StoredResult",
    "check_content_type",
    "check_list_query",
    "check_store_request",
    "check_task_id",
    "decode_page_token",
    "encode_page_token",
    "page_of",
    "result_filename",
    "result_path",
]
