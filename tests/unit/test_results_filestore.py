"""The file store behind SPEC §3 "a task's result is stored at
<storage root>/<result_dir>/<task_id>.json (atomic write, fsync)": atomic and
durable writes, bounded reads, and no way out of the storage root."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path

import pytest

from gridmesh.adapters import filestore
from gridmesh.adapters.filestore import FileStore
from gridmesh.common.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted, Unavailable


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "results"


@pytest.fixture
def store(root: Path) -> FileStore:
    return FileStore(root)


def _all_files(path: Path) -> list[str]:
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if not p.is_dir())


def test_write_puts_the_bytes_under_root_and_returns_relative_path_size_and_sha256(store, root):
    path, size, sha = store.write_atomic("reports/2026", "t.json", b'{"ok": true}')
    assert path == "reports/2026/t.json"
    assert (root / path).read_bytes() == b'{"ok": true}'
    assert size == 12
    assert sha == hashlib.sha256(b'{"ok": true}').hexdigest()
    assert store.exists(path)


def test_rewriting_replaces_the_content_and_leaves_no_temporary_file(store, root):
    store.write_atomic("d", "t.json", b"old content, longer")
    store.write_atomic("d", "t.json", b"new")
    assert (root / "d/t.json").read_bytes() == b"new"
    assert _all_files(root) == ["d/t.json"]


class _Recorder:
    """Spies on fsync / rename to check the order of the durability steps."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.steps: list[str] = []
        real_fsync, real_replace = os.fsync, os.replace

        def fsync(fd: int) -> None:
            kind = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
            self.steps.append(f"fsync {kind}")
            real_fsync(fd)

        def replace(src, dst, **kwargs) -> None:
            self.steps.append("rename")
            real_replace(src, dst, **kwargs)

        monkeypatch.setattr(filestore.os, "fsync", fsync)
        monkeypatch.setattr(filestore.os, "replace", replace)


def test_the_file_is_fsynced_before_the_rename_and_its_directory_after(store, monkeypatch):
    store.write_atomic("d", "t.json", b"first")  # directories exist from here on
    spy = _Recorder(monkeypatch)
    store.write_atomic("d", "t.json", b"second")
    assert spy.steps == ["fsync file", "rename", "fsync dir"]


