"""export_state / import_state: one portable bundle file, checksummed, optionally signed.

Alice saves steps in her store and exports them; Bob imports the bundle into a
fresh store and his steps restore without running. A tampered, truncated or
foreign file is refused and leaves Bob's store exactly as it was. Restoring
never runs a step again: the functions Bob passes raise if they are called.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib
import io
import json
import mmap
import os
import shutil
import socket
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from awaitly_testing import blob_files, flip_byte, memory_map_under

import awaitly_nb
from awaitly_nb import AwaitlyError, CacheWarning, StateFormatError, TrustError
from awaitly_nb.storage.codec import versions
from awaitly_nb.storage.local import LocalStore
from awaitly_nb.storage.signing import ENV_KEY

MANIFEST = "awaitly-bundle.json"
SIGNATURE = "awaitly-bundle.sig"
WORKFLOW = "analysis.ipynb"
TEAM_KEY = "team-secret-1"
OTHER_KEY = "someone-elses-key"

# --- the steps Alice saves -------------------------------------------------------------------


def numbers() -> dict[str, Any]:
    return {"n": list(range(10)), "label": "small", "nothing": None}


def text() -> str:
    return "lorem ipsum " * 4_000  # a 48 KB pickle stream: its own blob


def array() -> np.ndarray:
    # 3.2 MB of float64: an out-of-band buffer, restored by memory map (> 1 MB).
    return np.random.default_rng(7).standard_normal(400_000)


def frame() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    return pd.DataFrame({"x": rng.standard_normal(200_000), "g": rng.integers(0, 5, 200_000)})


def nothing() -> None:
    return None


STEPS: dict[str, Callable[[], Any]] = {
    "numbers": numbers,
    "text": text,
    "array": array,
    "nothing": nothing,
}


def must_not_run() -> Any:
    raise AssertionError("the step ran again instead of being restored from the bundle")


# --- helpers ---------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _clean_session(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No team key, no store from the environment; the session is reset afterwards."""
    for var in (ENV_KEY, "AWAITLY_NB_DIR", "JPY_SESSION_NAME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)  # a stray default store lands in tmp_path
    yield
    awaitly_nb.configure(dir=None, workflow=None)


def as_alice(tmp_path: Path) -> Path:
    directory = tmp_path / "alice"
    awaitly_nb.configure(dir=directory, workflow=WORKFLOW)
    return directory


def as_bob(tmp_path: Path) -> Path:
    """A fresh store, same notebook (workflow)."""
    directory = tmp_path / "bob"
    awaitly_nb.configure(dir=directory, workflow=WORKFLOW)
    return directory


def save_steps(steps: dict[str, Callable[[], Any]] = STEPS) -> None:
    for key, fn in steps.items():
        awaitly_nb.step(fn, key=key)


def alice_bundle(tmp_path: Path, **export: Any) -> Path:
    """Alice runs the standard steps and exports them; the session is hers afterwards."""
    as_alice(tmp_path)
    save_steps()
    path = tmp_path / "state.awnb"
    awaitly_nb.export_state(path, **export)
    return path


def temporaries(directory: Path) -> list[Path]:
    tmp = directory / "blobs" / "tmp"
    return sorted(tmp.iterdir()) if tmp.exists() else []


def saved_keys(directory: Path) -> set[tuple[str, str]]:
    store = LocalStore(directory)
    try:
        return {(m.workflow, m.key) for m in store.manifests()}
    finally:
        store.close()


def assert_nothing_imported(directory: Path) -> None:
    """No step, no blob and no temporary file in the store."""
    assert saved_keys(directory) == set()
    assert blob_files(directory / "blobs") == []
    assert temporaries(directory) == []


def members(path: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(path) as tar:
        return {m.name: m for m in tar.getmembers()}


def member_bytes(path: Path) -> dict[str, bytes]:
    """Every member of the bundle, in order."""
    out = {}
    with tarfile.open(path) as tar:
        for m in tar.getmembers():
            f = tar.extractfile(m)
            assert f is not None
            out[m.name] = f.read()
    return out


def read_manifest(path: Path) -> dict[str, Any]:
    return json.loads(member_bytes(path)[MANIFEST])  # type: ignore[no-any-return]


def rewrite(path: Path, change: Callable[[dict[str, bytes]], None]) -> None:
    """Rewrite the bundle with its members (name -> bytes) changed by ``change``."""
    contents = member_bytes(path)
    change(contents)
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in contents.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), int(time.time())
            tar.addfile(info, io.BytesIO(data))


def edit_manifest(path: Path, edit: Callable[[dict[str, Any]], Any]) -> None:
    """Change the manifest JSON (the old signature, if any, stays)."""

    def change(contents: dict[str, bytes]) -> None:
        manifest = json.loads(contents[MANIFEST])
        edit(manifest)
        contents[MANIFEST] = json.dumps(manifest, sort_keys=True, ensure_ascii=False).encode()

    rewrite(path, change)


def blob_names_of(manifest: dict[str, Any], key: str) -> list[str]:
    """The blobs one step of a bundle manifest refers to."""
    (step,) = [s for s in manifest["steps"] if s["key"] == key]
    record = step["record"]
    names = [name for name, _ in record.get("buffers", [])]
    if record.get("stream_ref"):
        names.append(record["stream_ref"][0])
    return names


# --- round trips -----------------------------------------------------------------------------


def test_round_trip_restores_every_step_in_a_fresh_store_without_running(tmp_path: Path) -> None:
    path = alice_bundle(tmp_path)
    bob = as_bob(tmp_path)
    assert saved_keys(bob) == set()

    report = awaitly_nb.import_state(path, trust=True)

    assert sorted(report.steps) == sorted((WORKFLOW, k) for k in STEPS)
    assert not report.signed
    assert saved_keys(bob) == {(WORKFLOW, k) for k in STEPS}
    for key, fn in STEPS.items():
        restored = awaitly_nb.step(must_not_run, key=key, pin=True)
        expected = fn()
        if isinstance(expected, np.ndarray):
            np.testing.assert_array_equal(restored, expected)
        else:
            assert restored == expected


def test_imported_steps_keep_their_fingerprint_so_the_same_code_hits(tmp_path: Path) -> None:
    path = alice_bundle(tmp_path)
    as_bob(tmp_path)
    awaitly_nb.import_state(path, trust=True)
    ran: list[str] = []

    def count(fn: Callable[[], Any]) -> Callable[[], Any]:
        def wrapper() -> Any:
            ran.append(fn.__name__)
            return fn()

        return wrapper

    # Bob's notebook has the same code as Alice's: no pin needed, nothing runs.
    assert awaitly_nb.step(numbers, key="numbers") == numbers()
    assert awaitly_nb.step(text, key="text") == text()
    # Other code under the same key is stale and runs (the fingerprint was kept, not dropped).
    assert awaitly_nb.step(count(lambda: 5), key="numbers") == 5
    assert ran == ["<lambda>"]


def test_a_stored_none_is_a_value_after_import(tmp_path: Path) -> None:
    path = alice_bundle(tmp_path, keys=["nothing"])
    as_bob(tmp_path)
    awaitly_nb.import_state(path, trust=True)
    assert awaitly_nb.step(must_not_run, key="nothing", pin=True) is None


def test_big_arrays_come_back_memory_mapped_and_equal(tmp_path: Path) -> None:
    as_alice(tmp_path)
    awaitly_nb.step(array, key="array")
    awaitly_nb.step(frame, key="frame")
    awaitly_nb.step(lambda: {"a": array(), "b": array() * 2}, key="pair")
    path = tmp_path / "big.awnb"
    report = awaitly_nb.export_state(path)
    assert report.bytes > 3 * 1024 * 1024
    assert os.path.getsize(path) > report.bytes

    bob = as_bob(tmp_path)
    awaitly_nb.import_state(path, trust=True)
    store = LocalStore(bob)
    try:
        restored = store.load(WORKFLOW, "array")["value"]
        pair = store.load(WORKFLOW, "pair")["value"]
        restored_frame = store.load(WORKFLOW, "frame")["value"]
    finally:
        store.close()

    np.testing.assert_array_equal(restored, array())
    assert isinstance(memory_map_under(restored), mmap.mmap)  # mapped, not copied
    np.testing.assert_array_equal(pair["a"], array())
    np.testing.assert_array_equal(pair["b"], array() * 2)
    assert isinstance(memory_map_under(pair["b"]), mmap.mmap)
    pd.testing.assert_frame_equal(restored_frame, frame())
    # The same array saved twice is one blob, in Alice's store and in the bundle.
    assert len(read_manifest(path)["blobs"]) == len(blob_files(bob / "blobs"))
    # Restoring through the notebook API gives the same values.
    np.testing.assert_array_equal(awaitly_nb.step(must_not_run, key="array", pin=True), array())


def test_importing_never_unpickles_restoring_does(tmp_path: Path) -> None:
    """Loading a pickle runs code: import only checks bytes, a restore unpickles."""
    witness = tmp_path / "unpickled.txt"

    def touch(where: str) -> str:
        Path(where).write_text("unpickled")
        return "payload"

    class RunsCodeWhenLoaded:
        def __reduce__(self) -> tuple[Any, ...]:
            return (touch, (str(witness),))

    as_alice(tmp_path)
    awaitly_nb.step(lambda: RunsCodeWhenLoaded(), key="sneaky")
    awaitly_nb.step(array, key="array")
    path = tmp_path / "state.awnb"
    awaitly_nb.export_state(path)
    assert not witness.exists()

    as_bob(tmp_path)
    awaitly_nb.import_state(path, trust=True)
    assert not witness.exists()  # imported, not loaded

    assert awaitly_nb.step(must_not_run, key="sneaky", pin=True) == "payload"
    assert witness.read_text() == "unpickled"


def test_import_writes_into_the_configured_store_and_replaces_older_entries(
    tmp_path: Path,
) -> None:
    path = alice_bundle(tmp_path, keys=["numbers"])
    as_bob(tmp_path)
    awaitly_nb.step(lambda: "bob's own", key="numbers")
    awaitly_nb.step(lambda: "bob only", key="mine")
    awaitly_nb.import_state(path, trust=True)
    assert awaitly_nb.step(must_not_run, key="numbers", pin=True) == numbers()
    assert awaitly_nb.step(must_not_run, key="mine", pin=True) == "bob only"
    # Importing the same bundle again changes nothing.
    awaitly_nb.import_state(path, trust=True)
    assert awaitly_nb.step(must_not_run, key="numbers", pin=True) == numbers()


# --- the manifest ----------------------------------------------------------------------------


def test_manifest_records_format_versions_creator_time_and_every_checksum(
    tmp_path: Path,
) -> None:
    before = time.time()
    path = alice_bundle(tmp_path)
    after = time.time()
    alice = tmp_path / "alice"

    contents = member_bytes(path)
    manifest = json.loads(contents[MANIFEST])

    assert manifest["format"] == "awaitly_nb/bundle"
    assert manifest["version"] == 1
    assert manifest["versions"] == versions()
    assert set(manifest["versions"]) == {"python", "cloudpickle", "awaitly_nb"}
    assert isinstance(manifest["creator"], str) and manifest["creator"]
    assert socket.gethostname() in manifest["creator"]
    created = datetime.strptime(manifest["created_at"], "%Y-%m-%dT%H:%M:%S%z").timestamp()
    assert before - 2 <= created <= after + 2

    # One member per blob, the manifest last, no signature without a key.
    blob_members = {n for n in contents if n.startswith("blobs/")}
    assert blob_members == {f"blobs/{name}" for name in manifest["blobs"]}
    assert list(contents)[-1] == MANIFEST
    assert SIGNATURE not in contents
    store = LocalStore(alice)
    try:
        for name, spec in manifest["blobs"].items():
            data = contents[f"blobs/{name}"]
            assert spec["size"] == len(data)
            assert spec["sha256"] == hashlib.sha256(data).hexdigest()
            # ... and the bundle holds exactly the bytes of Alice's blob file.
            assert spec["sha256"] == hashlib.sha256(store.blobs.path(name).read_bytes()).hexdigest()
    finally:
        store.close()

    # Every chosen step, with its manifest and record; inline streams checksummed too.
    steps = {s["key"]: s for s in manifest["steps"]}
    assert set(steps) == set(STEPS)
    for key, step in steps.items():
        assert step["workflow"] == WORKFLOW
        assert step["manifest"]["key"] == key
        assert step["manifest"]["kind"] == "call"
        assert "saved_at" in step["manifest"] and "fingerprint" in step["manifest"]
        for name in blob_names_of(manifest, key):
            assert name in manifest["blobs"]
        record = step["record"]
        if "stream_b64" in record:
            stream = base64.b64decode(record["stream_b64"])
            assert record["stream_sha256"] == hashlib.sha256(stream).hexdigest()
    assert "stream_b64" in steps["numbers"]["record"]  # small: inline
    assert blob_names_of(manifest, "text")  # long stream: a blob
    assert blob_names_of(manifest, "array")  # big buffer: a blob


# --- choosing what to export -----------------------------------------------------------------


def test_workflow_selects_one_notebooks_steps_and_only_their_blobs(tmp_path: Path) -> None:
    awaitly_nb.configure(dir=tmp_path / "alice", workflow="prep.ipynb")
    awaitly_nb.step(array, key="array")
    awaitly_nb.step(numbers, key="numbers")
    awaitly_nb.configure(workflow="report.ipynb")
    awaitly_nb.step(text, key="text")
    awaitly_nb.step(numbers, key="numbers")
    everything, report_only = tmp_path / "all.awnb", tmp_path / "report.awnb"

    assert sorted(awaitly_nb.export_state(everything).steps) == [
        ("prep.ipynb", "array"),
        ("prep.ipynb", "numbers"),
        ("report.ipynb", "numbers"),
        ("report.ipynb", "text"),
    ]
    report = awaitly_nb.export_state(report_only, workflow="report.ipynb")
    assert sorted(report.steps) == [("report.ipynb", "numbers"), ("report.ipynb", "text")]

    manifest = read_manifest(report_only)
    assert {(s["workflow"], s["key"]) for s in manifest["steps"]} == set(report.steps)
    assert set(manifest["blobs"]) == set(blob_names_of(manifest, "text"))
    assert len(read_manifest(everything)["blobs"]) == 2  # the array's blob was left out

    bob = tmp_path / "bob"
    awaitly_nb.configure(dir=bob, workflow="report.ipynb")
    awaitly_nb.import_state(report_only, trust=True)
    assert saved_keys(bob) == {("report.ipynb", "numbers"), ("report.ipynb", "text")}
    assert awaitly_nb.step(must_not_run, key="text", pin=True) == text()


def test_keys_select_some_steps_and_only_their_blobs(tmp_path: Path) -> None:
    as_alice(tmp_path)
    save_steps()
    path = tmp_path / "some.awnb"
    report = awaitly_nb.export_state(path, keys=["numbers", "text"])
    assert sorted(report.steps) == [(WORKFLOW, "numbers"), (WORKFLOW, "text")]
    manifest = read_manifest(path)
    assert sorted(s["key"] for s in manifest["steps"]) == ["numbers", "text"]
    assert set(manifest["blobs"]) == set(blob_names_of(manifest, "text"))
    assert os.path.getsize(path) < 1024 * 1024  # the 3.2 MB array is not in it

    bob = as_bob(tmp_path)
    awaitly_nb.import_state(path, trust=True)
    assert saved_keys(bob) == {(WORKFLOW, "numbers"), (WORKFLOW, "text")}


def test_keys_and_workflow_together(tmp_path: Path) -> None:
    awaitly_nb.configure(dir=tmp_path / "alice", workflow="one")
    awaitly_nb.step(numbers, key="numbers")
    awaitly_nb.configure(workflow="two")
    awaitly_nb.step(numbers, key="numbers")
    report = awaitly_nb.export_state(tmp_path / "b.awnb", workflow="two", keys=["numbers"])
    assert report.steps == [("two", "numbers")]


@pytest.mark.parametrize(
    ("export", "missing"),
    [
        ({"keys": ["numbers", "no-such-step"]}, "no-such-step"),
        ({"keys": ["numbers"], "workflow": "another.ipynb"}, "numbers"),
    ],
    ids=["unknown key", "key of another workflow"],
)
def test_unknown_key_is_an_error_and_writes_no_file(
    tmp_path: Path, export: dict[str, Any], missing: str
) -> None:
    as_alice(tmp_path)
    save_steps()
    path = tmp_path / "out" / "state.awnb"
    path.parent.mkdir()
    with pytest.raises(AwaitlyError, match=missing):
        awaitly_nb.export_state(path, **export)
    assert list(path.parent.iterdir()) == []  # no bundle, no partial file


def test_a_blob_missing_from_the_store_stops_the_export(tmp_path: Path) -> None:
    alice = as_alice(tmp_path)
    save_steps()
    for file in blob_files(alice / "blobs"):
        file.unlink()
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(AwaitlyError, match="missing"):
        awaitly_nb.export_state(out / "state.awnb")
    assert list(out.iterdir()) == []


def test_importing_a_missing_file_is_an_error(tmp_path: Path) -> None:
    bob = as_bob(tmp_path)
    with pytest.raises(AwaitlyError, match="no bundle"):
        awaitly_nb.import_state(tmp_path / "nowhere.awnb", trust=True)
    assert_nothing_imported(bob)


# --- damage: nothing is imported -------------------------------------------------------------


@pytest.mark.parametrize("which", ["first", "last"])
@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_a_flipped_byte_in_a_blob_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, which: str, signed: bool
) -> None:
    """The first or the last blob received: earlier staged blobs are cleaned up too."""
    if signed:
        monkeypatch.setenv(ENV_KEY, TEAM_KEY)
    path = alice_bundle(tmp_path)
    blobs = sorted(n for n in members(path) if n.startswith("blobs/"))
    assert len(blobs) >= 2
    target = members(path)[blobs[0] if which == "first" else blobs[-1]]
    flip_byte(path, target.offset_data + target.size // 2)

    bob = as_bob(tmp_path)
    # The manifest (and its signature) is intact: the blob's checksum catches it.
    with pytest.raises(StateFormatError, match="checksum"):
        awaitly_nb.import_state(path, trust=not signed)
    assert_nothing_imported(bob)


def test_a_blob_replaced_by_other_bytes_of_the_same_size_is_refused(tmp_path: Path) -> None:
    path = alice_bundle(tmp_path)
    manifest = read_manifest(path)
    (name,) = blob_names_of(manifest, "array")

    def change(contents: dict[str, bytes]) -> None:
        contents[f"blobs/{name}"] = bytes(len(contents[f"blobs/{name}"]))

    rewrite(path, change)
    bob = as_bob(tmp_path)
    with pytest.raises(StateFormatError, match=name):
        awaitly_nb.import_state(path, trust=True)
    assert_nothing_imported(bob)


def test_a_blob_member_missing_from_the_bundle_is_refused(tmp_path: Path) -> None:
    path = alice_bundle(tmp_path)
    (name,) = blob_names_of(read_manifest(path), "text")
    rewrite(path, lambda contents: contents.pop(f"blobs/{name}"))
    bob = as_bob(tmp_path)
    with pytest.raises(StateFormatError, match="missing"):
        awaitly_nb.import_state(path, trust=True)
    assert_nothing_imported(bob)


def _set_first_blob_sha(m: dict[str, Any]) -> None:
    name = sorted(m["blobs"])[0]
    m["blobs"][name]["sha256"] = hashlib.sha256(b"something else").hexdigest()


def _set_stream(m: dict[str, Any]) -> None:
    (step,) = [s for s in m["steps"] if s["key"] == "numbers"]
    step["record"]["stream_b64"] = base64.b64encode(b"\x80\x05K\x07.").decode()


def _bad_base64(m: dict[str, Any]) -> None:
    (step,) = [s for s in m["steps"] if s["key"] == "numbers"]
    step["record"]["stream_b64"] = "not base64!!"


def _drop_blob_entry(m: dict[str, Any]) -> None:
    (name,) = blob_names_of(m, "array")
    del m["blobs"][name]


def _grow_blob(m: dict[str, Any]) -> None:
    (name,) = blob_names_of(m, "array")
    m["blobs"][name]["size"] += 8


def _bad_key(m: dict[str, Any]) -> None:
    m["steps"][0]["key"] = ""


def _no_record(m: dict[str, Any]) -> None:
    del m["steps"][0]["record"]


def _format(m: dict[str, Any]) -> None:
    m["format"] = "something/else"


def _version(m: dict[str, Any]) -> None:
    m["version"] = 99


def _steps_not_a_list(m: dict[str, Any]) -> None:
    m["steps"] = {"numbers": {}}


MANIFEST_EDITS: dict[str, tuple[Callable[[dict[str, Any]], Any], str]] = {
    "a blob's sha256": (_set_first_blob_sha, "checksum"),
    "a step's inline stream": (_set_stream, "inline stream"),
    "a step's inline stream, not base64": (_bad_base64, "inline stream"),
    "a blob dropped from the list": (_drop_blob_entry, "not in the bundle"),
    "a blob's size": (_grow_blob, "not in the bundle"),
    "an empty key": (_bad_key, "bad key"),
    "a step without its record": (_no_record, "lacks its record"),
    "the format name": (_format, "not an awaitly_nb bundle"),
    "the format version": (_version, "version 99"),
    "steps not a list": (_steps_not_a_list, "lacks steps"),
}


@pytest.mark.parametrize("edit", list(MANIFEST_EDITS))
def test_an_edited_manifest_is_refused_even_when_trusted(tmp_path: Path, edit: str) -> None:
    change, message = MANIFEST_EDITS[edit]
    path = alice_bundle(tmp_path)
    edit_manifest(path, change)
    bob = as_bob(tmp_path)
    with pytest.raises(StateFormatError, match=message):
        awaitly_nb.import_state(path, trust=True)
    assert_nothing_imported(bob)


@pytest.mark.parametrize("edit", ["a blob's sha256", "a step's inline stream", "the format name"])
def test_an_edited_signed_manifest_fails_its_signature_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, edit: str
) -> None:
    monkeypatch.setenv(ENV_KEY, TEAM_KEY)
    path = alice_bundle(tmp_path)
    edit_manifest(path, MANIFEST_EDITS[edit][0])
    assert SIGNATURE in members(path)  # the old signature is still there
    bob = as_bob(tmp_path)
    with pytest.raises(TrustError, match="changed after signing") as raised:
        awaitly_nb.import_state(path)
    assert "trust=True" in str(raised.value)
    assert_nothing_imported(bob)


