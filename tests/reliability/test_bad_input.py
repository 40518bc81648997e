"""Bad keys and bad blob names: stored safely, or refused clearly; never a path outside.

Guarantees: a step key is data, never a path. Keys with path separators,
``..``, absolute paths, 10,000 characters, or that are not strings at all,
given to ``awaitly_nb.step``, ``%%step``, :class:`StepStore`,
:class:`FileCache`, ``create_workflow`` steps, or a ``file://`` shared store,
are either stored safely (the round trip works, including a bundle export and
import, and every file created lies inside the store's folder: the whole of
``tmp_path`` is listed before and after) or refused with
:class:`InvalidKeyError` (NUL characters, empty or non-string keys in the
notebook and workflow APIs). A record (damaged, or from a malicious bundle)
naming a blob ``../../x`` raises :class:`StateFormatError`; no file outside
the store is read, written or deleted, by loads, ``verify`` or ``gc``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from awaitly_testing import close_session_stores, ipython_shell

import awaitly_nb
from awaitly_nb import InvalidKeyError, StateFormatError
from awaitly_nb.config import get_session
from awaitly_nb.sharing.bundle import export_bundle, import_bundle
from awaitly_nb.storage.local import LocalStore
from awaitly_nb.storage.manifest import StepManifest
from awaitly_nb.storage.shared import open_shared_store

WF = "wf"
DEPTH = ("a", "b", "c", "d")  # stores live this deep, so "../.." still lands inside tmp_path

PATH_KEYS = [
    "../../etc/passwd",
    "a/b\\c",
    "..",
    ".",
    "/",
    "../../../../escape",
    "~/x",
    "C:\\Windows\\x",
    "index/cache.db",
    "blobs/tmp/x",
    "a\nb\tc",
    "*?[]",
    "x" * 10_000,
    "ключ/ü/🙂",
]
ABSOLUTE = "<absolute path inside tmp_path>"  # replaced by the test with a real one
STR_KEYS = [*PATH_KEYS, ABSOLUTE]
NON_STR_KEYS = [1, None, b"bytes", ("t", 1)]
REFUSED_STR_KEYS = ["a\x00b", ""]


def key_id(key: Any) -> str:
    text = repr(key)
    return text if len(text) < 30 else f"{text[:12]}...({len(key)})"


# --- helpers ----------------------------------------------------------------------------------


def every_path(root: Path) -> set[Path]:
    return {Path(dirpath) / name for dirpath, dirs, files in os.walk(root) for name in dirs + files}


@contextlib.contextmanager
def only_inside(root: Path, *allowed: Path) -> Iterator[None]:
    """Fail if anything under ``root`` but outside ``allowed`` is created or deleted."""
    before = every_path(root)
    yield
    after = every_path(root)
    outside = {p for p in after ^ before if not any(p == a or a in p.parents for a in allowed)}
    assert not outside, f"files outside the store: {sorted(map(str, outside))[:5]}"


def real_key(key: Any, root: Path) -> Any:
    return str(root / "absolute-escape") if key == ABSOLUTE else key


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """``tmp_path``, with the working directory a few levels down (relative paths stay inside)."""
    cwd = tmp_path.joinpath(*DEPTH, "cwd")
    cwd.mkdir(parents=True)
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("AWAITLY_NB_DIR", raising=False)
    monkeypatch.delenv("AWAITLY_NB_STORE", raising=False)
    yield tmp_path
    close_session_stores()
    awaitly_nb.configure(dir=None, workflow=None)


def store_dir(root: Path, name: str = "store") -> Path:
    return root.joinpath(*DEPTH, name)


def stored_or_refused(action: Callable[[], Any]) -> Any:
    """Run ``action``; an InvalidKeyError (a clear refusal) is fine and returns the error."""
    try:
        return action()
    except InvalidKeyError as exc:
        assert "key" in str(exc)
        return exc


def round_trip_bundle(store: LocalStore, root: Path, workflow: Any, key: Any, value: Any) -> None:
    """Export the store, import it into another store: the step comes back the same."""
    bundle = store_dir(root, "bundle.awnb")
    export_bundle(store, bundle)
    other = LocalStore(store_dir(root, "other"))
    try:
        import_bundle(other, bundle, trust=True)
        assert other.load(workflow, key) == value
    finally:
        other.close()


# --- StepStore ------------------------------------------------------------------------------


@pytest.mark.parametrize("key", STR_KEYS, ids=key_id)
@pytest.mark.parametrize("as_", ["key", "workflow"])
def test_step_store_keeps_any_string_key_inside_its_folder(root: Path, key: str, as_: str) -> None:
    key = real_key(key, root)
    workflow, step_key = (WF, key) if as_ == "key" else (key, "k")
    value = {"key": key, "data": bytes(range(256)) * 400}  # 100 KB: an out-of-band blob
    with only_inside(
        root, store_dir(root), store_dir(root, "other"), store_dir(root, "bundle.awnb")
    ):
        store = LocalStore(store_dir(root))
        store.save(workflow, step_key, {"note": "x"}, value)
        assert store.load(workflow, step_key) == value
        assert store.manifest(workflow, step_key).key == step_key
        assert sorted({wf for wf, _ in store.step_keys()}) == [workflow]
        assert store.verify() == []
        round_trip_bundle(store, root, workflow, step_key, value)
        assert store.delete(workflow, step_key)
        store.gc(min_age=0)
        assert store.verify() == []
        store.close()


@pytest.mark.parametrize("key", NON_STR_KEYS, ids=key_id)
def test_step_store_refuses_or_fully_supports_non_string_keys(root: Path, key: Any) -> None:
    with only_inside(
        root, store_dir(root), store_dir(root, "other"), store_dir(root, "bundle.awnb")
    ):
        store = LocalStore(store_dir(root))
        store.save(WF, "plain", {}, 0)
        saved = stored_or_refused(lambda: store.save(WF, key, {}, 1))
        if not isinstance(saved, InvalidKeyError):
            assert store.load(WF, key) == 1
            store.save(key, "k", {}, 2)
            assert store.load(key, "k") == 2
            assert len({wf for wf, _ in store.step_keys()}) == 2
            assert len(store.manifests()) == 3
            assert store.verify() == []
            round_trip_bundle(store, root, WF, key, 1)
        else:  # refused: nothing of it was stored
            assert [m.key for m in store.manifests()] == ["plain"]
            assert sorted({wf for wf, _ in store.step_keys()}) == [WF]
        store.close()


# --- FileCache and create_workflow ------------------------------------------------------------

SURROGATE = pytest.param("\ud800", id="lone-surrogate")


@pytest.mark.parametrize(
    "key", [*STR_KEYS, *NON_STR_KEYS, *REFUSED_STR_KEYS, SURROGATE], ids=key_id
)
def test_file_cache_stores_any_key_inside_its_folder(root: Path, key: Any) -> None:
    key = real_key(key, root)
    with only_inside(root, store_dir(root)):
        cache = awaitly_nb.create_file_cache(store_dir(root))
        value = [key, bytes(100_000)]
        if not isinstance(stored_or_refused(lambda: cache.set(key, value)), InvalidKeyError):
            assert cache.has(key)
            assert cache.get(key) == value
            assert cache.delete(key)
            assert cache.get(key) is None
        else:  # refused: nothing of it was stored
            assert list(cache.keys()) == []
        cache.gc(min_age=0)
        cache.close()


@pytest.mark.parametrize("key", STR_KEYS, ids=key_id)
@pytest.mark.parametrize("cache_kind", ["file", "dict"])
def test_workflow_step_keys_are_stored_inside_the_cache(
    root: Path, key: str, cache_kind: str, request: pytest.FixtureRequest
) -> None:
    key = real_key(key, root)
    calls: list[int] = []
    with only_inside(root, store_dir(root)):
        cache: Any = awaitly_nb.create_file_cache(store_dir(root)) if cache_kind == "file" else {}

        def body(step: Any) -> Any:
            return step(lambda: calls.append(1) or [key, len(calls)], key=key)

        assert awaitly_nb.create_workflow(cache=cache)(body) == [key, 1]
        assert awaitly_nb.create_workflow(cache=cache)(body) == [key, 1]  # restored
        assert len(calls) == 1
        if cache_kind == "file":
            cache.close()


@pytest.mark.parametrize("key", [*REFUSED_STR_KEYS, "\ud800", 1, b"bytes", ("t", 1)], ids=key_id)
def test_workflow_refuses_bad_keys(root: Path, key: Any) -> None:
    cache = awaitly_nb.create_file_cache(store_dir(root))
    with pytest.raises(InvalidKeyError, match="key"):
        awaitly_nb.create_workflow(cache=cache)(lambda step: step(lambda: 1, key=key))
    assert len(cache) == 0
    cache.close()


# --- the notebook call form and %%step --------------------------------------------------------


@pytest.mark.parametrize("key", STR_KEYS, ids=key_id)
def test_call_form_keeps_any_string_key_inside_the_store(root: Path, key: str) -> None:
    key = real_key(key, root)
    awaitly_nb.configure(dir=store_dir(root), workflow="nb")
    calls: list[int] = []

    def compute() -> Any:
        calls.append(1)
        return [key, bytes(70_000)]

    with only_inside(root, store_dir(root)):
        first = awaitly_nb.step(compute, key=key)
        again = awaitly_nb.step(compute, key=key)
        assert again == first == [key, bytes(70_000)]
        assert len(calls) == 1
        assert get_session().engine.forget(key)
        get_session().store.gc(min_age=0)
        assert get_session().store.verify() == []


@pytest.mark.parametrize("key", [*REFUSED_STR_KEYS, *NON_STR_KEYS], ids=key_id)
def test_call_form_refuses_bad_keys(root: Path, key: Any) -> None:
    awaitly_nb.configure(dir=store_dir(root), workflow="nb")
    calls: list[int] = []
    # key=None is "no key": the call form needs one (a TypeError that says so).
    error = (InvalidKeyError, TypeError) if key is None else InvalidKeyError
    with pytest.raises(error, match="key"):
        awaitly_nb.step(lambda: calls.append(1), key=key)
    assert calls == []
    assert get_session().engine.steps() == []


@pytest.fixture
def shell(root: Path) -> Iterator[Any]:
    found = ipython_shell()
    awaitly_nb.configure(dir=store_dir(root), workflow="nb")
    baseline = set(found.user_ns)
    yield found
    for name in set(found.user_ns) - baseline:
        del found.user_ns[name]


@pytest.mark.parametrize(
    "key", [k for k in STR_KEYS if " " not in k and "\n" not in k and "\t" not in k], ids=key_id
)
def test_step_cell_keeps_any_key_inside_the_store(root: Path, shell: Any, key: str) -> None:
    shell.user_ns["the_key"] = real_key(key, root)
    runs: list[int] = []
    shell.user_ns["mark"] = lambda: runs.append(1)
    code = "%%step key={the_key}\nmark()\nvalue = [the_key, bytes(70_000)]"
    with only_inside(root, store_dir(root)):
        assert shell.run_cell(code).success
        del shell.user_ns["value"]
        assert shell.run_cell(code).success
        assert runs == [1]
        assert shell.user_ns["value"] == [real_key(key, root), bytes(70_000)]
        assert [m.key for m in get_session().engine.steps()] == [real_key(key, root)]


def test_step_cell_refuses_an_interpolated_nul(root: Path, shell: Any) -> None:
    shell.user_ns["the_key"] = "a\x00b"
    result = shell.run_cell("%%step key={the_key}\nvalue = 1")
    assert not result.success
    assert get_session().engine.steps() == []


# --- a shared store on a local folder (fsspec file://) --------------------------------------------


@pytest.mark.parametrize("key", STR_KEYS, ids=key_id)
def test_file_url_shared_store_keeps_any_key_inside_its_folders(root: Path, key: str) -> None:
    key = real_key(key, root)
    shared, cache = store_dir(root, "shared"), store_dir(root, "cache")
    with only_inside(root, shared, cache):
        store = open_shared_store(shared.as_uri(), cache, key=b"team")
        value = [key, bytes(70_000)]
        store.save(WF, key, {}, value)
        fresh = open_shared_store(shared.as_uri(), store_dir(root, "cache") / "other", key=b"team")
        assert fresh.load(WF, key) == value
        assert [m.key for m in fresh.manifests()] == [key]
        assert fresh.verify() == []


# --- blob names ---------------------------------------------------------------------------------

TRAVERSALS = ["../../x", "../" * 8 + "x", "/etc/passwd", "ab/../../../x", "A" * 32, "0" * 33, ""]


@pytest.fixture
def decoy(root: Path) -> Path:
    """A file where a traversal from the blob folder would land (and more like it)."""
    target = store_dir(root).parent / "x"
    target.write_bytes(b"decoy")
    return target


@pytest.mark.parametrize("name", TRAVERSALS)
@pytest.mark.parametrize("where", ["buffers", "stream_ref"])
def test_a_record_naming_a_blob_outside_is_refused(
    root: Path, decoy: Path, name: str, where: str
) -> None:
    store = LocalStore(store_dir(root))
    store.save(WF, "good", {}, bytes(100_000))
    record = store.entry(WF, "good").record.to_dict()  # type: ignore[union-attr]
    if where == "buffers":
        record["buffers"] = [[name, 5]]
    else:
        record.pop("stream", None)
        record["stream_ref"] = [name, 5]
    # As a damaged or hostile index record would hold it.
    store.write(WF, "evil", {"manifest": StepManifest(WF, "evil").to_dict(), "value": record})

    with only_inside(root, store_dir(root)):
        with pytest.raises(StateFormatError, match="not a blob name"):
            store.load(WF, "evil")
        problems = store.verify()
        assert any(p.startswith(f"{WF} / evil: ") for p in problems)
        store.gc(min_age=0)
        assert store.load(WF, "good") == bytes(100_000)
    assert decoy.read_bytes() == b"decoy"
    store.close()


def tar_bytes(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def bundle_members(store: LocalStore, root: Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    """A real bundle of ``store``, opened up: its manifest and its other members."""
    path = store_dir(root, "real.awnb")
    export_bundle(store, path)
    with tarfile.open(path) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    manifest = json.loads(members.pop("awaitly-bundle.json"))
    return manifest, members


@pytest.mark.parametrize("name", TRAVERSALS[:4])
def test_a_bundle_naming_a_blob_outside_is_refused(root: Path, decoy: Path, name: str) -> None:
    source = LocalStore(store_dir(root, "source"))
    source.save(WF, "k", {}, bytes(100_000))
    manifest, members = bundle_members(source, root)
    (real_name,) = manifest["blobs"]
    data = members.pop(f"blobs/{real_name}")
    manifest["blobs"] = {name: {**manifest["blobs"][real_name]}}
    manifest["steps"][0]["record"]["buffers"] = [[name, len(data)]]
    members[f"blobs/{name}"] = data
    members["awaitly-bundle.json"] = json.dumps(manifest).encode()
    bundle = store_dir(root, "evil.awnb")
    bundle.write_bytes(tar_bytes(members))

    target = LocalStore(store_dir(root))
    with only_inside(root, store_dir(root)), pytest.raises(StateFormatError):
        import_bundle(target, bundle, trust=True)
    assert target.manifests() == []
    assert list(target.blobs.names()) == []
    assert decoy.read_bytes() == b"decoy"
    target.close()


def edited_bundle(root: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """A real bundle of one step whose value is a blob-held pickle stream, edited by ``edit``.

    ``edit`` gets the whole manifest: its ``blobs`` specs and the step's record.
    """
    source = LocalStore(store_dir(root, "source"))
    source.save(WF, "k", {}, [f"row {i}" for i in range(5_000)])  # a stream_ref blob
    manifest, members = bundle_members(source, root)
    source.close()
    assert "stream_ref" in manifest["steps"][0]["record"], "the value did not go to a blob"
    edit(manifest)
    members["awaitly-bundle.json"] = json.dumps(manifest).encode()
    bundle = store_dir(root, "edited.awnb")
    bundle.write_bytes(tar_bytes(members))
    return bundle


def assert_nothing_imported(store: LocalStore) -> None:
    assert store.manifests() == []
    assert list(store.blobs.names()) == []
    tmp = store.directory / "blobs" / "tmp"
    assert not tmp.exists() or not any(tmp.iterdir()), "a staged blob was left behind"


def test_a_float_blob_size_from_a_bundle_is_a_state_format_error(root: Path) -> None:
    def edit(manifest: dict[str, Any]) -> None:
        record = manifest["steps"][0]["record"]
        name, size = record["stream_ref"]
        record["stream_ref"] = [name, float(size)]  # e.g. 5.0: equal to the size, not an int
        manifest["blobs"][name]["size"] = float(size)  # consistent: only the type is wrong

    bundle = edited_bundle(root, edit)
    target = LocalStore(store_dir(root))
    with pytest.raises(StateFormatError, match="bad stream reference"):
        import_bundle(target, bundle, trust=True)
    assert_nothing_imported(target)
    target.close()


def test_an_empty_stream_ref_from_a_bundle_is_refused(root: Path) -> None:
    def edit(manifest: dict[str, Any]) -> None:
        manifest["steps"][0]["record"]["stream_ref"] = []

    target = LocalStore(store_dir(root))
    with pytest.raises(StateFormatError, match="bad stream reference"):
        import_bundle(target, edited_bundle(root, edit), trust=True)
    assert_nothing_imported(target)
    target.close()


def test_an_empty_stream_ref_in_the_index_does_not_break_verify_or_gc(root: Path) -> None:
    store = LocalStore(store_dir(root))
    store.save(WF, "good", {}, [f"row {i}" for i in range(5_000)])
    record = store.entry(WF, "good").record.to_dict()  # type: ignore[union-attr]
    record["stream_ref"] = []
    # As a damaged index record would hold it.
    store.write(WF, "evil", {"manifest": StepManifest(WF, "evil").to_dict(), "value": record})

    with pytest.raises(StateFormatError):
        store.load(WF, "evil")
    problems = store.verify()
    assert [p for p in problems if p.startswith(f"{WF} / evil: ")], problems
    assert not [p for p in problems if p.startswith(f"{WF} / good: ")], problems
    store.gc(min_age=0)  # the good step's blob is still referenced: kept
    assert store.load(WF, "good") == [f"row {i}" for i in range(5_000)]
    store.close()
