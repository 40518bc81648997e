"""Fuzzing the two readers of untrusted text and files: ``parse_state`` and bundle import.

Guarantees (DESIGN.md, "The port of the seed API" and "Sharing"):

- ``parse_state`` on any text or bytes either returns a :class:`WorkflowState`
  or raises :class:`StateFormatError`; never another exception, never a hang.
  A value that is intact but cannot be unpickled is left out with a
  :class:`CacheWarning`, the only warning allowed.
- ``import_bundle(..., trust=True)`` on any file either imports or raises
  :class:`StateFormatError` (without trust: or :class:`TrustError`), all or
  nothing: a refused bundle leaves no step, no blob and no temporary file.
  What an accepted bundle put in the store then loads or raises
  :class:`StateFormatError`, and ``verify()`` and ``gc()`` run on it.

Each property is checked with hypothesis on at least 10,000 cases: arbitrary
text/bytes (and JSON documents, and tar files with arbitrary members), and
mutations of valid output (byte flips, truncations, insertions, deletions,
splices, and structural edits of the JSON document or of the tar members).

The mutated bundles are a tiny one (one small step, inline stream), one
with a 72 KB buffer blob, and one whose pickle stream is a blob
(``stream_ref``).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import tarfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from awaitly_nb import (
    CacheWarning,
    StateFormatError,
    StepEntry,
    StepMeta,
    TrustError,
    WorkflowState,
    parse_state,
    stringify_state,
)
from awaitly_nb.sharing.bundle import export_bundle, import_bundle
from awaitly_nb.storage.local import LocalStore

pytestmark = pytest.mark.timeout(600)

FUZZ = settings(
    max_examples=10_000,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def outcome(text: str) -> None:
    """Count an outcome (``--hypothesis-show-statistics`` shows how deep the cases got)."""
    if currently_in_test_context():
        event(text)


# --- strategies shared by both targets ---------------------------------------------------------

SPECIAL_STRINGS = [
    "json",
    "cloudpickle",
    "awaitly_nb/state",
    "awaitly_nb/bundle",
    "format",
    "version",
    "steps",
    "blobs",
    "buffers",
    "stream_ref",
    "stream_b64",
    "size",
    "sha256",
    "",
    "../../x",
    "\x00",
    "\ud800",
    "0" * 32,
]
LEAVES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=24)
    | st.sampled_from(SPECIAL_STRINGS)
    | st.sampled_from([0, 1, 2, -1, 2**63, 1.0, 2.0])
)
JSON_VALUES = st.recursive(
    LEAVES,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(max_size=10) | st.sampled_from(SPECIAL_STRINGS), children, max_size=4
        )
    ),
    max_leaves=10,
)


def json_paths(obj: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place in a JSON document, the root first."""
    yield prefix
    if isinstance(obj, dict):
        for key, child in obj.items():
            yield from json_paths(child, (*prefix, key))
    elif isinstance(obj, list):
        for i, child in enumerate(obj):
            yield from json_paths(child, (*prefix, i))


def node(doc: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        doc = doc[part]
    return doc


@st.composite
def json_edit(draw: st.DrawFn, doc: Any) -> Any:
    """``doc`` (a fresh copy) with a few structural edits: replace, delete, add, retype."""
    doc = json.loads(json.dumps(doc))
    for _ in range(draw(st.integers(1, 3))):
        paths = list(json_paths(doc))
        path = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(["replace", "delete", "add", "stringify", "wrap", "number"]))
        if not path:
            if op in ("replace", "wrap"):
                doc = draw(JSON_VALUES) if op == "replace" else [doc]
            continue
        parent, last = node(doc, path[:-1]), path[-1]
        if op == "replace":
            parent[last] = draw(JSON_VALUES)
        elif op == "delete":
            del parent[last]
        elif op == "add":
            target = parent[last]
            if isinstance(target, dict):
                target[draw(st.sampled_from(SPECIAL_STRINGS) | st.text(max_size=8))] = draw(
                    JSON_VALUES
                )
            elif isinstance(target, list):
                target.insert(draw(st.integers(0, len(target))), draw(JSON_VALUES))
        elif op == "stringify":
            parent[last] = json.dumps(parent[last])
        elif op == "wrap":
            parent[last] = [parent[last]]
        elif isinstance(parent[last], (int, float)) and not isinstance(parent[last], bool):
            parent[last] = draw(
                st.sampled_from([float(parent[last]), -parent[last], parent[last] + 1, 0, 10**30])
            )
    return doc