def test_a_manifest_that_is_not_json_is_refused(tmp_path: Path) -> None:
    path = alice_bundle(tmp_path)

    def change(contents: dict[str, bytes]) -> None:
        contents[MANIFEST] = contents[MANIFEST][:-20]

    rewrite(path, change)
    bob = as_bob(tmp_path)
    with pytest.raises(StateFormatError, match="not JSON"):
        awaitly_nb.import_state(path, trust=True)
    assert_nothing_imported(bob)


def test_a_blob_name_cannot_write_outside_the_store(tmp_path: Path) -> None:
    """A forged manifest naming ``../../escaped`` is refused; no file lands anywhere."""
    path = alice_bundle(tmp_path)
    evil = "../../../escaped"
    payload = b"not what it claims to be"

    def change(contents: dict[str, bytes]) -> None:
        manifest = json.loads(contents.pop(MANIFEST))
        manifest["blobs"][evil] = {
            "size": len(payload),
            "sha256": hashlib.sha256(payload).hexdigest(),
        }
        manifest["steps"][0]["record"]["buffers"] = [[evil, len(payload)]]
        contents[f"blobs/{evil}"] = payload
        contents[MANIFEST] = json.dumps(manifest, sort_keys=True).encode()

    rewrite(path, change)
    bob = as_bob(tmp_path)

    def outside() -> list[Path]:  # sqlite's own -wal/-shm files come and go
        return sorted(
            p for p in tmp_path.rglob("*") if "bob" not in p.parts and "index" not in p.parts
        )

    before = outside()
    with pytest.raises(StateFormatError):  # a bad name or a checksum mismatch
        awaitly_nb.import_state(path, trust=True)
    assert_nothing_imported(bob)
    assert outside() == before
    assert not any(p.name == "escaped" for p in tmp_path.parent.rglob("escaped"))


