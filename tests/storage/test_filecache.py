"""create_file_cache: a persistent step cache that honours its TTL, keeps big values in
memory-mapped blob files, and survives damage."""

from __future__ import annotations

import mmap
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import diskcache
import numpy as np
import pytest
from awaitly_testing import Counted, big_array, blob_files, memory_map_under

from awaitly_nb import (
    CacheWarning,
    FileCache,
    SerializationError,
    StepEntry,
    StepMeta,
    create_file_cache,
    create_workflow,
)
from awaitly_nb.storage.blobs import BlobStore, GcReport
from awaitly_nb.storage.values import write_value


@pytest.fixture
def cache(tmp_path: Path) -> Any:
    with create_file_cache(tmp_path / "cache") as cache:
        yield cache


# --- the StepCache methods -------------------------------------------------------------------


def test_get_set_has_delete_clear(cache: FileCache) -> None:
    assert cache.get("k") is None
    assert cache.has("k") is False
    cache.set("k", {"a": (1, 2)})
    assert cache.get("k") == {"a": (1, 2)}
    assert cache.has("k") is True
    assert "k" in cache
    assert len(cache) == 1
    assert list(cache.keys()) == ["k"]
    assert cache.delete("k") is True
    assert cache.delete("k") is False
    assert cache.has("k") is False
    cache.set("a", 1)
    cache.set("b", 2)
    cache.clear()
    assert len(cache) == 0


def test_stored_none_is_a_value_not_a_miss(cache: FileCache) -> None:
    missing = object()
    cache.set("none", None)
    assert cache.has("none") is True
    assert cache.get("none", missing) is None
    assert cache.get("other", missing) is missing


def test_directory_is_created(tmp_path: Path) -> None:
    where = tmp_path / "a" / "b"
    with create_file_cache(where) as cache:
        cache.set("k", 1)
    assert where.is_dir()


def test_unpicklable_value_is_not_written(cache: FileCache) -> None:
    with pytest.raises(SerializationError):
        cache.set("lock", threading.Lock())
    assert cache.has("lock") is False


# --- ttl -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "seconds"),
    [
        ({}, None),
        ({"ttl": 60}, 60.0),
        ({"ttl": 1.5}, 1.5),
        ({"ttl": timedelta(days=7)}, 604800.0),
        ({"ttl_ms": 250}, 0.25),
        ({"ttl_ms": 7 * 24 * 60 * 60 * 1000}, 604800.0),
    ],
)
def test_ttl_spellings(tmp_path: Path, options: dict[str, Any], seconds: float | None) -> None:
    with create_file_cache(tmp_path, **options) as cache:
        assert cache.ttl == seconds


def test_ttl_and_ttl_ms_together_is_a_type_error(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="not both"):
        create_file_cache(tmp_path, ttl=1, ttl_ms=1000)


@pytest.mark.parametrize(
    "options",
    [{"ttl": 0}, {"ttl": -1}, {"ttl": timedelta(0)}, {"ttl": timedelta(seconds=-5)}, {"ttl_ms": 0}],
)
def test_non_positive_ttl_is_a_value_error(tmp_path: Path, options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="positive"):
        create_file_cache(tmp_path, **options)


@pytest.mark.parametrize("options", [{"ttl": "60"}, {"ttl": True}, {"ttl_ms": "5"}])
def test_ttl_of_the_wrong_type_is_a_type_error(tmp_path: Path, options: dict[str, Any]) -> None:
    with pytest.raises(TypeError, match="ttl"):
        create_file_cache(tmp_path, **options)


def test_entries_expire_after_the_ttl(tmp_path: Path) -> None:
    with create_file_cache(tmp_path, ttl=0.2) as cache:
        cache.set("k", "v")
        assert cache.get("k") == "v"
        time.sleep(0.4)
        assert cache.has("k") is False
        assert cache.get("k") is None