@st.composite
def byte_edit(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with a few byte-level mutations."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete", "splice"]))
        at = draw(st.integers(0, max(len(out) - 1, 0)))
        if op == "flip" and out:
            out[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and out:
            out[at] = draw(st.sampled_from([0, 0x22, 0x5C, 0x7B, 0x7D, 0x30, 0xFF, 0x80]))
        elif op == "truncate":
            del out[at:]
        elif op == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del out[at : at + draw(st.integers(1, 64))]
        elif op == "splice" and out:
            start = draw(st.integers(0, len(out) - 1))
            out[at:at] = out[start : start + draw(st.integers(1, 512))]
    return bytes(out)


# --- parse_state --------------------------------------------------------------------------------

VALID_STATE = WorkflowState(
    {
        "user:1": StepEntry(
            {"id": 1, "name": "Ada Lovelace", "tags": ["a", "ü", "🙂"], "score": 1.5, "ok": True},
            StepMeta(saved_at=1_700_000_000.25, duration_ms=12.5, name="fetch_user"),
        ),
        "none": StepEntry(None, StepMeta(saved_at=0.0)),
        "set": StepEntry({1, 2, 3}, StepMeta(saved_at=1.0)),
        "bytes": StepEntry(b"\x00\x01binary", StepMeta(saved_at=2.0)),
        "array": StepEntry(np.arange(6).reshape(2, 3), StepMeta(saved_at=3.0)),
        "tuple": StepEntry((1, "x", None), StepMeta(saved_at=4.0, name=None)),
        "big int": StepEntry(2**200, StepMeta(saved_at=5.0)),
    }
)
VALID_TEXT = stringify_state(VALID_STATE, {"workflow_id": "wf-123", "nested": {"a": [1, 2.5]}})
VALID_DOC = json.loads(VALID_TEXT)


def parses_or_refuses(text: str | bytes) -> WorkflowState | None:
    """``parse_state(text)``: a state or StateFormatError, and no warning but CacheWarning."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            state = parse_state(text)
        except StateFormatError:
            state = None
    others = [f"{w.category.__name__}: {w.message}" for w in caught]
    others = [o for o, w in zip(others, caught, strict=True) if w.category is not CacheWarning]
    assert not others, others
    assert state is None or isinstance(state, WorkflowState)
    outcome("refused" if state is None else f"parsed, {min(len(state), 2)}+ steps")
    if caught:
        outcome("a value left out with a CacheWarning")
    return state


def test_parse_state_round_trips_the_fuzz_base() -> None:
    back = parse_state(VALID_TEXT)
    assert set(back.steps) == set(VALID_STATE.steps)
    assert np.array_equal(back["array"].value, VALID_STATE["array"].value)
    assert back.metadata == {"workflow_id": "wf-123", "nested": {"a": [1, 2.5]}}


def forged_entry(value: Any, meta: Any, *, pickled: bytes | None) -> dict[str, Any]:
    """An entry whose checksum matches, so the parser goes past it: to JSON or unpickling."""
    if pickled is not None:
        return {
            "encoding": "cloudpickle",
            "data": base64.b64encode(pickled).decode(),
            "sha256": hashlib.sha256(pickled).hexdigest(),
            "meta": meta,
        }
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return {
        "encoding": "json",
        "value": value,
        "sha256": hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest(),
        "meta": meta,
    }


METAS = JSON_VALUES | st.fixed_dictionaries(
    {"saved_at": st.floats() | st.integers(-(2**64), 2**64), "duration_ms": LEAVES},
    optional={"name": LEAVES},
)

ARBITRARY_TEXT = st.one_of(
    st.text(),
    st.binary(),
    JSON_VALUES.map(json.dumps),
    st.fixed_dictionaries(
        {"format": st.just("awaitly_nb/state"), "version": st.just(1)},
        optional={"steps": JSON_VALUES, "metadata": JSON_VALUES, "written_by": JSON_VALUES},
    ).map(json.dumps),
    st.builds(
        lambda key, value, meta, pickled: json.dumps(
            {
                "format": "awaitly_nb/state",
                "version": 1,
                "steps": {key: forged_entry(value, meta, pickled=pickled)},
            }
        ),
        st.text(max_size=8),
        JSON_VALUES,
        METAS,
        st.none() | st.binary(max_size=64),
    ),
)


@FUZZ
@given(ARBITRARY_TEXT)
def test_parse_state_on_arbitrary_text_only_raises_state_format_error(text: str | bytes) -> None:
    parses_or_refuses(text)


@st.composite
def mutated_state_text(draw: st.DrawFn) -> str | bytes:
    kind = draw(st.sampled_from(["bytes", "text", "json", "json", "forged"]))
    if kind in ("bytes", "text"):
        data = draw(byte_edit(VALID_TEXT.encode()))
        return data if kind == "bytes" else data.decode("utf-8", "replace")
    doc = draw(json_edit(VALID_DOC))
    if kind == "forged" and isinstance(doc, dict) and isinstance(doc.get("steps"), dict):
        pickled = draw(st.none() | st.binary(max_size=64))
        doc["steps"][draw(st.text(max_size=6))] = forged_entry(
            draw(JSON_VALUES), draw(METAS), pickled=pickled
        )
    return json.dumps(doc)


@FUZZ
@given(mutated_state_text())
def test_parse_state_on_mutated_valid_text_only_raises_state_format_error(
    text: str | bytes,
) -> None:
    parses_or_refuses(text)


def nested(depth: int, where: str) -> str:
    inner = "[" * depth + "]" * depth
    if where == "value":
        step = {"meta": {"saved_at": 0}, "encoding": "json", "sha256": "0" * 64, "value": "@"}
        doc = {"format": "awaitly_nb/state", "version": 1, "steps": {"a": step}}
    else:
        doc = {"format": "awaitly_nb/state", "version": 1, "steps": {}, "metadata": {"a": "@"}}
    return json.dumps(doc).replace('"@"', inner)


def at_stack_depth(frames: int, fn: Any) -> Any:
    return fn() if frames == 0 else at_stack_depth(frames - 1, fn)


@pytest.mark.parametrize("where", ["value", "metadata"])
def test_parse_state_on_nesting_around_the_recursion_limit(where: str) -> None:
    """Hypothesis does not nest a thousand deep: every depth near the limit, explicitly."""
    for frames in (0, 7, 31):
        for depth in [*range(900, 1_100), 5_000, 100_000]:
            at_stack_depth(frames, lambda depth=depth: parses_or_refuses(nested(depth, where)))


@pytest.mark.parametrize("field", ["saved_at", "duration_ms"])
def test_parse_state_refuses_a_huge_integer_time(field: str) -> None:
    doc = json.loads(VALID_TEXT)
    doc["steps"]["user:1"]["meta"][field] = 10**400
    with pytest.raises(StateFormatError):
        parse_state(json.dumps(doc))


# --- bundle import --------------------------------------------------------------------------------


def tar_bytes(members: list[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def tar_members(data: bytes) -> list[tuple[str, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]


class Bundles:
    """Valid bundles to mutate, and one store (one directory) to import into, reused."""

    def __init__(self, root: Path) -> None:
        source = LocalStore(root / "source")
        source.save("nb", "small", {"variables": ["x"]}, {"x": 1, "s": "ü"})
        tiny = root / "tiny.awnb"
        export_bundle(source, tiny, keys=["small"])
        source.save("nb", "blob", {}, np.arange(9_000, dtype=np.float64))  # one 72 KB blob
        with_blob = root / "blob.awnb"
        export_bundle(source, with_blob, keys=["blob"])
        source.save("nb", "stream", {}, [str(i) for i in range(3_000)])  # a stream blob
        with_stream = root / "stream.awnb"
        export_bundle(source, with_stream, keys=["stream"])
        source.close()
        self.bases = {
            "tiny": tiny.read_bytes(),
            "blob": with_blob.read_bytes(),
            "stream": with_stream.read_bytes(),
        }
        self.members = {name: tar_members(data) for name, data in self.bases.items()}
        self.root = root
        self.file = root / "fuzzed.awnb"
        self.store = LocalStore(root / "store")

    def check_import(self, data: bytes, *, trust: bool = True) -> None:
        """Import ``data``: success or StateFormatError (TrustError untrusted), all or nothing."""
        self.file.write_bytes(data)
        store = self.store
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                report = import_bundle(store, self.file, trust=trust)
            except (StateFormatError, TrustError) as exc:
                assert trust is False or not isinstance(exc, TrustError)
                outcome(f"refused: {type(exc).__name__}")
                report = None
            if report is None:  # all or nothing: nothing was added
                assert store.manifests() == []
                assert list(store.blobs.names()) == []
            else:
                outcome(f"imported {len(report.steps)} step(s), {report.blobs} blob(s)")
                unloadable = []
                for workflow, key in report.steps:
                    try:
                        store.load(workflow, key)
                    except StateFormatError:
                        unloadable.append(f"{workflow} / {key}: ")
                problems = store.verify()  # must not raise, and must name every unloadable step
                for prefix in unloadable:
                    assert any(p.startswith(prefix) for p in problems), (prefix, problems)
                store.clear()
                store.gc(min_age=0)
        assert not [w for w in caught if w.category is not CacheWarning], [
            str(w.message) for w in caught
        ]
        tmp = store.directory / "blobs" / "tmp"
        assert not tmp.exists() or not any(tmp.iterdir()), "a temporary file was left"

    def close(self) -> None:
        self.store.close()


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bundles]:
    root = tmp_path_factory.mktemp("bundles")
    made = Bundles(root)
    yield made
    made.close()
    shutil.rmtree(root, ignore_errors=True)


def test_the_fuzz_bases_import(bundles: Bundles) -> None:
    for data in bundles.bases.values():
        bundles.file.write_bytes(data)
        report = import_bundle(bundles.store, bundles.file, trust=True)
        assert len(report.steps) == 1
        workflow, key = report.steps[0]
        assert bundles.store.load(workflow, key) is not None
        bundles.store.clear()
        bundles.store.gc(min_age=0)


MEMBER_NAMES = st.sampled_from(
    ["awaitly-bundle.json", "awaitly-bundle.sig", "blobs/" + "0" * 32, "blobs/../../x", "x"]
) | st.text(min_size=1, max_size=20)
MANIFESTS = st.fixed_dictionaries(
    {"format": st.just("awaitly_nb/bundle"), "version": st.just(1)},
    optional={"steps": JSON_VALUES, "blobs": JSON_VALUES, "versions": JSON_VALUES},
)
ARBITRARY_FILES = st.one_of(
    st.binary(max_size=4096),
    st.lists(st.tuples(MEMBER_NAMES, st.binary(max_size=600)), max_size=4).map(tar_bytes),
    (JSON_VALUES | MANIFESTS).map(
        lambda doc: tar_bytes([("awaitly-bundle.json", json.dumps(doc).encode())])
    ),
)


@FUZZ
@given(data=ARBITRARY_FILES, trust=st.sampled_from([True] * 9 + [False]))
def test_import_of_arbitrary_files_only_raises_state_format_error(
    bundles: Bundles, data: bytes, trust: bool
) -> None:
    bundles.check_import(data, trust=trust)


@st.composite
def mutated_bundle(
    draw: st.DrawFn, members: dict[str, list[tuple[str, bytes]]], bases: Any
) -> bytes:
    base = draw(st.sampled_from(sorted(bases)))
    kind = draw(st.sampled_from(["bytes", "bytes", "manifest", "manifest", "members"]))
    if kind == "bytes":
        return draw(byte_edit(bases[base]))
    parts = list(members[base])
    if kind == "manifest":
        i = next(i for i, (name, _) in enumerate(parts) if name == "awaitly-bundle.json")
        doc = draw(json_edit(json.loads(parts[i][1])))
        parts[i] = ("awaitly-bundle.json", json.dumps(doc).encode())
        return tar_bytes(parts)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["drop", "duplicate", "reorder", "rename", "edit"]))
        if not parts:
            break
        i = draw(st.integers(0, len(parts) - 1))
        name, data = parts[i]
        if op == "drop":
            del parts[i]
        elif op == "duplicate":
            parts.insert(draw(st.integers(0, len(parts))), (name, draw(byte_edit(data))))
        elif op == "reorder":
            parts.reverse()
        elif op == "rename":
            parts[i] = (draw(MEMBER_NAMES), data)
        else:
            parts[i] = (name, draw(byte_edit(data)))
    return tar_bytes(parts)


@FUZZ
@given(st.data())
def test_import_of_mutated_bundles_only_raises_state_format_error(
    bundles: Bundles, data: st.DataObject
) -> None:
    bundles.check_import(data.draw(mutated_bundle(bundles.members, bundles.bases)))
