"""MemoryAdapter and DiskCacheAdapter: the key/value stores behind create_state_persistence."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import diskcache
import pytest

from awaitly_nb import DiskCacheAdapter, MemoryAdapter


@pytest.fixture(params=["memory", "diskcache"])
def adapter(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "memory":
        return MemoryAdapter()
    adapter = DiskCacheAdapter(tmp_path / "store")
    request.addfinalizer(adapter.close)
    return adapter


def test_get_set_delete_exists(adapter: Any) -> None:
    assert adapter.get("k") is None
    assert adapter.exists("k") is False
    adapter.set("k", "text")
    assert adapter.get("k") == "text"
    assert adapter.exists("k") is True
    adapter.set("k", "replaced")
    assert adapter.get("k") == "replaced"
    assert adapter.delete("k") is True
    assert adapter.delete("k") is False
    assert adapter.get("k") is None


def test_keys_takes_a_glob_pattern_and_returns_sorted_keys(adapter: Any) -> None:
    for key in ["workflow:state:a", "workflow:state:c", "workflow:state:b", "other:a", "wf:x"]:
        adapter.set(key, "{}")
    assert adapter.keys("workflow:state:*") == [
        "workflow:state:a",
        "workflow:state:b",
        "workflow:state:c",
    ]
    assert adapter.keys("*:a") == ["other:a", "workflow:state:a"]
    assert adapter.keys("workflow:state:?") == [
        "workflow:state:a",
        "workflow:state:b",
        "workflow:state:c",
    ]
    assert adapter.keys("[[]*") == []
    adapter.set("[x]", "{}")
    assert adapter.keys("[[]*") == ["[x]"]


def test_keys_is_case_sensitive(adapter: Any) -> None:
    adapter.set("Upper", "{}")
    assert adapter.keys("upper") == []
    assert adapter.keys("Upper") == ["Upper"]


def test_diskcache_adapter_persists_in_its_directory(tmp_path: Path) -> None:
    first = DiskCacheAdapter(tmp_path)
    first.set("k", "saved")
    first.close()
    second = DiskCacheAdapter(str(tmp_path))
    try:
        assert second.get("k") == "saved"
        assert second.keys("*") == ["k"]
    finally:
        second.close()


def test_diskcache_adapter_shares_an_open_cache(tmp_path: Path) -> None:
    with diskcache.Cache(str(tmp_path)) as shared:
        adapter = DiskCacheAdapter(shared)
        assert adapter.cache is shared
        adapter.set("k", "v")
        assert shared.get("k") == "v"


def test_diskcache_adapter_lists_only_text_keys_and_damage_is_reported(tmp_path: Path) -> None:
    from awaitly_nb import StateFormatError, create_state_persistence

    with diskcache.Cache(str(tmp_path)) as shared:
        shared.set(1, "int key")
        shared.set("workflow:state:k", 42)
        adapter = DiskCacheAdapter(shared)
        assert adapter.keys("*") == ["workflow:state:k"]
        persistence = create_state_persistence(adapter)
        assert persistence.exists("k") is True
        # Something that is not saved text is damage, not absence.
        with pytest.raises(StateFormatError, match="int"):
            persistence.load("k")
