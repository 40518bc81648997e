"""Shared stores: Redis (a real redis-server on 127.0.0.1) and fsspec file systems."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from awaitly_testing import ipython_shell

import awaitly_nb
from awaitly_nb import StateFormatError, WorkflowState, create_state_persistence, parse_state
from awaitly_nb.config import get_session
from awaitly_nb.core.state import StepEntry, StepMeta
from awaitly_nb.errors import CacheWarning
from awaitly_nb.storage.adapters import FsspecAdapter, RedisAdapter
from awaitly_nb.storage.shared import PART, adapter_for_url, open_shared_store

KEY = b"team-key"
"""The team key every test here uses (``$AWAITLY_NB_KEY`` for the session's stores)."""


@pytest.fixture
def ip() -> Iterator[Any]:
    shell = ipython_shell()
    yield shell
    shell.user_ns.pop("value", None)


@pytest.fixture(autouse=True)
def _reset(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("AWAITLY_NB_KEY", KEY.decode())
    yield
    awaitly_nb.configure(dir=None, workflow=None, store=None)


def _state() -> WorkflowState:
    return WorkflowState({"user:1": StepEntry({"id": 1}, StepMeta(saved_at=1.0))})


# --- persistence adapters ------------------------------------------------------------------


def test_redis_adapter_with_state_persistence(redis_db: str) -> None:
    persistence = create_state_persistence(RedisAdapter(redis_db))
    persistence.save("wf-123", _state(), {"user_id": "user-1"})
    persistence.save("wf-[odd]*", _state())

    loaded = persistence.load("wf-123")

    assert loaded is not None and loaded["user:1"].value == {"id": 1}
    assert loaded.metadata == {"user_id": "user-1"}
    assert persistence.list() == ["wf-123", "wf-[odd]*"]
    assert persistence.load("nope") is None
    assert persistence.delete("wf-123") is True and persistence.delete("wf-123") is False
    assert persistence.list() == ["wf-[odd]*"]


def test_redis_adapter_prefix_keeps_projects_apart(redis_db: str) -> None:
    one = create_state_persistence(RedisAdapter(redis_db, prefix="project-a:"))
    two = create_state_persistence(RedisAdapter(redis_db, prefix="project-b:"))
    one.save("wf", _state())
    assert one.list() == ["wf"] and two.list() == []


def test_redis_adapter_damaged_state_is_a_state_format_error(redis_db: str) -> None:
    adapter = RedisAdapter(redis_db)
    adapter.set("workflow:state:bad", b"{not json")
    with pytest.raises(StateFormatError):
        create_state_persistence(adapter).load("bad")


@pytest.mark.parametrize("kind", ["memory", "file"])
def test_fsspec_adapter_with_state_persistence(kind: str, tmp_path: Path) -> None:
    url = f"memory://awaitly-{uuid.uuid4().hex}" if kind == "memory" else tmp_path.as_uri()
    adapter = FsspecAdapter(url)
    persistence = create_state_persistence(adapter)
    persistence.save("wf/with/slashes/../and dots", _state())
    persistence.save("wf-2", _state())

    assert persistence.list() == ["wf-2", "wf/with/slashes/../and dots"]
    assert parse_state(persistence.load_raw("wf-2"))["user:1"].value == {"id": 1}
    assert persistence.delete("wf-2") is True and persistence.exists("wf-2") is False
    if kind == "file":  # every key is one file inside the folder, nothing outside it
        assert all(p.parent == tmp_path for p in tmp_path.rglob("*"))


def test_adapter_for_url_picks_the_backend(redis_db: str, tmp_path: Path) -> None:
    assert isinstance(adapter_for_url(redis_db), RedisAdapter)
    assert isinstance(adapter_for_url(tmp_path.as_uri()), FsspecAdapter)
    with pytest.raises(ValueError, match="dir="):
        adapter_for_url(str(tmp_path))


# --- shared step stores --------------------------------------------------------------------


def test_a_teammate_with_an_empty_cache_restores_from_the_shared_store(
    shared_url: str, tmp_path: Path
) -> None:
    calls: list[int] = []
    awaitly_nb.configure(dir=tmp_path / "alice", store=shared_url, workflow="team")
    big = awaitly_nb.step(lambda: calls.append(1) or np.arange(300_000.0), key="big")
    small = awaitly_nb.step(lambda: calls.append(1) or {"n": 1}, key="small")

    awaitly_nb.configure(dir=tmp_path / "bob")  # another machine: nothing cached locally
    again = awaitly_nb.step(lambda: calls.append(1) or None, key="big", pin=True)
    small_again = awaitly_nb.step(lambda: calls.append(1) or None, key="small", pin=True)

    assert calls == [1, 1]  # each computed once, by alice
    np.testing.assert_array_equal(again, big)
    assert small_again == small
    cached = [p for p in (tmp_path / "bob").rglob("*") if p.is_file() and "blobs" in p.parts]
    assert len(cached) == 1  # the blob was read through into bob's local cache
    assert [m.key for m in get_session().engine.steps()] == ["big", "small"]


def test_shared_store_works_with_the_magic(shared_url: str, tmp_path: Path, ip: Any) -> None:
    awaitly_nb.configure(dir=tmp_path / "a", store=shared_url, workflow="nb")
    assert ip.run_cell("%%step key=cell\nvalue = [1, 2, 3]\nprint('ran')").success
    ip.user_ns.pop("value")
    awaitly_nb.configure(dir=tmp_path / "b")
    result = ip.run_cell("%%step key=cell\nvalue = [1, 2, 3]\nprint('ran')")
    assert result.success
    assert ip.user_ns["value"] == [1, 2, 3]
    assert get_session().engine.tracker.restores == 1


def test_big_blobs_are_stored_in_parts(redis_db: str, tmp_path: Path, monkeypatch: Any) -> None:
    import awaitly_nb.storage.shared as shared

    monkeypatch.setattr(shared, "PART", 100_000)
    store = open_shared_store(redis_db, tmp_path / "a", key=KEY)
    array = np.random.default_rng(0).random(50_000)  # 400 KB: 4 parts of 100 KB
    store.save("wf", "k", {}, array)
    adapter = RedisAdapter(redis_db)
    assert len(adapter.keys("blob:*:[0-9]*")) == 4
    np.testing.assert_array_equal(
        open_shared_store(redis_db, tmp_path / "b", key=KEY).load("wf", "k"), array
    )
    assert PART == 8 * 1024 * 1024


def test_damaged_shared_blob_is_a_miss_with_a_warning(redis_db: str, tmp_path: Path) -> None:
    awaitly_nb.configure(dir=tmp_path / "a", store=redis_db, workflow="w")
    awaitly_nb.step(lambda: np.ones(200_000), key="k")
    adapter = RedisAdapter(redis_db)
    (part,) = adapter.keys("blob:*:0")
    data = bytearray(adapter.get(part) or b"")
    data[100] ^= 0xFF
    adapter.set(part, bytes(data))

    awaitly_nb.configure(dir=tmp_path / "b")  # must download the damaged blob
    calls: list[int] = []
    with pytest.warns(CacheWarning, match="'k'.*damaged"):
        value = awaitly_nb.step(lambda: calls.append(1) or np.zeros(2), key="k", pin=True)
    assert calls == [1]
    np.testing.assert_array_equal(value, np.zeros(2))
    assert not [p for p in (tmp_path / "b").rglob("tmp/*") if p.is_file()]  # no leftovers


def test_gc_of_a_shared_store_removes_unreferenced_blobs(shared_url: str, tmp_path: Path) -> None:
    store = open_shared_store(shared_url, tmp_path / "cache", key=KEY)
    store.save("wf", "keep", {}, np.arange(100_000.0))
    store.save("wf", "drop", {}, np.ones(100_000))
    assert len(list(store.blobs.names())) == 2
    assert store.gc(min_age=3600).blobs == 0  # fresh uploads are kept
    store.delete("wf", "drop")
    report = store.gc(min_age=0)
    assert report.blobs == 1 and report.bytes == 800_000
    assert len(list(store.blobs.names())) == 1
    fresh = open_shared_store(shared_url, tmp_path / "other", key=KEY)
    np.testing.assert_array_equal(fresh.load("wf", "keep"), np.arange(100_000.0))
    assert fresh.verify() == []


def test_export_and_import_through_a_shared_store(shared_url: str, tmp_path: Path) -> None:
    awaitly_nb.configure(dir=tmp_path / "local", workflow="w")
    awaitly_nb.step(lambda: np.arange(200_000.0), key="arr")
    awaitly_nb.export_state(tmp_path / "b.awnb")
    awaitly_nb.configure(dir=tmp_path / "team-cache", store=shared_url)
    awaitly_nb.import_state(tmp_path / "b.awnb", trust=True)

    fresh = open_shared_store(shared_url, tmp_path / "elsewhere", key=KEY)
    np.testing.assert_array_equal(fresh.load("w", "arr")["value"], np.arange(200_000.0))


def test_configure_rejects_a_store_that_is_not_a_url(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="dir="):
        awaitly_nb.configure(store=str(tmp_path))


def test_store_url_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"memory://awaitly-env-{uuid.uuid4().hex}"
    monkeypatch.setenv("AWAITLY_NB_STORE", url)
    awaitly_nb.configure(dir=tmp_path / "x", workflow="w")
    awaitly_nb.step(lambda: 5, key="five")
    assert open_shared_store(url, tmp_path / "y", key=KEY).load("w", "five") == {"value": 5}


def test_the_cli_reaches_a_shared_store_from_the_environment_or_store(
    shared_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from awaitly_nb.cli import main

    awaitly_nb.configure(dir=tmp_path / "alice", workflow="team.ipynb", store=shared_url)
    awaitly_nb.step(lambda: np.arange(100_000.0), key="features:v1")
    awaitly_nb.configure(dir=None, workflow=None, store=None)
    monkeypatch.chdir(tmp_path)  # no local store here: only the shared one has the step
    runner = CliRunner()

    listed = runner.invoke(main, ["ls"], env={"AWAITLY_NB_STORE": shared_url})
    assert listed.exit_code == 0, listed.output
    assert "team.ipynb" in listed.output and "features:v1" in listed.output

    shown = runner.invoke(main, ["--store", shared_url, "show", "features:v1"])
    assert shown.exit_code == 0, shown.output
    assert "workflow:  team.ipynb" in shown.output
    verified = runner.invoke(main, ["--store", shared_url, "verify"])
    assert verified.exit_code == 0 and verified.output.endswith(f"{shared_url}: ok\n")

    wrong = runner.invoke(main, ["--store", shared_url, "ls"], env={"AWAITLY_NB_KEY": "WRONG"})
    assert wrong.exit_code == 0 and "no saved steps" in wrong.stdout
    assert wrong.stderr.startswith("warning: shared step 'features:v1' of 'team.ipynb' is refused")
    assert "click" not in wrong.stderr  # no library source lines

    forgot = runner.invoke(main, ["--store", shared_url, "forget", "features:v1"])
    assert forgot.exit_code == 0, forgot.output
    assert open_shared_store(shared_url, tmp_path / "bob", key=KEY).manifests() == []
    assert runner.invoke(main, ["ls"]).exit_code == 1  # the local store was never made


def test_the_cli_exports_imports_clears_and_collects_a_shared_store(
    shared_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from awaitly_nb.cli import main

    awaitly_nb.configure(dir=tmp_path / "alice", workflow="team.ipynb", store=shared_url)
    awaitly_nb.step(lambda: np.arange(100_000.0), key="features:v1")
    awaitly_nb.configure(dir=None, workflow=None, store=None)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    store = ["--store", shared_url]

    bundle = tmp_path / "team.awnb"
    exported = runner.invoke(main, [*store, "export", str(bundle)])
    assert exported.exit_code == 0 and "(signed)" in exported.output, exported.output
    cleared = runner.invoke(main, [*store, "clear", "--yes"])
    assert cleared.exit_code == 0, cleared.output
    assert open_shared_store(shared_url, tmp_path / "x", key=KEY).manifests() == []
    assert runner.invoke(main, [*store, "gc", "--min-age", "0"]).exit_code == 0
    imported = runner.invoke(main, [*store, "import", str(bundle)])
    assert imported.exit_code == 0 and "signed with the team key" in imported.output
    back = open_shared_store(shared_url, tmp_path / "y", key=KEY).load("team.ipynb", "features:v1")
    np.testing.assert_array_equal(back["value"], np.arange(100_000.0))
