"""Validation of names and paths that reach the file system or the brokers."""

from __future__ import annotations

import re
import uuid

from gridmesh.common.errors import InvalidArgument

NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_DIR_PART_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
MAX_RESULT_DIR_CHARS = 255


def check_name(value: str, field: str) -> str:
    """A service or entity name: ``^[a-z][a-z0-9_-]{0,62}$``."""
    if not NAME_RE.match(value):
        raise InvalidArgument(
            f"{field} {value!r} is not a valid name: use 1-63 characters a-z, 0-9, '_' or '-', starting with a letter",
            field=field,
        )
    return value


def check_result_dir(value: str, field: str = "result_dir") -> str:
    """A safe relative directory: parts of letters, digits, ``_ . -``, no
    ``..``, not absolute, at most 255 characters. Returned normalised
    (no empty parts, no trailing slash)."""
    if not value:
        raise InvalidArgument(f"{field} is required: a relative directory such as 'reports/2026'", field=field)
    if len(value) > MAX_RESULT_DIR_CHARS:
        raise InvalidArgument(
            f"{field} is {len(value)} characters long; the limit is {MAX_RESULT_DIR_CHARS}", field=field
        )
    if value.startswith("/") or value.startswith("\\"):
        raise InvalidArgument(f"{field} {value!r} is absolute; give a path relative to the storage root", field=field)
    parts = [p for p in value.split("/") if p not in ("", ".")]
    if not parts:
        raise InvalidArgument(f"{field} {value!r} names no directory", field=field)
    for part in parts:
        if part == "..":
            raise InvalidArgument(f"{field} {value!r} contains '..'; results stay under the storage root", field=field)
        if not _DIR_PART_RE.match(part):
            raise InvalidArgument(
                f"{field} {value!r} has an unsupported character in {part!r}: use letters, digits, '_', '.' and '-'",
                field=field,
            )
    return "/".join(parts)


def check_uuid(value: str, field: str) -> str:
    """A UUID in its canonical string form (returned lower-case)."""
    if not value:
        raise InvalidArgument(f"{field} is required", field=field)
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        raise InvalidArgument(f"{field} {value!r} is not a UUID", field=field) from None
    return str(parsed)
