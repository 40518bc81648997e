"""verify_bundle: check a bundle without importing it; and the store an import leaves behind."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from awaitly_testing import flip_byte

from awaitly_nb import StateFormatError
from awaitly_nb.sharing.bundle import export_bundle, import_bundle, verify_bundle
from awaitly_nb.storage.local import LocalStore

MANIFEST = "awaitly-bundle.json"
SIGNATURE = "awaitly-bundle.sig"
KEY = b"team-secret-1"


# --- helpers ---------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWAITLY_NB_KEY", raising=False)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LocalStore]:
    """Alice's store: a small inline value, a long stream (a blob) and a big array (a blob)."""
    found = LocalStore(tmp_path / "alice")
    found.save("nb", "numbers", {"kind": "call"}, {"value": list(range(10))})
    found.save("nb", "text", {"kind": "call"}, {"value": "lorem ipsum " * 4_000})
    found.save("nb", "array", {"kind": "call"}, {"value": np.arange(200_000, dtype=np.float64)})
    yield found
    found.close()


def bundle(store: LocalStore, tmp_path: Path, *, key: bytes | None = None) -> Path:
    path = tmp_path / "state.awnb"
    export_bundle(store, path, key=key)
    return path


def members(path: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(path) as tar:
        return {m.name: m for m in tar.getmembers()}


def member_bytes(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        out = {}
        for m in tar.getmembers():
            f = tar.extractfile(m)
            assert f is not None
            out[m.name] = f.read()
        return out


def rewrite(path: Path, change: Callable[[dict[str, bytes]], Any]) -> None:
    contents = member_bytes(path)
    change(contents)
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in contents.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), int(time.time())
            tar.addfile(info, io.BytesIO(data))


def imports(path: Path, tmp_path: Path) -> bool:
    """Whether a trusted import of ``path`` into a fresh store succeeds."""
    target = LocalStore(tmp_path / f"target-{time.monotonic_ns()}")
    try:
        import_bundle(target, path, trust=True)
    except StateFormatError:
        return False
    finally:
        target.close()
    return True


# --- tests -----------------------------------------------------------------------------------


def test_a_good_bundle_has_no_problems_and_reports_its_signature(
    store: LocalStore, tmp_path: Path
) -> None:
    unsigned = tmp_path / "unsigned.awnb"
    export_bundle(store, unsigned)
    signed = bundle(store, tmp_path, key=KEY)

    assert verify_bundle(unsigned).problems == []
    assert not verify_bundle(unsigned, key=KEY).signed
    assert verify_bundle(signed).problems == []
    assert not verify_bundle(signed).signed  # no key: cannot tell
    assert verify_bundle(signed, key=KEY).signed
    assert not verify_bundle(signed, key=b"another key").signed


def test_a_flipped_byte_in_a_blob_is_a_problem_naming_the_blob(
    store: LocalStore, tmp_path: Path
) -> None:
    path = bundle(store, tmp_path, key=KEY)
    name, info = max(
        ((n, i) for n, i in members(path).items() if n.startswith("blobs/")),
        key=lambda item: item[1].size,
    )
    flip_byte(path, info.offset_data + 1000)
    check = verify_bundle(path, key=KEY)
    assert check.signed  # the manifest is intact ...
    assert len(check.problems) == 1  # ... one blob is not
    assert name.removeprefix("blobs/") in check.problems[0]
    assert "checksum" in check.problems[0]


def test_an_edited_manifest_is_no_longer_signed_and_its_checksums_fail(
    store: LocalStore, tmp_path: Path
) -> None:
    path = bundle(store, tmp_path, key=KEY)

    def change(contents: dict[str, bytes]) -> None:
        manifest = json.loads(contents[MANIFEST])
        name = sorted(manifest["blobs"])[0]
        manifest["blobs"][name]["sha256"] = hashlib.sha256(b"other").hexdigest()
        contents[MANIFEST] = json.dumps(manifest, sort_keys=True).encode()

    rewrite(path, change)
    check = verify_bundle(path, key=KEY)
    assert not check.signed
    assert any("checksum" in p for p in check.problems)


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
        lambda p: p.write_bytes(p.read_bytes()[:100]),
        lambda p: p.write_bytes(b""),
        lambda p: p.write_text("just some text\n"),
    ],
    ids=["cut in half", "cut in the first header", "empty", "not a tar file"],
)
def test_a_truncated_or_foreign_file_is_a_problem(
    store: LocalStore, tmp_path: Path, damage: Callable[[Path], Any]
) -> None:
    path = bundle(store, tmp_path)
    damage(path)
    check = verify_bundle(path)
    assert check.problems
    assert not check.signed


def test_a_missing_blob_member_is_a_problem(store: LocalStore, tmp_path: Path) -> None:
    path = bundle(store, tmp_path)
    victim = next(n for n in members(path) if n.startswith("blobs/"))
    rewrite(path, lambda contents: contents.pop(victim))
    problems = verify_bundle(path).problems
    assert problems and victim.removeprefix("blobs/") in " ".join(problems)


def test_verify_finds_every_problem_that_makes_import_refuse(
    store: LocalStore, tmp_path: Path
) -> None:
    """A blob renamed consistently (member, manifest, record) under a name that is not its hash."""
    path = bundle(store, tmp_path)
    forged = "0" * 32

    def change(contents: dict[str, bytes]) -> None:
        manifest = json.loads(contents.pop(MANIFEST))
        step = next(s for s in manifest["steps"] if s["record"].get("stream_ref"))
        old = step["record"]["stream_ref"][0]
        step["record"]["stream_ref"][0] = forged
        manifest["blobs"][forged] = manifest["blobs"].pop(old)
        contents[f"blobs/{forged}"] = contents.pop(f"blobs/{old}")
        contents[MANIFEST] = json.dumps(manifest, sort_keys=True).encode()

    rewrite(path, change)
    assert not imports(path, tmp_path)
    assert verify_bundle(path).problems != []


def test_verify_writes_nothing(store: LocalStore, tmp_path: Path) -> None:
    path = bundle(store, tmp_path)
    before = sorted((p, p.stat().st_mtime_ns) for p in tmp_path.rglob("*"))
    verify_bundle(path)
    assert sorted((p, p.stat().st_mtime_ns) for p in tmp_path.rglob("*")) == before


def test_an_imported_store_verifies_clean_and_holds_the_same_blobs(
    store: LocalStore, tmp_path: Path
) -> None:
    path = bundle(store, tmp_path)
    target = LocalStore(tmp_path / "bob")
    try:
        import_bundle(target, path, trust=True)
        assert target.verify() == []
        assert sorted(target.blobs.names()) == sorted(store.blobs.names())
        for name in store.blobs.names():
            assert target.blobs.path(name).read_bytes() == store.blobs.path(name).read_bytes()
        assert target.load("nb", "text") == store.load("nb", "text")
        assert sorted(m.key for m in target.manifests()) == ["array", "numbers", "text"]
    finally:
        target.close()