def test_workflow_step_runs_again_after_the_ttl(tmp_path: Path) -> None:
    fn = Counted("value")
    with create_file_cache(tmp_path, ttl=0.2) as cache:
        workflow = create_workflow(cache=cache)
        main = lambda step: step(fn, key="k")  # noqa: E731
        assert workflow(main) == "value"
        assert workflow(main) == "value"
        assert fn.calls == 1
        time.sleep(0.4)
        assert workflow(main) == "value"
        assert fn.calls == 2


# --- as cache= -------------------------------------------------------------------------------


def test_file_cache_as_workflow_cache(tmp_path: Path) -> None:
    fn = Counted({"rows": [1, 2, 3]})
    main = lambda step: step(fn, key="load", name="load rows")  # noqa: E731
    with create_file_cache(tmp_path) as cache:
        assert create_workflow(cache=cache)(main) == {"rows": [1, 2, 3]}
        entry = cache.get("load")
        assert isinstance(entry, StepEntry)
        assert entry.meta.name == "load rows"
    # a new cache object over the same directory
    with create_file_cache(tmp_path) as cache:
        events: list[Any] = []
        assert create_workflow(cache=cache, on_event=events.append)(main) == {"rows": [1, 2, 3]}
    assert fn.calls == 1
    assert [e.type for e in events] == ["workflow_start", "step_cache_hit", "workflow_success"]


def test_plain_dict_as_workflow_cache() -> None:
    fn = Counted(1)
    store: dict[str, Any] = {}
    workflow = create_workflow(cache=store)
    workflow(lambda step: step(fn, key="k"))
    workflow(lambda step: step(fn, key="k"))
    assert fn.calls == 1
    assert store["k"].value == 1


SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from awaitly_nb import create_file_cache, create_workflow

    cache_dir, counter = sys.argv[1], Path(sys.argv[2])

    def expensive():
        with counter.open("a") as f:
            f.write("called\\n")
        return {"answer": 42, "pair": (1, 2)}

    workflow = create_workflow(cache=create_file_cache(cache_dir))
    print(workflow(lambda step: step(expensive, key="expensive:v1")))
    """
)


def test_file_cache_survives_a_new_process(tmp_path: Path) -> None:
    counter = tmp_path / "calls.txt"
    outputs = []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(tmp_path / "cache"), str(counter)],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout.strip())
    assert outputs == ["{'answer': 42, 'pair': (1, 2)}"] * 2
    assert counter.read_text().splitlines() == ["called"]


# --- damaged and foreign entries -------------------------------------------------------------


def _record_without(field: str) -> Any:
    def make(directory: Path) -> Any:
        record = write_value({"x": 1}, BlobStore(directory / "blobs")).to_dict()
        del record[field]
        return record

    return make


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda d: b"not a record at all", "a bytes, not a dict"),
        (lambda d: b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00K\x01.", "a bytes, not a dict"),
        (lambda d: b"AWNB\x01\x10\x00\x00\x00{}", "a bytes, not a dict"),  # an old envelope
        (lambda d: {"answer": 42}, "format None"),
        (lambda d: {**write_value("x", BlobStore(d / "blobs")).to_dict(), "format": 1}, "format 1"),
        (_record_without("stream"), "no pickle stream"),
        (_record_without("buffers"), "bad buffer list"),
    ],
    ids=[
        "garbage",
        "bare pickle",
        "old envelope",
        "foreign dict",
        "old format",
        "no stream",
        "no buffer list",
    ],
)
def test_foreign_or_corrupted_entry_is_a_miss_with_a_warning(
    tmp_path: Path, make: Any, reason: str
) -> None:
    with diskcache.Cache(str(tmp_path)) as raw_cache:
        raw_cache.set("user:1", make(tmp_path))
    fn = Counted("recomputed")
    with create_file_cache(tmp_path) as cache:
        workflow = create_workflow(cache=cache)
        with pytest.warns(CacheWarning, match=f"'user:1'.*{reason}"):
            assert workflow(lambda step: step(fn, key="user:1")) == "recomputed"
        assert fn.calls == 1
        # the entry was replaced by a good one
        assert workflow(lambda step: step(fn, key="user:1")) == "recomputed"
        assert fn.calls == 1


def test_flipped_byte_in_a_stored_entry_is_detected(tmp_path: Path) -> None:
    with create_file_cache(tmp_path) as cache:
        cache.set("k", {"payload": list(range(50))})
    with diskcache.Cache(str(tmp_path)) as raw_cache:
        record = raw_cache.get("k")
        stream = bytearray(record["stream"])
        stream[-10] ^= 0xFF
        raw_cache.set("k", {**record, "stream": bytes(stream)})
    with create_file_cache(tmp_path) as cache, pytest.warns(CacheWarning, match="'k'.*checksum"):
        assert cache.get("k") is None


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


BLOB_DAMAGE = {
    "flipped byte": (_flip, "is damaged"),
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[:-8]), "bytes, expected"),
    "deleted": (lambda p: p.unlink(), "is missing"),
}


def _save_big_step(directory: Path, fn: Counted) -> Path:
    with create_file_cache(directory) as cache:
        workflow = create_workflow(cache=cache)
        np.testing.assert_array_equal(workflow(lambda step: step(fn, key="big")), fn.value)
    assert fn.calls == 1
    (blob,) = blob_files(directory / "blobs")
    return blob


@pytest.mark.parametrize("damage", list(BLOB_DAMAGE), ids=list(BLOB_DAMAGE))
def test_damaged_blob_is_a_miss_with_a_warning_and_the_step_runs_again(
    tmp_path: Path, damage: str
) -> None:
    spoil, reason = BLOB_DAMAGE[damage]
    fn = Counted(big_array())
    spoil(_save_big_step(tmp_path, fn))
    events: list[Any] = []
    with create_file_cache(tmp_path) as cache:
        workflow = create_workflow(cache=cache, on_event=events.append)
        with pytest.warns(CacheWarning, match=f"'big'.*blob .*{reason}"):
            value = workflow(lambda step: step(fn, key="big"))
    np.testing.assert_array_equal(value, fn.value, strict=True)
    assert fn.calls == 2
    assert "step_cache_miss" in [e.type for e in events]


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(
            "flipped byte",
        ),
        "truncated",
        "deleted",
    ],
)
def test_the_recomputed_step_repairs_a_damaged_blob(tmp_path: Path, damage: str) -> None:
    spoil, _ = BLOB_DAMAGE[damage]
    fn = Counted(big_array())
    spoil(_save_big_step(tmp_path, fn))
    with create_file_cache(tmp_path) as cache:
        workflow = create_workflow(cache=cache)
        with pytest.warns(CacheWarning):
            workflow(lambda step: step(fn, key="big"))
        assert fn.calls == 2
    with create_file_cache(tmp_path) as cache, warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)
        value = create_workflow(cache=cache)(lambda step: step(fn, key="big"))
    np.testing.assert_array_equal(value, fn.value, strict=True)
    assert fn.calls == 2  # a hit: the saved entry is good again


def test_entry_referring_to_a_missing_module_is_a_miss_and_the_step_runs_again(
    tmp_path: Path, gone_module: SimpleNamespace
) -> None:
    with create_file_cache(tmp_path) as cache:
        cache.set("obj", StepEntry(gone_module.obj, StepMeta(saved_at=1.0)))
    gone_module.remove()
    fn = Counted("fresh")
    events: list[Any] = []
    with create_file_cache(tmp_path) as cache:
        workflow = create_workflow(cache=cache, on_event=events.append)
        with pytest.warns(CacheWarning, match=f"'obj'.*cannot unpickle.*{gone_module.name}"):
            assert workflow(lambda step: step(fn, key="obj")) == "fresh"
    assert fn.calls == 1
    assert "step_cache_miss" in [e.type for e in events]


def test_foreign_non_bytes_entry_is_a_miss_with_a_warning(tmp_path: Path) -> None:
    with diskcache.Cache(str(tmp_path)) as raw_cache:
        raw_cache.set("k", "a str written by another tool")
    with (
        create_file_cache(tmp_path) as cache,
        pytest.warns(CacheWarning, match="'k'.*a str, not a dict"),
    ):
        assert cache.get("k") is None


# --- values that cannot be saved -------------------------------------------------------------


def _generator() -> Any:
    return (i for i in range(3))


@pytest.mark.parametrize("make", [threading.Lock, _generator], ids=["lock", "generator"])
def test_unpicklable_step_value_is_returned_but_not_recorded(tmp_path: Path, make: Any) -> None:
    calls = []

    def produce() -> Any:
        calls.append(1)
        return make()

    events: list[Any] = []
    with create_file_cache(tmp_path) as cache:
        workflow = create_workflow(cache=cache, on_event=events.append)
        with pytest.warns(CacheWarning, match="'handle'.*cannot be saved"):
            value = workflow(lambda step: step(produce, key="handle"))
        assert type(value) is type(make())
        types = [e.type for e in events]
        assert "step_success" in types
        assert "step_complete" not in types
        assert types[-1] == "workflow_success"
        assert cache.has("handle") is False

        with pytest.warns(CacheWarning):
            workflow(lambda step: step(produce, key="handle"))
    assert len(calls) == 2


def test_repr_names_directory_and_ttl(tmp_path: Path) -> None:
    with create_file_cache(tmp_path, ttl=5) as cache:
        assert str(tmp_path) in repr(cache)
        assert "ttl=5.0" in repr(cache)


# --- big values: blob files, memory maps, gc -------------------------------------------------


def test_a_big_array_survives_a_new_cache_object_and_is_memory_mapped(tmp_path: Path) -> None:
    array = np.random.default_rng(0).standard_normal(200_000)  # 1.6 MB: memory-mapped
    with create_file_cache(tmp_path) as cache:
        cache.set("big", {"array": array})
    (blob,) = blob_files(tmp_path / "blobs")
    assert blob.stat().st_size == array.nbytes
    with create_file_cache(tmp_path) as cache:
        loaded = cache.get("big")["array"]
    np.testing.assert_array_equal(loaded, array, strict=True)
    assert isinstance(memory_map_under(loaded), mmap.mmap)
    assert loaded.flags.writeable
    loaded[:] = 0.0
    assert blob.read_bytes() == array.tobytes()  # copy-on-write: the file is untouched
    with create_file_cache(tmp_path) as cache:
        np.testing.assert_array_equal(cache.get("big")["array"], array, strict=True)


def test_gc_removes_the_blobs_of_overwritten_and_deleted_entries(tmp_path: Path) -> None:
    old, new, kept = big_array(1), big_array(2), big_array(3)
    with create_file_cache(tmp_path) as cache:
        cache.set("k", old)
        cache.set("other", kept)
        cache.set("k", new)
        assert len(blob_files(tmp_path / "blobs")) == 3
        assert cache.gc(min_age=3600) == GcReport(blobs=0, bytes=0, temporaries=0)  # fresh
        assert cache.gc(min_age=0) == GcReport(blobs=1, bytes=old.nbytes, temporaries=0)
        np.testing.assert_array_equal(cache.get("k"), new, strict=True)
        cache.delete("other")
        assert cache.gc(min_age=0).blobs == 1
        assert [p.read_bytes() for p in blob_files(tmp_path / "blobs")] == [new.tobytes()]
        np.testing.assert_array_equal(cache.get("k"), new, strict=True)


def test_clear_removes_the_blob_files(tmp_path: Path) -> None:
    with create_file_cache(tmp_path) as cache:
        cache.set("a", big_array(1))
        cache.set("b", [big_array(2), [str(i) for i in range(10_000)]])
        assert len(blob_files(tmp_path / "blobs")) == 3
        cache.clear()
        assert blob_files(tmp_path / "blobs") == []
        assert len(cache) == 0


def test_gc_removes_the_blobs_of_expired_entries(tmp_path: Path) -> None:
    with create_file_cache(tmp_path, ttl=0.2) as cache:
        cache.set("k", big_array())
        time.sleep(0.4)
        assert cache.gc(min_age=0).blobs == 1
        assert blob_files(tmp_path / "blobs") == []
        assert list(cache.keys()) == []  # the expired entry left the index too