def test_directories_created_on_the_way_are_made_durable_in_their_parent(store, root, monkeypatch):
    root.mkdir()
    spy = _Recorder(monkeypatch)
    store.write_atomic("a/b/c", "t.json", b"x")
    # one fsync of the parent per created level, then the file, rename, the directory
    assert spy.steps == ["fsync dir"] * 3 + ["fsync file", "rename", "fsync dir"]


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_a_write_that_fails_keeps_the_previous_result_whole_and_leaves_no_debris(store, root, monkeypatch, failing):
    store.write_atomic("d", "t.json", b"previous")

    def broken(*args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(filestore.os, failing, broken)
    with pytest.raises(Unavailable) as e:
        store.write_atomic("d", "t.json", b"next")
    assert "Input/output error" in e.value.message
    monkeypatch.undo()
    assert (root / "d/t.json").read_bytes() == b"previous"
    assert _all_files(root) == ["d/t.json"]


@pytest.mark.parametrize(
    ("code", "error", "named"),
    [
        (errno.ENOSPC, ResourceExhausted, "no space left on device"),
        (errno.EDQUOT, ResourceExhausted, "quota exceeded"),
        (errno.EROFS, FailedPrecondition, "read-only file system"),
        (errno.EACCES, FailedPrecondition, "permission denied"),
    ],
)
def test_a_write_the_storage_refuses_is_named_with_the_root_and_leaves_no_debris(
    store, root, monkeypatch, code, error, named
):
    def refused(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(filestore.os, "write", refused)
    with pytest.raises(error) as e:
        store.write_atomic("d", "t.json", b"next")
    assert named in e.value.message.lower() and str(store.root) in e.value.message and "d/t.json" in e.value.message
    monkeypatch.undo()
    assert _all_files(root) == []


@pytest.mark.parametrize("relative_dir", ["../outside", "/tmp", "a/../../outside", "..", "a/..", "a\x00b"])
def test_a_directory_outside_the_root_is_refused_before_anything_is_created(store, root, tmp_path, relative_dir):
    with pytest.raises(InvalidArgument):
        store.write_atomic(relative_dir, "t.json", b"x")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("filename", ["", ".", "..", "../t.json", "a/t.json", "t\x00.json"])
def test_a_file_name_that_is_not_one_path_component_is_refused(store, root, filename):
    with pytest.raises(InvalidArgument):
        store.write_atomic("d", filename, b"x")
    assert not root.exists() or _all_files(root) == []


def test_a_symbolic_link_leading_out_of_the_root_is_not_followed(store, root, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.json").write_bytes(b"secret")
    root.mkdir()
    (root / "escape").symlink_to(outside)

    for relative_dir in ("escape", "escape/deeper"):
        with pytest.raises(InvalidArgument) as e:
            store.write_atomic(relative_dir, "t.json", b"x")
        assert "outside the storage root" in e.value.message
    with pytest.raises(InvalidArgument):
        store.open_chunks("escape/secret.json", 4)
    with pytest.raises(InvalidArgument):
        store.exists("escape/secret.json")
    assert _all_files(outside) == ["secret.json"]


def test_a_symbolic_link_inside_the_root_is_fine(store, root):
    (root / "real").mkdir(parents=True)
    (root / "alias").symlink_to(root / "real")
    store.write_atomic("alias", "t.json", b"x")
    assert (root / "real/t.json").read_bytes() == b"x"


@pytest.mark.parametrize("relative_path", ["../etc/passwd", "/etc/passwd", "", "a/../../x"])
def test_reading_outside_the_root_is_refused(store, relative_path):
    with pytest.raises(InvalidArgument):
        store.open_chunks(relative_path, 4)


def test_reading_yields_chunks_of_bounded_size_that_add_up_to_the_file(store):
    content = os.urandom(5 * 1024 + 3)
    path, _, _ = store.write_atomic("d", "t.json", content)
    chunks = list(store.open_chunks(path, 1024))
    assert [len(c) for c in chunks] == [1024] * 5 + [3]
    assert b"".join(chunks) == content


def test_reading_an_empty_file_yields_nothing(store):
    path, size, _ = store.write_atomic("d", "t.json", b"")
    assert size == 0
    assert list(store.open_chunks(path, 1024)) == []


def test_reading_a_missing_file_is_not_found_at_once(store):
    with pytest.raises(NotFound):
        store.open_chunks("d/missing.json", 1024)
    assert not store.exists("d/missing.json")


def test_a_directory_in_the_way_of_a_file_is_refused(store, root):
    (root / "d").mkdir(parents=True)
    (root / "d" / "f").write_bytes(b"")
    with pytest.raises(InvalidArgument):
        store.write_atomic("d/f", "t.json", b"x")


def test_temporary_files_of_writes_cut_short_are_removed_at_start_and_nothing_else(tmp_path):
    store = FileStore(tmp_path)
    store.write_atomic("out", "a.json", b"{}")
    leftover = tmp_path / "out" / ".b.json.0123456789abcdef.tmp"  # a writer killed before its rename
    leftover.write_bytes(b"half")
    os.utime(leftover, (1000.0, 1000.0))
    in_flight = tmp_path / "out" / ".c.json.fedcba9876543210.tmp"  # being written by this process now
    in_flight.write_bytes(b"...")
    lookalike = tmp_path / "out" / ".notes.tmp"
    lookalike.write_bytes(b"not ours")
    os.utime(lookalike, (1000.0, 1000.0))

    assert store.remove_leftovers(older_than=2000.0) == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        ".c.json.fedcba9876543210.tmp",
        ".notes.tmp",
        "a.json",
    ]
    assert FileStore(tmp_path / "missing").remove_leftovers(older_than=2000.0) == 0
