"""Big values over the network: blob parts move on several threads, in a bounded
window, and are hashed and written to the local cache in order as they arrive."""

from __future__ import annotations

import json
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_shared import KEY

import awaitly_nb.progress as progress
import awaitly_nb.storage.shared as shared
from awaitly_nb.errors import StateFormatError
from awaitly_nb.storage.adapters import MemoryAdapter
from awaitly_nb.storage.shared import SharedStore, open_shared_store

PART = 64 * 1024


@pytest.fixture(autouse=True)
def _small_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shared, "PART", PART)


class Watched(MemoryAdapter):
    """An adapter that counts calls in flight (each part takes a moment to move)."""

    concurrent = True

    def __init__(self, data: dict[str, Any] | None = None, delay: float = 0.01) -> None:
        super().__init__(data)
        self.delay, self.lock = delay, threading.Lock()
        self.running = self.most = 0
        self.gets: list[str] = []
        self.fail_at: str | None = None

    def _moving(self, key: str) -> None:
        if not key.startswith("blob:") or key.endswith(":meta"):
            return
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(self.delay)
        with self.lock:
            self.running -= 1

    def get(self, key: str) -> Any:
        self._moving(key)
        self.gets.append(key)
        if key == self.fail_at:
            raise KeyboardInterrupt  # Ctrl-C while this part was downloading
        return super().get(key)

    def set(self, key: str, value: Any) -> None:
        self._moving(key)
        super().set(key, value)