TRUNCATIONS: dict[str, Callable[[dict[str, tarfile.TarInfo]], int]] = {
    "in the first header": lambda m: 100,
    "in the first blob": lambda m: _blob_members(m)[0].offset_data + 10,
    "at the second header": lambda m: _blob_members(m)[1].offset,
    "in the middle of the array": lambda m: _biggest(m).offset_data + _biggest(m).size // 2,
    "in the manifest header": lambda m: m[MANIFEST].offset + 100,
    "in the manifest": lambda m: m[MANIFEST].offset_data + m[MANIFEST].size // 2,
    "one byte short of the manifest": lambda m: m[MANIFEST].offset_data + m[MANIFEST].size - 1,
}


def _blob_members(m: dict[str, tarfile.TarInfo]) -> list[tarfile.TarInfo]:
    return sorted((i for n, i in m.items() if n.startswith("blobs/")), key=lambda i: i.offset)


def _biggest(m: dict[str, tarfile.TarInfo]) -> tarfile.TarInfo:
    return max(_blob_members(m), key=lambda i: i.size)


def truncate(path: Path, size: int) -> None:
    with path.open("r+b") as f:
        f.truncate(size)


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned+trust", "signed+key"])
@pytest.mark.parametrize("where", list(TRUNCATIONS))
def test_a_truncated_bundle_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str, signed: bool
) -> None:
    if signed:
        monkeypatch.setenv(ENV_KEY, TEAM_KEY)
    path = alice_bundle(tmp_path)
    size = TRUNCATIONS[where](members(path))
    assert 0 < size < path.stat().st_size
    truncate(path, size)
    bob = as_bob(tmp_path)
    with pytest.raises(StateFormatError):
        awaitly_nb.import_state(path, trust=not signed)
    assert_nothing_imported(bob)


