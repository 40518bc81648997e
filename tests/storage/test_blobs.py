"""Blob files: content addressing, dedupe, atomic writes, copy-on-write maps, gc and verify."""

from __future__ import annotations

import errno
import mmap
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xxhash
from awaitly_testing import big_array, blob_files, flip_byte

from awaitly_nb import SerializationError, StateFormatError, StorageError
from awaitly_nb.storage import blobs as blobs_module
from awaitly_nb.storage import values
from awaitly_nb.storage.blobs import BlobStore, GcReport
from awaitly_nb.storage.local import LocalStore

# --- helpers ---------------------------------------------------------------------------------


def check(name: str, size: int, blobs: BlobStore | None = None) -> None:
    """Read the whole blob and compare its hash with its name (what verify does)."""
    assert blobs is not None
    if xxhash.xxh3_128_hexdigest(blobs.open(name, size)) != name:
        raise StateFormatError(f"blob {name} is damaged: its content does not match its hash")


def size_on_disk(blobs: BlobStore, name: str) -> int:
    try:
        return blobs.path(name).stat().st_size
    except FileNotFoundError:
        return 0


def temporaries(directory: Path) -> list[Path]:
    tmp = directory / "tmp"
    return sorted(tmp.iterdir()) if tmp.exists() else []


def age(path: Path, seconds: float) -> None:
    """Make a file look ``seconds`` old."""
    then = time.time() - seconds
    os.utime(path, (then, then))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LocalStore]:
    store = LocalStore(tmp_path / "store")
    yield store
    store.close()


def store_blobs(store: LocalStore) -> list[Path]:
    return blob_files(store.directory / "blobs")


def all_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file())


class FailingWrites:
    """Make ``os.write`` to any file under ``directory`` fail after the first chunk.

    Each such write records whether the file being written is already a
    (final) blob and which blobs exist, so a test can check that no final
    blob appears while the write is in progress.
    """

    def __init__(
        self, monkeypatch: pytest.MonkeyPatch, directory: Path, error: BaseException
    ) -> None:
        self.writes = 0
        self.seen_during_writes: list[tuple[bool, list[Path]]] = []
        real_write = os.write

        def path_of(fd: int) -> Path | None:
            st = os.fstat(fd)
            for path in all_files(directory):
                other = path.stat()
                if (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino):
                    return path
            return None

        def write(fd: int, data: Any) -> int:
            path = path_of(fd)
            if path is None:
                return real_write(fd, data)
            self.writes += 1
            blobs_now = blob_files(directory)
            self.seen_during_writes.append((path in blobs_now, blobs_now))
            if self.writes > 1:
                raise error
            return real_write(fd, data)

        monkeypatch.setattr(blobs_module, "_CHUNK", 64 * 1024)  # several chunks per blob
        monkeypatch.setattr(os, "write", write)


# --- BlobStore -------------------------------------------------------------------------------


def test_a_blob_is_named_by_the_xxh3_128_hash_of_its_content(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    data = os.urandom(100_000)
    name = blobs.put(memoryview(data))
    assert name == xxhash.xxh3_128_hexdigest(data)
    assert blobs.path(name) == tmp_path / name[:2] / name[2:]
    assert blobs.path(name).read_bytes() == data
    assert list(blobs.names()) == [name]
    assert size_on_disk(blobs, name) == len(data)
    assert temporaries(tmp_path) == []


def test_a_big_blob_is_hashed_on_a_second_thread_while_it_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(blobs_module, "_HASH_BESIDE", 1024 * 1024)
    monkeypatch.setattr(blobs_module, "_HASH_SLICE", 256 * 1024)  # several slices
    hashed_on: set[str] = set()
    real = xxhash.xxh3_128

    class Watched:
        def __init__(self) -> None:
            self.inner = real()

        def update(self, data: Any) -> None:
            hashed_on.add(threading.current_thread().name)
            self.inner.update(data)

        def hexdigest(self) -> str:
            return str(self.inner.hexdigest())

    monkeypatch.setattr(blobs_module.xxhash, "xxh3_128", Watched)
    data = os.urandom(3 * 1024 * 1024 + 17)
    name = BlobStore(tmp_path).put(memoryview(data))
    assert name == xxhash.xxh3_128_hexdigest(data)
    assert BlobStore(tmp_path).path(name).read_bytes() == data
    assert hashed_on == {"awaitly-blob-hash"}
    assert temporaries(tmp_path) == []


@pytest.mark.parametrize(
    "error", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()]
)
def test_a_big_blob_whose_write_fails_leaves_nothing_and_no_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    monkeypatch.setattr(blobs_module, "_HASH_BESIDE", 1024 * 1024)
    FailingWrites(monkeypatch, tmp_path, error)
    monkeypatch.setattr(
        blobs_module,
        "_write_all",
        lambda fd, view: (os.write(fd, view[:10]), os.write(fd, view[10:])),
    )
    with pytest.raises((StorageError, KeyboardInterrupt)):
        BlobStore(tmp_path).put(memoryview(os.urandom(2 * 1024 * 1024)))
    assert all_files(tmp_path) == []
    assert not [t for t in threading.enumerate() if t.name == "awaitly-blob-hash"]


