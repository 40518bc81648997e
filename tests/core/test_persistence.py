"""create_state_persistence over objects, mappings of functions, plain dicts, sync or async."""

from __future__ import annotations

import asyncio
import fnmatch
import inspect
from pathlib import Path
from typing import Any

import pytest

from awaitly_nb import (
    DiskCacheAdapter,
    MemoryAdapter,
    StateFormatError,
    StepEntry,
    StepMeta,
    WorkflowState,
    create_state_persistence,
    create_workflow,
    is_step_complete,
)


def state_of(**values: Any) -> WorkflowState:
    return WorkflowState({k: StepEntry(v, StepMeta(saved_at=1.0)) for k, v in values.items()})


class AsyncAdapter:
    """An adapter whose methods are coroutines (like an async Redis client)."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    async def get(self, key: str) -> str | None:
        await asyncio.sleep(0)
        return self.data.get(key)

    async def set(self, key: str, value: str) -> None:
        await asyncio.sleep(0)
        self.data[key] = value

    async def delete(self, key: str) -> bool:
        return self.data.pop(key, None) is not None

    async def exists(self, key: str) -> bool:
        return key in self.data

    async def keys(self, pattern: str) -> list[str]:
        return [k for k in self.data if fnmatch.fnmatchcase(k, pattern)]


def functions_adapter(store: dict[str, Any]) -> dict[str, Any]:
    return {
        "get": store.get,
        "set": store.__setitem__,
        "delete": lambda key: store.pop(key, None) is not None,
        "exists": lambda key: key in store,
        "keys": lambda pattern: [k for k in store if fnmatch.fnmatchcase(k, pattern)],
    }


@pytest.fixture(params=["memory", "diskcache", "functions", "plain dict"])
def adapter(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "memory":
        return MemoryAdapter()
    if request.param == "diskcache":
        adapter = DiskCacheAdapter(tmp_path / "states")
        request.addfinalizer(adapter.close)
        return adapter
    if request.param == "functions":
        return functions_adapter({})
    return {}


def test_save_load_list_exists_delete(adapter: Any) -> None:
    persistence = create_state_persistence(adapter)
    assert persistence.load("wf-1") is None
    assert persistence.load_raw("wf-1") is None
    assert persistence.exists("wf-1") is False
    assert persistence.list() == []

    assert persistence.save("wf-1", state_of(a=1, b=(2, 3)), {"user_id": "u1"}) is None
    persistence.save("wf-2", state_of())

    loaded = persistence.load("wf-1")
    assert isinstance(loaded, WorkflowState)
    assert loaded["a"].value == 1
    assert loaded["b"].value == (2, 3)
    assert loaded.metadata == {"user_id": "u1"}
    assert is_step_complete(loaded, "b")
    assert persistence.exists("wf-1") is True
    assert persistence.list() == ["wf-1", "wf-2"]

    raw = persistence.load_raw("wf-1")
    assert isinstance(raw, str)
    assert '"user_id": "u1"' in raw

    assert persistence.delete("wf-1") is True
    assert persistence.delete("wf-1") is False
    assert persistence.load("wf-1") is None
    assert persistence.exists("wf-1") is False
    assert persistence.list() == ["wf-2"]


def test_states_are_saved_under_the_prefix() -> None:
    store: dict[str, Any] = {}
    create_state_persistence(store).save("wf-1", state_of(a=1))
    assert list(store) == ["workflow:state:wf-1"]
    assert isinstance(store["workflow:state:wf-1"], str)
    create_state_persistence(store, prefix="mine/").save("wf-1", state_of(a=1))
    assert sorted(store) == ["mine/wf-1", "workflow:state:wf-1"]


def test_list_ignores_keys_outside_the_prefix() -> None:
    adapter = MemoryAdapter()
    adapter.set("other:wf-9", "{}")
    persistence = create_state_persistence(adapter)
    persistence.save("wf-1", state_of())
    assert persistence.list() == ["wf-1"]


@pytest.mark.parametrize("prefix", ["*", "state[1]:", "a?b:", "runs/*/", "x[!y]:", "[a-z]"])
def test_prefix_with_glob_characters_lists_only_its_own_ids(
    prefix: str, adapter: Any, tmp_path: Path
) -> None:
    mine = create_state_persistence(adapter, prefix=prefix)
    mine.save("wf-1", state_of(a=1))
    # keys a glob reading of the prefix would match too
    decoys = {
        "*": ["other:wf-2"],
        "state[1]:": ["state1:wf-2"],
        "a?b:": ["axb:wf-2"],
        "runs/*/": ["runs/other/wf-2"],
        "x[!y]:": ["xz:wf-2", "x!:wf-2"],
        "[a-z]": ["q-wf-2"],
    }[prefix]
    for decoy in decoys:
        create_state_persistence(adapter, prefix="").save(decoy, state_of(b=2))
    assert mine.list() == ["wf-1"]


def test_load_of_damaged_text_raises_state_format_error(adapter: Any) -> None:
    persistence = create_state_persistence(adapter)
    persistence.save("wf-1", state_of(a=1))
    text = persistence.load_raw("wf-1")
    key = "workflow:state:wf-1"
    setter = adapter["set"] if isinstance(adapter, dict) and "set" in adapter else None
    for damaged in (text[: len(text) // 2], text.replace('"value": 1', '"value": 2'), "garbage"):
        if setter is not None:
            setter(key, damaged)
        elif isinstance(adapter, dict):
            adapter[key] = damaged
        else:
            adapter.set(key, damaged)
        with pytest.raises(StateFormatError):
            persistence.load("wf-1")


def test_load_of_stored_bytes_that_are_not_utf8_raises_state_format_error() -> None:
    store: dict[str, Any] = {"workflow:state:wf-1": b"\xff\xfe{"}
    with pytest.raises(StateFormatError):
        create_state_persistence(store).load("wf-1")


def test_bytes_from_the_adapter_are_read_as_text() -> None:
    store: dict[str, Any] = {}
    persistence = create_state_persistence(store)
    persistence.save("wf-1", state_of(a="é"))
    store["workflow:state:wf-1"] = store["workflow:state:wf-1"].encode("utf-8")
    assert persistence.load("wf-1")["a"].value == "é"
    assert persistence.list() == ["wf-1"]


def test_async_adapter_makes_every_method_awaitable() -> None:
    adapter = AsyncAdapter()
    persistence = create_state_persistence(adapter)

    async def scenario() -> None:
        pending = persistence.save("wf-1", state_of(a=[1]), {"m": 1})
        assert inspect.isawaitable(pending)
        assert await pending is None
        for call in (
            lambda: persistence.load("wf-1"),
            lambda: persistence.list(),
            lambda: persistence.exists("wf-1"),
            lambda: persistence.load_raw("wf-1"),
        ):
            result = call()
            assert inspect.isawaitable(result)
            await result
        loaded = await persistence.load("wf-1")
        assert loaded["a"].value == [1]
        assert loaded.metadata == {"m": 1}
        assert await persistence.list() == ["wf-1"]
        assert await persistence.exists("wf-1") is True
        assert isinstance(await persistence.load_raw("wf-1"), str)
        assert await persistence.delete("wf-1") is True
        assert await persistence.delete("wf-1") is False
        assert await persistence.load("wf-1") is None
        assert await persistence.exists("wf-1") is False

    asyncio.run(scenario())
    assert adapter.data == {}


def test_async_mapping_of_functions_works() -> None:
    store: dict[str, str] = {}

    async def get(key: str) -> str | None:
        return store.get(key)

    async def set_(key: str, value: str) -> None:
        store[key] = value

    async def delete(key: str) -> bool:
        return store.pop(key, None) is not None

    async def exists(key: str) -> bool:
        return key in store

    async def keys(pattern: str) -> list[str]:
        return [k for k in store if fnmatch.fnmatchcase(k, pattern)]

    persistence = create_state_persistence(
        {"get": get, "set": set_, "delete": delete, "exists": exists, "keys": keys}
    )

    async def scenario() -> Any:
        await persistence.save("wf-1", state_of(a=1))
        return await persistence.load("wf-1"), await persistence.list()

    loaded, ids = asyncio.run(scenario())
    assert loaded["a"].value == 1
    assert ids == ["wf-1"]


def test_async_adapter_damaged_text_raises_state_format_error_when_awaited() -> None:
    adapter = AsyncAdapter()
    adapter.data["workflow:state:wf-1"] = '{"format": "awaitly_nb/state", "version": 7'
    persistence = create_state_persistence(adapter)
    with pytest.raises(StateFormatError):
        asyncio.run(persistence.load("wf-1"))


def test_diskcache_adapter_persists_across_instances(tmp_path: Path) -> None:
    first = DiskCacheAdapter(tmp_path / "db")
    create_state_persistence(first).save("wf-1", state_of(a={"x": 1}))
    first.close()
    second = DiskCacheAdapter(tmp_path / "db")
    try:
        assert create_state_persistence(second).load("wf-1")["a"].value == {"x": 1}
    finally:
        second.close()


class Partial:
    def get(self, key: str) -> Any:
        return None

    def set(self, key: str, value: str) -> None:
        pass


def test_adapter_object_missing_methods_gives_type_error_naming_them() -> None:
    with pytest.raises(TypeError, match="Partial lacks delete, exists, keys"):
        create_state_persistence(Partial())


def test_adapter_of_the_wrong_type_gives_type_error() -> None:
    with pytest.raises(TypeError, match="lacks"):
        create_state_persistence(42)


def test_mapping_adapter_missing_functions_gives_type_error_naming_exactly_them() -> None:
    functions = functions_adapter({})
    del functions["exists"]
    with pytest.raises(TypeError) as info:
        create_state_persistence(functions)
    message = str(info.value)
    assert "exists" in message.split("lacks", 1)[1]
    for present in ("get", "set", "delete", "keys"):
        assert present not in message.split("lacks", 1)[1]


def test_mapping_adapter_missing_functions_gives_type_error() -> None:
    functions = functions_adapter({})
    del functions["exists"]
    with pytest.raises(TypeError, match="exists"):
        create_state_persistence(functions)


def test_ids_must_be_non_empty_strings() -> None:
    persistence = create_state_persistence(MemoryAdapter())
    with pytest.raises(ValueError, match="workflow id"):
        persistence.save("", state_of())
    with pytest.raises(ValueError, match="workflow id"):
        persistence.load(3)  # type: ignore[arg-type]


def test_saved_state_resumes_a_workflow() -> None:
    persistence = create_state_persistence(MemoryAdapter())
    persistence.save("wf-1", state_of(**{"user:1": {"name": "Ada"}}))
    calls = []
    workflow = create_workflow(resume_state=lambda: persistence.load("wf-1"))
    user = workflow(lambda step: step(lambda: calls.append(1), key="user:1"))
    assert user == {"name": "Ada"}
    assert calls == []