def test_a_signed_bundle_cut_before_its_signature_is_untrusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Everything but the signature is intact: refused as not signed, not as damaged."""
    monkeypatch.setenv(ENV_KEY, TEAM_KEY)
    path = alice_bundle(tmp_path)
    truncate(path, members(path)[SIGNATURE].offset)
    bob = as_bob(tmp_path)
    with pytest.raises(TrustError, match="not signed"):
        awaitly_nb.import_state(path)
    assert_nothing_imported(bob)


def test_a_signed_bundle_cut_inside_its_signature_is_damaged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_KEY, TEAM_KEY)
    path = alice_bundle(tmp_path)
    signature = members(path)[SIGNATURE]
    truncate(path, signature.offset_data + signature.size // 2)
    bob = as_bob(tmp_path)
    with pytest.raises(StateFormatError):
        awaitly_nb.import_state(path)
    assert_nothing_imported(bob)


def _plain_tar(path: Path) -> None:
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("notes.txt")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(b""), "not a readable"),
        (lambda p: p.write_text('{"format": "awaitly_nb/bundle"}\n'), "not a readable"),
        (lambda p: p.write_bytes(os.urandom(4096)), "not a readable"),
        (lambda p: p.write_bytes(bytes(10240)), MANIFEST),
        (_plain_tar, MANIFEST),
    ],
    ids=["empty file", "json file", "random bytes", "zeros", "a tar without a manifest"],
)
def test_a_file_that_is_not_a_bundle_is_refused(
    tmp_path: Path, make: Callable[[Path], Any], message: str
) -> None:
    path = tmp_path / "not-a-bundle.awnb"
    make(path)
    bob = as_bob(tmp_path)
    with pytest.raises(StateFormatError, match=message):
        awaitly_nb.import_state(path, trust=True)
    assert_nothing_imported(bob)


# --- trust: the team key ---------------------------------------------------------------------


def test_with_a_team_key_export_signs_and_import_needs_no_trust(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_KEY, TEAM_KEY)
    as_alice(tmp_path)
    save_steps()
    path = tmp_path / "state.awnb"
    assert awaitly_nb.export_state(path).signed

    contents = member_bytes(path)
    expected = hmac.new(TEAM_KEY.encode(), contents[MANIFEST], hashlib.sha256).hexdigest()
    assert contents[SIGNATURE].decode() == expected

    bob = as_bob(tmp_path)
    report = awaitly_nb.import_state(path)  # no trust needed
    assert report.signed
    assert saved_keys(bob) == {(WORKFLOW, k) for k in STEPS}
    assert awaitly_nb.step(must_not_run, key="numbers", pin=True) == numbers()


def test_a_bundle_signed_with_another_key_needs_trust(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_KEY, OTHER_KEY)
    path = alice_bundle(tmp_path)
    monkeypatch.setenv(ENV_KEY, TEAM_KEY)
    bob = as_bob(tmp_path)
    with pytest.raises(TrustError, match="another key") as raised:
        awaitly_nb.import_state(path)
    assert "trust=True" in str(raised.value)
    assert_nothing_imported(bob)

    report = awaitly_nb.import_state(path, trust=True)
    assert not report.signed
    assert awaitly_nb.step(must_not_run, key="numbers", pin=True) == numbers()


def test_a_signed_bundle_without_a_key_configured_needs_trust(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_KEY, TEAM_KEY)
    path = alice_bundle(tmp_path)
    monkeypatch.delenv(ENV_KEY)
    bob = as_bob(tmp_path)
    with pytest.raises(TrustError, match="no team key") as raised:
        awaitly_nb.import_state(path)
    assert "trust=True" in str(raised.value)
    assert_nothing_imported(bob)
    assert not awaitly_nb.import_state(path, trust=True).signed


def test_an_unsigned_bundle_needs_trust_with_or_without_a_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = alice_bundle(tmp_path)
    assert SIGNATURE not in members(path)
    bob = as_bob(tmp_path)
    with pytest.raises(TrustError, match="trust=True"):
        awaitly_nb.import_state(path)
    assert_nothing_imported(bob)

    monkeypatch.setenv(ENV_KEY, TEAM_KEY)
    with pytest.raises(TrustError, match="not signed") as raised:
        awaitly_nb.import_state(path)
    assert "trust=True" in str(raised.value)
    assert_nothing_imported(bob)

    assert not awaitly_nb.import_state(path, trust=True).signed
    assert saved_keys(bob) == {(WORKFLOW, k) for k in STEPS}


def test_a_signature_copied_from_another_bundle_does_not_match(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_KEY, TEAM_KEY)
    as_alice(tmp_path)
    save_steps()
    small, full = tmp_path / "small.awnb", tmp_path / "full.awnb"
    awaitly_nb.export_state(small, keys=["numbers"])
    awaitly_nb.export_state(full)
    stolen = member_bytes(small)[SIGNATURE]

    def change(contents: dict[str, bytes]) -> None:
        contents[SIGNATURE] = stolen

    rewrite(full, change)
    bob = as_bob(tmp_path)
    with pytest.raises(TrustError):
        awaitly_nb.import_state(full)
    assert_nothing_imported(bob)


def test_key_files_sign_and_verify_and_match_the_environment_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = tmp_path / "team.key"
    key_file.write_text(TEAM_KEY + "\n")  # a trailing newline is not part of the key
    other_file = tmp_path / "other.key"
    other_file.write_text(OTHER_KEY)

    as_alice(tmp_path)
    save_steps()
    path = tmp_path / "state.awnb"
    assert awaitly_nb.export_state(path, key_file=key_file).signed

    bob = as_bob(tmp_path)
    with pytest.raises(TrustError, match="another key"):
        awaitly_nb.import_state(path, key_file=other_file)
    assert_nothing_imported(bob)
    # The key file wins over the environment.
    monkeypatch.setenv(ENV_KEY, OTHER_KEY)
    assert awaitly_nb.import_state(path, key_file=key_file).signed
    # The same key from the environment is the same key.
    monkeypatch.setenv(ENV_KEY, TEAM_KEY)
    assert awaitly_nb.import_state(path).signed


@pytest.mark.parametrize("problem", ["missing", "empty"])
def test_an_unusable_key_file_is_an_error(tmp_path: Path, problem: str) -> None:
    key_file = tmp_path / "team.key"
    if problem == "empty":
        key_file.write_text("\n")
    path = alice_bundle(tmp_path)
    with pytest.raises(AwaitlyError, match="key file"):
        awaitly_nb.export_state(tmp_path / "signed.awnb", key_file=key_file)
    assert not (tmp_path / "signed.awnb").exists()
    bob = as_bob(tmp_path)
    with pytest.raises(AwaitlyError, match="key file"):
        awaitly_nb.import_state(path, key_file=key_file, trust=True)
    assert_nothing_imported(bob)


# --- other Python and library versions -------------------------------------------------------


@pytest.mark.parametrize(
    ("component", "theirs"),
    [("python", "2.7.18"), ("cloudpickle", "0.0.1"), ("awaitly_nb", "99.0.0")],
)
def test_a_bundle_from_other_versions_imports_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, component: str, theirs: str
) -> None:
    monkeypatch.setenv(ENV_KEY, TEAM_KEY)
    path = alice_bundle(tmp_path)

    def written_elsewhere(m: dict[str, Any]) -> None:
        m["versions"][component] = theirs

    edit_manifest(path, written_elsewhere)
    bob = as_bob(tmp_path)
    # Rewriting the manifest broke Alice's signature.
    with pytest.raises(TrustError):
        awaitly_nb.import_state(path)
    assert_nothing_imported(bob)

    with pytest.warns(CacheWarning, match=component) as caught:
        report = awaitly_nb.import_state(path, trust=True)
    assert len(caught) == 1
    assert theirs in str(caught[0].message)
    assert sorted(report.steps) == sorted((WORKFLOW, k) for k in STEPS)
    # These entries do load here: they restore as usual.
    np.testing.assert_array_equal(awaitly_nb.step(must_not_run, key="array", pin=True), array())


MODULE = "alice_only_model"


def test_an_entry_that_cannot_be_loaded_here_becomes_a_miss_and_runs_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Alice's value is an instance of a class from a module Bob does not have."""
    site = tmp_path / "alice-site"
    site.mkdir()
    (site / f"{MODULE}.py").write_text(
        "class Model:\n    def __init__(self, w):\n        self.w = w\n"
    )
    monkeypatch.syspath_prepend(str(site))
    model = importlib.import_module(MODULE)
    as_alice(tmp_path)
    awaitly_nb.step(lambda: model.Model(3), key="model")
    awaitly_nb.step(numbers, key="numbers")
    path = tmp_path / "state.awnb"
    awaitly_nb.export_state(path)

    # Bob's machine: no such module.
    monkeypatch.delitem(sys.modules, MODULE)
    sys.path.remove(str(site))
    shutil.rmtree(site)
    importlib.invalidate_caches()

    bob = as_bob(tmp_path)
    awaitly_nb.import_state(path, trust=True)  # bytes are checked, nothing is loaded
    store = LocalStore(bob)
    try:
        with pytest.raises(StateFormatError, match=MODULE):
            store.load(WORKFLOW, "model")
    finally:
        store.close()

    ran: list[int] = []
    with pytest.warns(CacheWarning, match="cannot be restored"):
        value = awaitly_nb.step(lambda: ran.append(1) or "recomputed", key="model", pin=True)
    assert value == "recomputed" and ran == [1]
    # Saved again in Bob's store: the next run restores it, quietly.
    assert awaitly_nb.step(must_not_run, key="model", pin=True) == "recomputed"
    # The other imported steps were not affected.
    assert awaitly_nb.step(must_not_run, key="numbers", pin=True) == numbers()


def test_a_step_with_an_empty_workflow_is_refused_before_anything_lands(tmp_path: Path) -> None:
    path = alice_bundle(tmp_path)

    def change(contents: dict[str, bytes]) -> None:
        manifest = json.loads(contents.pop(MANIFEST))
        manifest["steps"][-1]["workflow"] = ""
        contents[MANIFEST] = json.dumps(manifest, sort_keys=True).encode()

    rewrite(path, change)
    bob = as_bob(tmp_path)
    with pytest.raises(StateFormatError, match="workflow must not be empty"):
        awaitly_nb.import_state(path, trust=True)
    assert_nothing_imported(bob)
