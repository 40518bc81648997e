"""create_file_cache: a persistent step cache that honours its TTL and survives damage."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
import types
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import diskcache
import pytest

from awaitly_nb import (
    CacheWarning,
    FileCache,
    SerializationError,
    StepEntry,
    StepMeta,
    create_file_cache,
    create_workflow,
)
from awaitly_nb.storage.serialize import dumps_envelope


@pytest.fixture
def gone_module(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """An object whose class lives in a module that can be made to disappear.

    While the module is in ``sys.modules`` cloudpickle pickles the object by
    reference; after ``remove()`` the pickled bytes name a module that does not
    exist, so they cannot be unpickled.
    """
    name = "awaitly_nb_tests_gone_module"
    module = types.ModuleType(name)

    class Gone:
        def __init__(self) -> None:
            self.x = 1

    Gone.__module__ = name
    Gone.__qualname__ = "Gone"
    module.Gone = Gone  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, name, module)
    return SimpleNamespace(
        name=name, obj=Gone(), remove=lambda: monkeypatch.delitem(sys.modules, name)
    )


class Counted:
    def __init__(self, value: Any = None) -> None:
        self.value = value
        self.calls = 0

    def __call__(self) -> Any:
        self.calls += 1
        return self.value


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


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not an envelope at all", "magic"),
        (dumps_envelope("x")[:-3], "truncated"),
        (b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00K\x01.", "magic"),  # a bare pickle
    ],
    ids=["garbage", "truncated", "bare pickle"],
)
def test_foreign_or_corrupted_entry_is_a_miss_with_a_warning(
    tmp_path: Path, raw: bytes, reason: str
) -> None:
    with diskcache.Cache(str(tmp_path)) as raw_cache:
        raw_cache.set("user:1", raw)
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
        data = bytearray(raw_cache.get("k"))
        data[-10] ^= 0xFF
        raw_cache.set("k", bytes(data))
    with create_file_cache(tmp_path) as cache, pytest.warns(CacheWarning, match="'k'.*checksum"):
        assert cache.get("k") is None


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
    with create_file_cache(tmp_path) as cache, pytest.warns(CacheWarning, match="'k'"):
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