def _array(parts: int) -> np.ndarray:
    return np.random.default_rng(parts).random(parts * PART // 8)


def test_parts_move_in_parallel_within_the_window(tmp_path: Path) -> None:
    adapter = Watched()
    array = _array(20)
    SharedStore(adapter, tmp_path / "alice", key=KEY).save("wf", "big", {}, array)
    assert len(adapter.keys("blob:*:[0-9]*")) == 20
    assert 1 < adapter.most <= shared.WORKERS  # uploads

    adapter.most = 0
    loaded = SharedStore(adapter, tmp_path / "bob", key=KEY).load("wf", "big")
    np.testing.assert_array_equal(loaded, array)
    assert 1 < adapter.most <= shared.WORKERS  # downloads


def test_an_adapter_that_is_not_thread_safe_moves_one_part_at_a_time(tmp_path: Path) -> None:
    adapter = Watched()
    adapter.concurrent = False  # type: ignore[misc]
    array = _array(6)
    SharedStore(adapter, tmp_path / "a", key=KEY).save("wf", "big", {}, array)
    np.testing.assert_array_equal(
        SharedStore(adapter, tmp_path / "b", key=KEY).load("wf", "big"), array
    )
    assert adapter.most == 1


def test_a_download_streams_to_the_cache_without_holding_the_value(tmp_path: Path) -> None:
    url = (tmp_path / "team").as_uri()
    array = _array(160)  # 10 MB in 160 parts
    open_shared_store(url, tmp_path / "alice", key=KEY).save("wf", "big", {}, array)
    reader = open_shared_store(url, tmp_path / "bob", key=KEY)
    entry = reader.entry("wf", "big")
    assert entry is not None
    (ref,) = entry.blob_refs()

    tracemalloc.start()
    try:
        reader.blobs.ensure(ref.name, ref.size)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < (shared.WORKERS + 4) * PART < array.nbytes / 4
    np.testing.assert_array_equal(reader.load("wf", "big"), array)


def test_a_part_changed_in_the_store_is_caught_and_nothing_is_cached(tmp_path: Path) -> None:
    adapter = Watched(delay=0)
    SharedStore(adapter, tmp_path / "a", key=KEY).save("wf", "big", {}, _array(8))
    (part,) = [k for k in adapter.keys("blob:*:5")]
    data = bytearray(adapter.data[part])
    data[7] ^= 0xFF
    adapter.data[part] = bytes(data)

    reader = SharedStore(adapter, tmp_path / "b", key=KEY)
    entry = reader.entry("wf", "big")
    assert entry is not None
    (ref,) = entry.blob_refs()
    with pytest.raises(StateFormatError, match="damaged"):
        reader.blobs.ensure(ref.name, ref.size)
    assert not [p for p in (tmp_path / "b").rglob("*") if p.is_file()]


def test_a_part_of_the_wrong_length_is_caught(tmp_path: Path) -> None:
    adapter = Watched(delay=0)
    SharedStore(adapter, tmp_path / "a", key=KEY).save("wf", "big", {}, _array(4))
    (part,) = adapter.keys("blob:*:1")
    adapter.data[part] = adapter.data[part][:-8]
    reader = SharedStore(adapter, tmp_path / "b", key=KEY)
    entry = reader.entry("wf", "big")
    assert entry is not None
    (ref,) = entry.blob_refs()
    with pytest.raises(StateFormatError, match="damaged"):
        reader.blobs.ensure(ref.name, ref.size)


def test_an_interrupted_download_leaves_nothing_and_does_not_wait_for_the_rest(
    tmp_path: Path,
) -> None:
    adapter = Watched(delay=0.05)
    SharedStore(adapter, tmp_path / "a", key=KEY).save("wf", "big", {}, _array(40))
    reader = SharedStore(adapter, tmp_path / "b", key=KEY)
    entry = reader.entry("wf", "big")
    assert entry is not None
    (ref,) = entry.blob_refs()
    adapter.fail_at, adapter.gets = f"blob:{ref.name}:3", []
    with pytest.raises(KeyboardInterrupt):
        reader.blobs.ensure(ref.name, ref.size)
    time.sleep(0.3)  # parts already running finish; none starts after the interrupt
    fetched = [k for k in adapter.gets if not k.endswith(":meta")]
    assert len(fetched) <= 3 + shared.WORKERS + 1 < 40
    assert not [p for p in (tmp_path / "b").rglob("*") if p.is_file()]


def test_a_blob_uploaded_in_the_old_64_mb_parts_still_downloads(tmp_path: Path) -> None:
    adapter = Watched(delay=0)
    array = _array(3)
    SharedStore(adapter, tmp_path / "a", key=KEY).save("wf", "big", {}, array)
    (meta_key,) = adapter.keys("blob:*:meta")
    name = meta_key.split(":")[1]
    whole = b"".join(adapter.data.pop(f"blob:{name}:{i}") for i in range(3))
    adapter.data[f"blob:{name}:0"] = whole  # one part, as 0.2 wrote a blob under 64 MB
    adapter.data[meta_key] = json.dumps({"size": len(whole), "parts": 1, "uploaded_at": 1.0})
    loaded = SharedStore(adapter, tmp_path / "b", key=KEY).load("wf", "big")
    np.testing.assert_array_equal(loaded, array)


def test_a_damaged_blob_meta_is_uploaded_again(tmp_path: Path) -> None:
    adapter = Watched(delay=0)
    array = _array(2)
    SharedStore(adapter, tmp_path / "a", key=KEY).save("wf", "big", {}, array)
    (meta_key,) = adapter.keys("blob:*:meta")
    adapter.data[meta_key] = b"{not json"
    SharedStore(adapter, tmp_path / "a", key=KEY).save("wf", "again", {}, array)
    np.testing.assert_array_equal(
        SharedStore(adapter, tmp_path / "b", key=KEY).load("wf", "big"), array
    )


def test_big_transfers_show_a_progress_bar_and_small_ones_do_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(progress, "PROGRESS_MIN_BYTES", 4 * PART)
    adapter = Watched(delay=0)
    SharedStore(adapter, tmp_path / "a", key=KEY).save("wf", "small", {}, _array(2))
    SharedStore(adapter, tmp_path / "b", key=KEY).load("wf", "small")
    assert "upload" not in capsys.readouterr().err

    SharedStore(adapter, tmp_path / "a", key=KEY).save("wf", "big", {}, _array(8))
    assert "upload" in capsys.readouterr().err
    SharedStore(adapter, tmp_path / "b", key=KEY).load("wf", "big")
    drawn = capsys.readouterr().err
    assert "[awaitly_nb] download" in drawn and "512k" in drawn.lower()


def test_a_many_part_value_round_trips_through_every_shared_store(
    shared_url: str, tmp_path: Path
) -> None:
    array = _array(12)
    open_shared_store(shared_url, tmp_path / "alice", key=KEY).save("wf", "big", {}, array)
    reader = open_shared_store(shared_url, tmp_path / "bob", key=KEY)
    np.testing.assert_array_equal(reader.load("wf", "big"), array)
    assert reader.verify() == []


def test_a_damaged_blob_is_uploaded_again_by_the_next_save_of_it(tmp_path: Path) -> None:
    adapter = Watched(delay=0)
    array = _array(4)
    SharedStore(adapter, tmp_path / "alice", key=KEY).save("wf", "big", {}, array)
    (part,) = adapter.keys("blob:*:2")
    adapter.data[part] = b"\x00" * len(adapter.data[part])  # same length, other bytes

    bob = SharedStore(adapter, tmp_path / "bob", key=KEY)
    with pytest.raises(StateFormatError, match="damaged"):
        bob.load("wf", "big")
    bob.save("wf", "big", {}, array)  # the step ran again in bob's kernel
    carol = SharedStore(adapter, tmp_path / "carol", key=KEY)
    np.testing.assert_array_equal(carol.load("wf", "big"), array)  # repaired


def test_verify_reads_the_store_not_a_cached_copy(tmp_path: Path) -> None:
    adapter = Watched(delay=0)
    alice = SharedStore(adapter, tmp_path / "alice", key=KEY)
    alice.save("wf", "big", {}, _array(4))
    assert alice.verify() == []
    (part,) = adapter.keys("blob:*:1")
    adapter.data[part] = b"\x01" * len(adapter.data[part])
    problems = alice.verify()  # alice's own cached copy is fine; the store's is not
    assert len(problems) == 1 and "damaged" in problems[0]


def test_an_import_repairs_a_damaged_blob(tmp_path: Path) -> None:
    from awaitly_nb.sharing.transfer import export_steps, import_steps
    from awaitly_nb.storage.local import LocalStore

    array = _array(3)
    local = LocalStore(tmp_path / "local")
    local.save("wf", "big", {}, array)
    bundle = tmp_path / "b.awnb"
    export_steps(local, bundle, key=KEY)
    adapter = Watched(delay=0)
    shared = SharedStore(adapter, tmp_path / "alice", key=KEY)
    shared.save("wf", "big", {}, array)
    (part,) = adapter.keys("blob:*:0")
    adapter.data[part] = b"\x02" * len(adapter.data[part])

    import_steps(SharedStore(adapter, tmp_path / "importer", key=KEY), bundle, key=KEY)
    fresh = SharedStore(adapter, tmp_path / "bob", key=KEY)
    np.testing.assert_array_equal(fresh.load("wf", "big"), array)
    assert fresh.verify() == []