def test_put_takes_typed_multidimensional_views_without_changing_the_bytes(
    tmp_path: Path,
) -> None:
    blobs = BlobStore(tmp_path)
    array = big_array().reshape(100, 200)
    name = blobs.put(memoryview(array))
    assert blobs.path(name).read_bytes() == array.tobytes()
    assert name == xxhash.xxh3_128_hexdigest(array.tobytes())


def test_an_empty_blob(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    name = blobs.put(memoryview(b""))
    assert bytes(blobs.open(name, 0)) == b""
    check(name, 0, blobs)


def test_open_maps_the_file_copy_on_write(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    data = os.urandom(200_000)
    name = blobs.put(memoryview(data))
    mapped = blobs.open(name, len(data))
    assert isinstance(mapped, mmap.mmap)
    assert mapped[:] == data
    mapped[0:4] = b"\x00\x01\x02\x03"  # writable
    mapped[-1:] = b"\xff" if data[-1:] != b"\xff" else b"\x00"
    assert mapped[0:4] == b"\x00\x01\x02\x03"
    assert blobs.path(name).read_bytes() == data  # the write never reached the file
    assert blobs.open(name, len(data))[:] == data
    check(name, len(data), blobs)


def test_open_refuses_a_missing_or_wrong_sized_blob(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    name = blobs.put(memoryview(b"0123456789"))
    with pytest.raises(StateFormatError, match=f"blob {name} has 10 bytes, expected 11"):
        blobs.open(name, 11)
    with pytest.raises(StateFormatError, match=r"blob 00ff0+ is missing"):
        blobs.open("00ff" + "0" * 28, 10)


def test_check_reads_everything_and_detects_a_flipped_byte(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    data = os.urandom(300_000)
    name = blobs.put(memoryview(data))
    check(name, len(data), blobs)
    flip_byte(blobs.path(name), offset=len(data) - 1)
    with pytest.raises(StateFormatError, match=f"blob {name} is damaged"):
        check(name, len(data), blobs)


def test_delete(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    name = blobs.put(memoryview(b"x" * 10))
    assert blobs.delete(name) is True
    assert blobs.delete(name) is False
    assert list(blobs.names()) == []
    assert size_on_disk(blobs, name) == 0
    assert list(BlobStore(tmp_path / "never made").names()) == []


# --- dedupe ----------------------------------------------------------------------------------


def test_the_same_content_is_stored_once(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    data = os.urandom(100_000)
    first = blobs.put(memoryview(data))
    second = blobs.put(memoryview(bytearray(data)))
    assert first == second
    assert len(blob_files(tmp_path)) == 1
    assert temporaries(tmp_path) == []  # the second copy's temporary file is gone
    other = blobs.put(memoryview(data[:-1]))
    assert other != first
    assert len(blob_files(tmp_path)) == 2


def test_storing_existing_content_again_makes_it_fresh_for_gc(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    data = os.urandom(100_000)
    name = blobs.put(memoryview(data))
    age(blobs.path(name), 7200)
    assert blobs.put(memoryview(data)) == name  # a save about to refer to it again
    assert time.time() - blobs.path(name).stat().st_mtime < 3600
    assert blobs.collect(set(), min_age=3600) == GcReport(blobs=0, bytes=0, temporaries=0)
    assert blobs.path(name).exists()


def test_storing_content_again_repairs_a_damaged_blob_of_the_same_size(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    data = os.urandom(100_000)
    name = blobs.put(memoryview(data))
    flip_byte(blobs.path(name), offset=500)
    with pytest.raises(StateFormatError, match="is damaged"):
        check(name, len(data), blobs)
    assert blobs.put(memoryview(data)) == name
    check(name, len(data), blobs)


def test_storing_content_again_repairs_a_truncated_or_missing_blob(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    data = os.urandom(100_000)
    name = blobs.put(memoryview(data))
    blobs.path(name).write_bytes(data[:-1])
    assert blobs.put(memoryview(data)) == name
    check(name, len(data), blobs)
    blobs.delete(name)
    assert blobs.put(memoryview(data)) == name
    check(name, len(data), blobs)


def test_a_twice_saved_array_leaves_one_blob_file(store: LocalStore) -> None:
    array = big_array()
    store.save("wf", "a", {}, array)
    store.save("wf", "b", {}, {"again": array.copy()})
    store.save("wf", "a", {}, array)  # saved again under the same key
    (file,) = store_blobs(store)
    assert file.stat().st_size == array.nbytes
    np.testing.assert_array_equal(store.load("wf", "a"), array, strict=True)
    np.testing.assert_array_equal(store.load("wf", "b")["again"], array, strict=True)
    assert store.verify() == []


# --- atomic writes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "raised"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), StorageError),
        (KeyboardInterrupt(), KeyboardInterrupt),
    ],
    ids=["disk full", "interrupted"],
)
def test_an_interrupted_write_leaves_no_blob_and_no_temporary(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    error: BaseException,
    raised: type[BaseException],
) -> None:
    blobs = BlobStore(tmp_path)
    failing = FailingWrites(monkeypatch, tmp_path, error)
    with pytest.raises(raised) as info:
        blobs.put(memoryview(os.urandom(300_000)))
    assert failing.writes == 2
    # while it was writing: not into a blob's final name, and no blob visible
    assert failing.seen_during_writes == [(False, []), (False, [])]
    assert all_files(tmp_path) == []  # no blob, and the temporary file is gone
    if raised is StorageError:
        assert "No space left" in str(info.value)
        assert str(tmp_path) in str(info.value)
        assert isinstance(info.value.__cause__, OSError)


def test_an_unwritable_blob_directory_is_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / "blobs").write_text("a file where the blob directory should be")
    with pytest.raises(StorageError, match="cannot write"):
        BlobStore(tmp_path / "blobs").put(memoryview(b"data"))


@pytest.mark.parametrize(
    ("error", "raised"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), StorageError),
        (KeyboardInterrupt(), KeyboardInterrupt),
    ],
    ids=["disk full", "interrupted"],
)
def test_a_failed_save_leaves_the_previous_entry_intact(
    store: LocalStore,
    monkeypatch: pytest.MonkeyPatch,
    error: BaseException,
    raised: type[BaseException],
) -> None:
    old = {"array": big_array(1), "note": "old"}
    store.save("wf", "k", {"variables": ["old"]}, old)
    old_blobs = store_blobs(store)
    FailingWrites(monkeypatch, store.directory / "blobs", error)
    with pytest.raises(raised):
        store.save("wf", "k", {"variables": ["new"]}, {"array": big_array(2), "note": "new"})
    monkeypatch.undo()
    assert store.manifest("wf", "k").variables == ("old",)
    back = LocalStore(store.directory).load("wf", "k")
    assert back["note"] == "old"
    np.testing.assert_array_equal(back["array"], old["array"], strict=True)
    assert store_blobs(store) == old_blobs
    assert temporaries(store.directory / "blobs") == []
    assert store.verify() == []


def test_a_value_that_cannot_be_pickled_writes_no_blob(store: LocalStore) -> None:
    store.save("wf", "k", {}, "old")
    with pytest.raises(SerializationError):
        store.save("wf", "k", {}, {"array": big_array(), "lock": threading.Lock()})
    assert store_blobs(store) == []
    assert store.load("wf", "k") == "old"


# --- gc --------------------------------------------------------------------------------------


def test_gc_removes_the_blobs_of_deleted_steps_and_keeps_shared_ones(store: LocalStore) -> None:
    own_a, own_b, shared = big_array(1), big_array(2), big_array(3)
    store.save("wf", "a", {}, {"own": own_a, "shared": shared})
    store.save("wf", "b", {}, {"own": own_b, "shared": shared})
    assert len(store_blobs(store)) == 3
    assert store.delete("wf", "a") is True
    assert len(store_blobs(store)) == 3  # blobs go at the next gc, not at delete

    assert store.gc(min_age=0) == GcReport(blobs=1, bytes=own_a.nbytes, temporaries=0)
    left = {p.read_bytes() for p in store_blobs(store)}
    assert left == {own_b.tobytes(), shared.tobytes()}
    back = store.load("wf", "b")
    np.testing.assert_array_equal(back["own"], own_b, strict=True)
    np.testing.assert_array_equal(back["shared"], shared, strict=True)
    assert store.gc(min_age=0) == GcReport(blobs=0, bytes=0, temporaries=0)


def test_gc_removes_the_stream_blob_of_a_deleted_step(store: LocalStore) -> None:
    store.save("wf", "names", {}, [str(i) for i in range(10_000)])
    assert len(store_blobs(store)) == 1
    store.clear("wf")
    assert store.gc(min_age=0).blobs == 1
    assert store_blobs(store) == []


def test_gc_keeps_fresh_orphans(store: LocalStore) -> None:
    store.save("wf", "a", {}, big_array())
    store.delete("wf", "a")
    assert store.gc(min_age=3600) == GcReport(blobs=0, bytes=0, temporaries=0)
    assert len(store_blobs(store)) == 1  # maybe a save in another kernel is about to use it
    age(store_blobs(store)[0], 7200)
    assert store.gc(min_age=3600).blobs == 1
    assert store_blobs(store) == []


def test_gc_removes_stale_temporary_files_only(store: LocalStore) -> None:
    store.save("wf", "a", {}, big_array())  # creates blobs/tmp
    tmp = store.directory / "blobs" / "tmp"
    stale, fresh = tmp / "blob-stale", tmp / "blob-fresh"
    stale.write_bytes(b"half a blob")
    fresh.write_bytes(b"a blob being written")
    age(stale, 7200)
    assert store.gc(min_age=3600) == GcReport(blobs=0, bytes=0, temporaries=1)
    assert not stale.exists()
    assert fresh.exists()
    assert len(store_blobs(store)) == 1  # still referenced
    assert store.gc(min_age=0).temporaries == 1
    assert not fresh.exists()


def test_gc_on_an_empty_store(store: LocalStore) -> None:
    assert store.gc(min_age=0) == GcReport(blobs=0, bytes=0, temporaries=0)


# --- verify ----------------------------------------------------------------------------------


def test_verify_is_clean_on_a_good_store(store: LocalStore) -> None:
    store.save("wf", "small", {}, {"x": 1})
    store.save("wf", "big", {}, big_array())
    store.save("other", "stream", {}, [str(i) for i in range(10_000)])
    assert store.verify() == []


def test_verify_reports_orphans_until_gc(store: LocalStore) -> None:
    store.save("wf", "a", {}, big_array(1))
    store.save("wf", "b", {}, big_array(2))
    store.delete("wf", "a")
    assert store.verify() == ["1 blob(s) no step refers to (run gc)"]
    store.gc(min_age=0)
    assert store.verify() == []


def test_verify_reads_every_blob_even_above_the_load_check_limit(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    array = big_array()
    store.save("wf", "big", {}, array)
    store.save("wf", "fine", {}, big_array(1))
    (damaged,) = [p for p in store_blobs(store) if p.read_bytes() == array.tobytes()]
    flip_byte(damaged, offset=80_000)

    with pytest.raises(StateFormatError, match="is damaged"):  # checked below the limit
        store.load("wf", "big")

    # A value bigger than the limit is only size-checked when it loads: make this one "big".
    # read_value binds the limit as a keyword default, so patch the default, not the constant.
    defaults = values.read_value.__kwdefaults__
    assert defaults is not None and defaults["verify_limit"] == values.VERIFY_LIMIT
    monkeypatch.setitem(defaults, "verify_limit", 1024)
    loaded = store.load("wf", "big")
    assert not np.array_equal(loaded, array)  # the damage went unnoticed on load
    assert np.count_nonzero(loaded != array) == 1

    problems = store.verify()
    assert len(problems) == 1
    assert problems[0].startswith("wf / big: blob ")
    assert "is damaged" in problems[0]


def test_verify_reports_missing_blobs_and_damaged_index_records(store: LocalStore) -> None:
    store.save("wf", "gone", {}, big_array())
    store.save("wf", "bad", {}, 1)
    store_blobs(store)[0].unlink()
    store.index.set(("step", "wf", "bad"), "not a record")
    problems = store.verify()
    assert len(problems) == 2
    assert "wf / gone: blob" in problems[0] and "is missing" in problems[0]
    assert problems[1] == "wf / bad: the index record is damaged"
