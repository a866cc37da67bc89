"""Result files under one storage root, written atomically and durably.

The only module that touches result files. Every method blocks (file I/O):
callers run them off the event loop, on a thread of their own.

Writes follow the classic recipe, so a reader (or a crash) sees either the
old complete file or the new complete file, never a torn one: a temporary
file in the target directory (``O_CREAT | O_EXCL``), write, ``fsync``,
``rename`` over the target, ``fsync`` of the directory. Directories created
on the way are made durable too (``fsync`` of their parent).

Paths cannot leave the root: a relative path with ``..`` or a leading ``/``
is refused before anything is touched, every directory is resolved (symbolic
links followed) and checked to be under the resolved root before anything is
created in it, and the file itself is created and renamed relative to that
directory's descriptor, with a name that is a single path component.

``OSError`` stops here. A write the storage itself refuses is named, since
retrying it cannot help until an operator acts: no space or quota left, a
file too large → :class:`ResourceExhausted`; a read-only file system or no
permission → :class:`FailedPrecondition`. A missing file becomes
:class:`NotFound`; any other failure :class:`Unavailable` (may pass). A
failed write leaves no file behind, neither a partial one nor its temporary.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
from collections.abc import Generator
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from gridmesh.common.errors import (
    AlreadyExists,
    FailedPrecondition,
    GridmeshError,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)

FILE_MODE = 0o644
"""Mode of stored files (before the umask)."""

_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
"""Write errors meaning the storage has no room for the result."""
_REFUSED = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})
"""Write errors meaning the storage does not let gridmesh write at all."""


class FileStore:
    """Files under ``root`` (created on first write)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().resolve()

    # -- writing ------------------------------------------------------------

    def write_atomic(
        self, relative_dir: str, filename: str, content: bytes, *, replace: bool = True
    ) -> tuple[str, int, str]:
        """Make ``<root>/<relative_dir>/<filename>`` hold exactly ``content``,
        durably, replacing any previous version atomically; with
        ``replace=False``, :class:`AlreadyExists` instead if there is one
        (nothing is written then).

        Returns the path relative to the root, the size in bytes and the
        SHA-256 hex digest of what was written.
        """
        parts = _relative_parts(relative_dir, "directory")
        _check_filename(filename)
        relative = PurePosixPath(*parts, filename).as_posix()
        try:
            directory = self._ensure_dir(parts)
            dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                if not replace and _exists_in(dir_fd, filename):
                    raise AlreadyExists(f"{relative} exists")
                _replace_in(dir_fd, filename, content)
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as e:
            raise self._write_error(e, relative) from None
        return relative, len(content), hashlib.sha256(content).hexdigest()

    def remove_leftovers(self, older_than: float) -> int:
        """Delete the temporary files of writes cut short (a process killed
        between creating one and renaming it), modified before
        ``older_than`` (a time.time()); answers how many. Walks the whole
        root: call it once, as its only writer starts."""
        removed = 0
        for directory, _, files in os.walk(self.root):
            for name in files:
                if not _TEMP_RE.match(name):
                    continue
                path = os.path.join(directory, name)
                try:
                    if os.stat(path, follow_symlinks=False).st_mtime < older_than:
                        os.unlink(path)
                        removed += 1
                except FileNotFoundError:
                    continue
        return removed

    def remove(self, relative_path: str) -> None:
        """Delete the file at ``relative_path`` durably (none there: nothing to do)."""
        path = self._existing(relative_path)
        try:
            path.unlink(missing_ok=True)
            _fsync_dir(path.parent)
        except OSError as e:
            raise Unavailable(f"cannot remove result file {relative_path}: {_reason(e)}") from None

    def _write_error(self, error: OSError, relative: str) -> GridmeshError:
        where = f"(storage root {self.root}, writing {relative})"
        if error.errno in _FULL:
            return ResourceExhausted(f"{_reason(error).lower()} {where}")
        if error.errno in _REFUSED:
            return FailedPrecondition(f"{_reason(error).lower()} {where}")
        return Unavailable(f"cannot write result file {relative}: {_reason(error)}")

    def _ensure_dir(self, parts: tuple[str, ...]) -> Path:
        """The directory ``root/parts``, created (durably) where missing, each
        level checked to resolve under the root before anything is made in it."""
        self.root.mkdir(parents=True, exist_ok=True)
        current = self.root
        for part in parts:
            child = current / part
            try:
                child.mkdir()
            except FileExistsError:
                pass
            else:
                _fsync_dir(current)
            current = self._inside(child, child.relative_to(self.root).as_posix())
            if not current.is_dir():
                raise InvalidArgument(f"{child.relative_to(self.root).as_posix()} exists and is not a directory")
        return current

    # -- reading ------------------------------------------------------------

    def open_chunks(self, relative_path: str, chunk_size: int) -> Generator[bytes, None, None]:
        """The file's bytes in pieces of at most ``chunk_size`` (memory stays
        bounded whatever the file size). The file is opened at once, so a
        missing file raises :class:`NotFound` here, not on the first chunk;
        it is closed when the iterator is exhausted or closed."""
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        path = self._existing(relative_path)
        try:
            file = path.open("rb")
        except FileNotFoundError:
            raise NotFound(f"result file {relative_path} is missing") from None
        except OSError as e:
            raise Unavailable(f"cannot read result file {relative_path}: {_reason(e)}") from None
        return _chunks(file, relative_path, chunk_size)

    def exists(self, relative_path: str) -> bool:
        """Whether a regular file is stored at ``relative_path``."""
        return self._existing(relative_path).is_file()

    def _existing(self, relative_path: str) -> Path:
        parts = _relative_parts(relative_path, "path")
        if not parts:
            raise InvalidArgument("an empty path names no file")
        return self._inside(self.root.joinpath(*parts), relative_path)

    def _inside(self, path: Path, shown: str) -> Path:
        """``path`` resolved; :class:`InvalidArgument` if that is not under the root."""
        resolved = path.resolve()
        if not resolved.is_relative_to(self.root):
            raise InvalidArgument(f"{shown!r} leads outside the storage root")
        return resolved


def _relative_parts(value: str, what: str) -> tuple[str, ...]:
    path = PurePosixPath(value)
    if path.is_absolute() or ".." in path.parts or "\x00" in value:
        raise InvalidArgument(f"{what} {value!r} must be relative to the storage root, without '..'")
    return path.parts


def _check_filename(filename: str) -> None:
    if filename in ("", ".", "..") or "/" in filename or "\x00" in filename:
        raise InvalidArgument(f"file name {filename!r} must be a single path component")


_TEMP_RE = re.compile(r"^\..+\.[0-9a-f]{16}\.tmp$")
"""The name of :func:`_replace_in`'s temporary files."""


def _replace_in(dir_fd: int, filename: str, content: bytes) -> None:
    """Write a temporary sibling, fsync it, rename it over ``filename``."""
    temp = f".{filename}.{secrets.token_hex(8)}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE, dir_fd=dir_fd)
    try:
        try:
            view = memoryview(content)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, filename, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=dir_fd)
        raise


def _exists_in(dir_fd: int, filename: str) -> bool:
    try:
        os.stat(filename, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _chunks(file: BinaryIO, shown: str, chunk_size: int) -> Generator[bytes, None, None]:
    with file:
        while True:
            try:
                chunk = file.read(chunk_size)
            except OSError as e:
                raise Unavailable(f"cannot read result file {shown}: {_reason(e)}") from None
            if not chunk:
                return
            yield chunk


def _reason(error: OSError) -> str:
    return error.strerror or str(error)


__all__ = ["FILE_MODE", "FileStore"]
