"""codec: records with big buffers in blob files, restored copy-on-write; damage; round trips."""

from __future__ import annotations

import itertools
import mmap
import os
import pickle
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import hypothesis.extra.numpy as hnp
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import xxhash
from awaitly_testing import big_array, blob_files, flip_byte, memory_map_under
from hypothesis import example, given, settings
from hypothesis import strategies as st

from awaitly_nb import StateFormatError
from awaitly_nb.storage import codec, values
from awaitly_nb.storage.blobs import BlobStore
from awaitly_nb.storage.codec import versions
from awaitly_nb.storage.local import LocalStore
from awaitly_nb.storage.manifest import RECORD_FORMAT, ValueRecord


# The stored form of a record (a dict, as in the index) is what these tests check.
def encode(value: Any, blobs: BlobStore) -> dict[str, Any]:
    return values.write_value(value, blobs).to_dict()


def decode(record: Any, blobs: BlobStore, **options: Any) -> Any:
    return values.read_value(ValueRecord.from_dict(record), blobs, **options)


def blob_names(record: Any) -> list[str]:
    try:
        return [ref.name for ref in ValueRecord.from_dict(record).blobs()]
    except StateFormatError:
        return []


LIMIT = codec.INLINE_BUFFER_LIMIT


# --- helpers ---------------------------------------------------------------------------------


MAPPED = 200_000  # float64s: 1.6 MB, above values.MAP_MIN, so restored by memory map


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "blobs")


# --- what a record looks like ----------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [None, 1, "text", {"a": [1, 2]}, np.arange(10), np.zeros(1000)],
    ids=["none", "int", "str", "dict", "small array", "8 KB array"],
)
def test_small_values_are_inline_and_make_no_blobs(blobs: BlobStore, value: Any) -> None:
    record = encode(value, blobs)
    assert record["format"] == RECORD_FORMAT
    assert record["versions"] == versions()
    assert record["buffers"] == []
    assert "stream_ref" not in record
    assert isinstance(record["stream"], bytes)
    assert record["nbytes"] == len(record["stream"])
    assert blob_names(record) == []
    assert blob_files(blobs.directory) == []
    back = decode(record, blobs)
    if isinstance(value, np.ndarray):
        np.testing.assert_array_equal(back, value, strict=True)
    else:
        assert back == value


@pytest.mark.parametrize("nbytes", [LIMIT, 200_000])
def test_a_big_array_goes_out_of_band_into_one_blob_of_its_size(
    blobs: BlobStore, nbytes: int
) -> None:
    array = np.random.default_rng(1).integers(0, 256, nbytes, dtype=np.uint8)
    record = encode(array, blobs)
    files = blob_files(blobs.directory)
    assert len(files) == 1
    assert files[0].stat().st_size == array.nbytes
    assert files[0].read_bytes() == array.tobytes()
    name = xxhash.xxh3_128_hexdigest(array.tobytes())
    assert record["buffers"] == [(name, array.nbytes)]
    assert files[0] == blobs.path(name)
    assert len(record["stream"]) < 1024  # only the array's description stays inline
    assert record["nbytes"] == len(record["stream"]) + array.nbytes
    assert blob_names(record) == [name]


def test_buffers_below_the_limit_stay_in_band(blobs: BlobStore) -> None:
    below = np.ones(LIMIT - 1, dtype=np.uint8)
    record = encode(below, blobs)
    assert record["buffers"] == []
    at = encode(np.ones(LIMIT, dtype=np.uint8), blobs)
    assert at["buffers"] == [(xxhash.xxh3_128_hexdigest(np.ones(LIMIT, np.uint8)), LIMIT)]
    np.testing.assert_array_equal(decode(record, blobs), below, strict=True)


def test_a_long_stream_becomes_a_blob_and_a_short_one_stays_inline(blobs: BlobStore) -> None:
    short = encode(list(range(100)), blobs)
    assert "stream" in short and "stream_ref" not in short
    assert len(short["stream"]) <= values.INLINE_STREAM_LIMIT
    many_small_things = [str(i) for i in range(20_000)]  # no big buffer, a long stream
    record = encode(many_small_things, blobs)
    assert "stream" not in record
    assert record["buffers"] == []
    name, size = record["stream_ref"]
    assert size > values.INLINE_STREAM_LIMIT
    assert blobs.path(name).stat().st_size == size
    assert blob_names(record) == [name]
    assert decode(record, blobs) == many_small_things


def test_blob_names_lists_buffers_and_the_stream_blob(blobs: BlobStore) -> None:
    value = {"a": big_array(1), "b": big_array(2), "pad": [str(i) for i in range(10_000)]}
    record = encode(value, blobs)
    names = blob_names(record)
    assert len(names) == 3
    assert set(names) == {n for n, _ in record["buffers"]} | {record["stream_ref"][0]}
    assert {p.parent.name + p.name for p in blob_files(blobs.directory)} == set(names)
    assert blob_names("not a record") == []
    assert blob_names({"format": 2}) == []


def test_the_same_array_twice_in_a_value_is_one_blob_and_one_object(blobs: BlobStore) -> None:
    array = big_array()
    record = encode([array, array, array.copy()], blobs)
    assert len(blob_files(blobs.directory)) == 1
    a, b, c = decode(record, blobs)
    assert a is b
    assert c is not a
    np.testing.assert_array_equal(c, array)


# --- restoring: copy-on-write memory maps ----------------------------------------------------


def test_a_restored_array_is_a_writable_copy_on_write_memory_map(blobs: BlobStore) -> None:
    array = big_array(count=MAPPED)
    record = encode(array, blobs)
    (file,) = blob_files(blobs.directory)
    before = file.read_bytes()

    restored = decode(record, blobs)
    assert isinstance(memory_map_under(restored), mmap.mmap)  # mapped, not copied
    assert restored.flags.writeable
    restored[:] = -1.0
    restored[0] = 42.0
    assert restored[0] == 42.0

    assert file.read_bytes() == before  # the write never reached the file
    again = decode(record, blobs)
    np.testing.assert_array_equal(again, array)
    assert restored[0] == 42.0  # and the two loads are independent
    again[1] = 7.0
    assert restored[1] == -1.0


def test_a_stream_blob_is_mapped_too_and_loads_after_writes_to_a_first_copy(
    blobs: BlobStore,
) -> None:
    value = {"names": [str(i) for i in range(10_000)], "data": big_array()}
    record = encode(value, blobs)
    assert "stream_ref" in record
    first = decode(record, blobs)
    first["data"][:] = 0.0
    first["names"].clear()
    second = decode(record, blobs)
    assert second["names"] == value["names"]
    np.testing.assert_array_equal(second["data"], value["data"])


def test_a_step_store_load_is_memory_mapped_and_writes_stay_private(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    array = big_array(count=MAPPED).reshape(400, 500)
    store.save("wf", "k", {}, {"array": array})
    (file,) = blob_files(tmp_path / "store" / "blobs")
    before = file.read_bytes()
    loaded = store.load("wf", "k")["array"]
    assert isinstance(memory_map_under(loaded), mmap.mmap)
    loaded += 1.0
    assert file.read_bytes() == before
    np.testing.assert_array_equal(LocalStore(tmp_path / "store").load("wf", "k")["array"], array)
    store.close()


def test_a_restored_dataframe_column_is_memory_mapped(blobs: BlobStore) -> None:
    frame = pd.DataFrame({"x": big_array(count=MAPPED), "y": big_array(2, count=MAPPED)})
    restored = decode(encode(frame, blobs), blobs)
    assert isinstance(memory_map_under(restored["x"].to_numpy()), mmap.mmap)
    pd.testing.assert_frame_equal(restored, frame, check_exact=True)


@pytest.mark.skipif(
    not Path("/dev/fd").is_dir() or sys.platform == "win32", reason="needs RLIMIT_NOFILE"
)
def test_a_value_with_more_big_buffers_than_free_file_descriptors_loads(
    blobs: BlobStore,
) -> None:
    import resource

    value = [np.full(LIMIT // 8, i, dtype=np.float64) for i in range(150)]
    record = encode(value, blobs)
    assert len(record["buffers"]) == 150
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    room = len(os.listdir("/dev/fd")) + 100  # 100 free descriptors, fewer than 150 buffers
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(room, soft), hard))
    try:
        back = decode(record, blobs)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert len(back) == 150
    for i, array in enumerate(back):
        assert array[0] == i


def test_only_the_biggest_buffers_are_mapped(
    blobs: BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(values, "MAP_MIN", LIMIT)  # every buffer would qualify
    value = [np.full(LIMIT // 8 + i, i, dtype=np.float64) for i in range(values.MAX_MAPS + 10)]
    back = decode(encode(value, blobs), blobs)
    mapped = [isinstance(memory_map_under(a), mmap.mmap) for a in back]
    assert sum(mapped) == values.MAX_MAPS
    assert mapped[-values.MAX_MAPS :] == [True] * values.MAX_MAPS  # the biggest ones
    for i, array in enumerate(back):
        assert array[-1] == i and array.flags.writeable


def test_small_blobs_are_read_not_mapped(blobs: BlobStore) -> None:
    array = big_array()  # 160 KB: out of band, but below MAP_MIN
    restored = decode(encode(array, blobs), blobs)
    assert not isinstance(memory_map_under(restored), mmap.mmap)
    assert restored.flags.writeable
    np.testing.assert_array_equal(restored, array)


# --- damaged records -------------------------------------------------------------------------

Mutation = Callable[[dict[str, Any], BlobStore], Any]


def _set(key: str, value: Any) -> Mutation:
    def mutate(record: dict[str, Any], blobs: BlobStore) -> Any:
        record[key] = value
        return record

    return mutate


def _drop(key: str) -> Mutation:
    def mutate(record: dict[str, Any], blobs: BlobStore) -> Any:
        del record[key]
        return record

    return mutate


def _truncate_blob(record: dict[str, Any], blobs: BlobStore) -> Any:
    path = blobs.path(record["buffers"][0][0])
    path.write_bytes(path.read_bytes()[:-1])
    return record


def _delete_blob(record: dict[str, Any], blobs: BlobStore) -> Any:
    blobs.path(record["buffers"][0][0]).unlink()
    return record


def _flip_blob(record: dict[str, Any], blobs: BlobStore) -> Any:
    flip_byte(blobs.path(record["buffers"][0][0]), offset=12345)
    return record


def _wrong_size(record: dict[str, Any], blobs: BlobStore) -> Any:
    name, size = record["buffers"][0]
    record["buffers"] = [(name, size + 8)]
    return record


SIZE = big_array().nbytes

DAMAGE: dict[str, tuple[Mutation, str]] = {
    "bytes instead of a record": (lambda r, b: b"\x80\x04K\x01.", "a bytes, not a dict"),
    "None instead of a record": (lambda r, b: None, "a NoneType, not a dict"),
    "list instead of a record": (lambda r, b: list(r.items()), "a list, not a dict"),
    "newer format": (
        _set("format", RECORD_FORMAT + 1),
        f"format {RECORD_FORMAT + 1}; this awaitly_nb reads {RECORD_FORMAT}",
    ),
    "format as text": (
        _set("format", str(RECORD_FORMAT)),
        f"format {str(RECORD_FORMAT)!r}",
    ),
    "no format": (_drop("format"), "format None"),
    "no buffer list": (_drop("buffers"), "bad buffer list"),
    "buffer list is text": (_set("buffers", "abc"), "bad buffer list"),
    "buffer ref too short": (_set("buffers", [("abc",)]), "bad buffer list"),
    "buffer name not text": (_set("buffers", [(1, SIZE)]), "bad buffer list"),
    "buffer size not int": (_set("buffers", [("abc", str(SIZE))]), "bad buffer list"),
    "no stream": (_drop("stream"), "no pickle stream"),
    "bad stream ref": (
        lambda r, b: {**{k: v for k, v in r.items() if k != "stream"}, "stream_ref": "x"},
        "bad stream reference",
    ),
    "stream is text": (_set("stream", "text"), "pickle stream is not bytes"),
    "stream is a number": (_set("stream", 12), "pickle stream is not bytes"),
    "no stream checksum": (_drop("stream_xxh3"), "checksum does not match"),
    "wrong stream checksum": (_set("stream_xxh3", "0" * 32), "checksum does not match"),
    "truncated blob": (_truncate_blob, f"has {SIZE - 1} bytes, expected {SIZE}"),
    "missing blob": (_delete_blob, "is missing"),
    "flipped byte in a blob": (_flip_blob, "is damaged: its content does not match"),
    "wrong blob size in the record": (_wrong_size, f"has {SIZE} bytes, expected {SIZE + 8}"),
    "buffers left out": (_set("buffers", []), "cannot unpickle"),
}


@pytest.mark.parametrize("damage", list(DAMAGE), ids=list(DAMAGE))
def test_damaged_record_raises_state_format_error_saying_what_is_wrong(
    blobs: BlobStore, damage: str
) -> None:
    mutate, message = DAMAGE[damage]
    record = encode(big_array(), blobs)
    np.testing.assert_array_equal(decode(dict(record), blobs), big_array())
    damaged = mutate(dict(record), blobs)
    with pytest.raises(StateFormatError) as info:
        decode(damaged, blobs)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


def _stream_blob_path(record: dict[str, Any], blobs: BlobStore) -> Path:
    return blobs.path(record["stream_ref"][0])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda path: path.unlink(), "is missing"),
        (lambda path: path.write_bytes(path.read_bytes()[:100]), "has 100 bytes, expected"),
        (lambda path: flip_byte(path, 5000), "pickle stream's checksum does not match"),
    ],
    ids=["missing", "truncated", "flipped byte"],
)
def test_damaged_stream_blob_raises_state_format_error(
    blobs: BlobStore, damage: Callable[[Path], Any], message: str
) -> None:
    record = encode([str(i) for i in range(10_000)], blobs)
    damage(_stream_blob_path(record, blobs))
    with pytest.raises(StateFormatError, match=message):
        decode(record, blobs)


@pytest.fixture(scope="module")
def small_record(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], BlobStore]:
    blobs = BlobStore(tmp_path_factory.mktemp("small") / "blobs")
    return encode({"values": [1, 2, 3], "name": "payload"}, blobs), blobs


@settings(database=None, deadline=None, max_examples=100)
@given(where=st.integers(min_value=0), bit=st.integers(min_value=0, max_value=7))
def test_flipped_byte_in_an_inline_stream_is_detected(
    small_record: tuple[dict[str, Any], BlobStore], where: int, bit: int
) -> None:
    record, blobs = small_record
    stream = bytearray(record["stream"])
    stream[where % len(stream)] ^= 1 << bit
    with pytest.raises(StateFormatError, match="checksum does not match"):
        decode({**record, "stream": bytes(stream)}, blobs)


def test_value_referring_to_a_missing_module_cannot_be_loaded(
    blobs: BlobStore, gone_module: SimpleNamespace
) -> None:
    record = encode({"obj": gone_module.obj, "array": big_array()}, blobs)
    assert decode(record, blobs)["obj"].x == 1
    gone_module.remove()
    with pytest.raises(StateFormatError, match=f"cannot unpickle.*{gone_module.name}"):
        decode(record, blobs)


def test_unloadable_record_names_the_versions_that_wrote_it(blobs: BlobStore) -> None:
    stream = b"\x80\x04cno_such_module_for_awaitly_tests\nThing\n)\x81."
    record = {
        **encode(None, blobs),
        "stream": stream,
        "stream_xxh3": xxhash.xxh3_128_hexdigest(stream),
        "versions": {"python": "2.7.18", "cloudpickle": "0.1", "awaitly_nb": "0.0.1"},
    }
    with pytest.raises(
        StateFormatError, match=r"written by python 2\.7\.18, cloudpickle 0\.1.*; this is python"
    ):
        decode(record, blobs)


# --- round trips through a LocalStore ---------------------------------------------------------


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalStore, LocalStore]]:
    """A store to save into and a second store object on the same directory to load from."""
    where = tmp_path_factory.mktemp("round-trips")
    writer, reader = LocalStore(where), LocalStore(where)
    yield writer, reader
    writer.close()
    reader.close()


_keys = itertools.count()


def round_trip(stores: tuple[LocalStore, LocalStore], value: Any) -> Any:
    writer, reader = stores
    key = f"k{next(_keys)}"
    writer.save("round-trip", key, {}, value)
    return reader.load("round-trip", key)


def assert_same(back: Any, value: Any) -> None:
    """Equal and of the same types, dtypes and bits, recursively."""
    assert type(back) is type(value)
    if isinstance(value, np.ndarray):
        # What plain pickle gives: numpy itself turns a non-native byte order into the
        # native one when it pickles a non-contiguous array in band (joblib#280).
        reference = pickle.loads(pickle.dumps(value, protocol=5))
        assert back.dtype == reference.dtype
        assert back.shape == value.shape
        if value.dtype.hasobject:
            assert [type(x) for x in back.flat] == [type(x) for x in value.flat]
            np.testing.assert_array_equal(back, value, strict=True)
        else:
            assert back.tobytes() == reference.tobytes()  # bit for bit, NaN payloads too
            if back.dtype == value.dtype:
                assert back.tobytes() == value.tobytes()
        if value.flags.f_contiguous and not value.flags.c_contiguous:
            assert back.flags.f_contiguous
    elif isinstance(value, pd.DataFrame):
        pd.testing.assert_frame_equal(
            back,
            value,
            check_exact=True,
            check_flags=True,
            check_index_type=True,
            check_column_type=True,
        )
        for name in value.columns:
            assert_column_bits(back[name], value[name])
        assert_column_bits(back.index.to_series(), value.index.to_series())
    elif isinstance(value, pd.Series):
        pd.testing.assert_series_equal(
            back,
            value,
            check_exact=True,
            check_flags=True,
            check_index_type=True,
            check_series_type=True,
        )
        assert_column_bits(back, value)
    elif isinstance(value, pa.Table):
        assert back.schema.equals(value.schema, check_metadata=True)
        assert ipc_bytes(back) == ipc_bytes(value)  # bit for bit, NaN too
        if value.equals(value):  # Table.equals says NaN != NaN
            assert back.equals(value, check_metadata=True)
    elif isinstance(value, dict):
        assert list(back) == list(value)
        for k in value:
            assert_same(back[k], value[k])
    elif isinstance(value, (list, tuple)):
        assert len(back) == len(value)
        for b, v in zip(back, value, strict=True):
            assert_same(b, v)
    else:
        assert back == value


def ipc_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue())


def assert_column_bits(back: pd.Series, value: pd.Series) -> None:
    assert back.dtype == value.dtype
    if isinstance(value.dtype, np.dtype) and value.dtype.kind in "biufcmM":
        assert back.to_numpy().tobytes() == value.to_numpy().tobytes()


def _from_random_bytes(dtype: np.dtype, count: int, seed: int) -> np.ndarray:
    data = np.random.default_rng(seed).bytes(count * dtype.itemsize)
    return np.frombuffer(data, dtype=dtype).copy()


@st.composite
def big_arrays(draw: st.DrawFn) -> np.ndarray:
    """Arrays above the out-of-band threshold, in several layouts."""
    dtype = np.dtype(draw(st.sampled_from(["<f8", ">f8", "<i4", "u1", "<c16", "<M8[ns]", "<f2"])))
    count = 16 * draw(
        st.integers(LIMIT // dtype.itemsize // 16 + 1, 3 * LIMIT // dtype.itemsize // 16)
    )
    array = _from_random_bytes(dtype, count, draw(st.integers(0, 2**32 - 1)))
    layout = draw(st.sampled_from(["flat", "2-d", "fortran", "every other", "reversed", "columns"]))
    if layout == "2-d":
        return array.reshape(-1, 16)
    if layout == "fortran":
        return np.asfortranarray(array.reshape(-1, 16))
    if layout == "every other":
        return array[::2]
    if layout == "reversed":
        return array[::-1]
    if layout == "columns":
        return array.reshape(-1, 16)[:, 3:11]
    return array


def _sliced(draw: st.DrawFn, array: np.ndarray) -> np.ndarray:
    how = draw(st.sampled_from(["as is", "fortran", "transposed", "strided", "reversed"]))
    if how == "fortran":
        return np.asfortranarray(array)
    if how == "transposed":
        return array.T
    if how == "strided" and array.ndim:
        return array[::2]
    if how == "reversed" and array.ndim:
        return array[::-1]
    return array


_scalar_dtypes = (
    hnp.scalar_dtypes() | hnp.byte_string_dtypes(max_len=4) | hnp.unicode_string_dtypes(max_len=4)
)


@st.composite
def small_arrays(draw: st.DrawFn) -> np.ndarray:
    """Arrays of any dtype (structured too), 0-d, empty, sliced and in Fortran order."""
    dtype = draw(_scalar_dtypes | hnp.array_dtypes(hnp.scalar_dtypes(), max_size=3))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5))
    return _sliced(draw, draw(hnp.arrays(dtype, shape)))


_objects = st.one_of(
    st.none(),
    st.integers(),
    st.text(max_size=5),
    st.tuples(st.integers(), st.text(max_size=2)),
    st.decimals(allow_nan=False).map(str),
)


@st.composite
def object_arrays(draw: st.DrawFn) -> np.ndarray:
    items = draw(st.lists(_objects, max_size=12))
    array = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        array[i] = item
    if len(items) % 2 == 0 and draw(st.booleans()):
        array = array.reshape(2, -1)
    return array


numpy_arrays = small_arrays() | object_arrays() | big_arrays()


@settings(database=None, deadline=None, max_examples=120)
@given(numpy_arrays)
@example(np.array(3.5))  # 0-d
@example(np.zeros((0, 3), dtype=">i2"))  # empty
@example(np.array([(1, 2.0, b"x")], dtype=[("a", "<i4"), ("b", ">f8"), ("c", "S2")]))
@example(np.asfortranarray(big_array().reshape(100, 200)))
@example(big_array()[::3])  # non-contiguous, in band, a long stream
@example(np.array([1, "a", None, (2,)], dtype=object))
@example(np.zeros(0, dtype=object))
def test_numpy_arrays_round_trip_bit_for_bit(
    stores: tuple[LocalStore, LocalStore], array: np.ndarray
) -> None:
    assert_same(round_trip(stores, array), array)


@st.composite
def frames(draw: st.DrawFn) -> pd.DataFrame:
    """DataFrames with numeric, NaN, categorical, string, str and object columns."""
    n = draw(st.integers(0, 6))
    rows = st.lists
    ints = draw(rows(st.integers(-(2**63), 2**63 - 1), min_size=n, max_size=n))
    floats = draw(rows(st.floats(), min_size=n, max_size=n))
    floats32 = draw(rows(st.floats(width=32), min_size=n, max_size=n))
    categories = draw(rows(st.sampled_from(["b", "a", "c"]) | st.none(), min_size=n, max_size=n))
    strings = draw(rows(st.text(max_size=4) | st.none(), min_size=n, max_size=n))
    texts = draw(rows(st.text(max_size=4), min_size=n, max_size=n))
    objects = np.empty(n, dtype=object)
    objects[:] = [None] * n
    for i, item in enumerate(draw(rows(_objects, min_size=n, max_size=n))):
        objects[i] = item
    if draw(st.booleans()):
        first = draw(rows(st.integers(0, 3), min_size=n, max_size=n))
        second = draw(rows(st.text(max_size=2), min_size=n, max_size=n))
        index: pd.Index = pd.MultiIndex.from_arrays([first, second], names=["one", "two"])
    else:
        index = pd.RangeIndex(n)
    frame = pd.DataFrame(
        {
            "ints": np.array(ints, dtype=np.int64),
            "floats": np.array(floats, dtype=np.float64),
            "f32": np.array(floats32, dtype=np.float32),
            "categories": pd.Categorical(
                categories, categories=["c", "a", "b"], ordered=draw(st.booleans())
            ),
            "strings": pd.array(strings, dtype="string"),
            "texts": pd.Series(texts, dtype="str"),
            "objects": pd.Series(objects, dtype=object),
            "when": pd.to_datetime(np.array(ints, dtype=np.int64) // 1000, unit="ns"),
        }
    )
    frame.index = index
    if n and draw(st.booleans()):  # big: the numeric columns go out of band
        frame = frame.iloc[np.arange(10_000) % n]
    return frame


@settings(database=None, deadline=None, max_examples=40)
@given(frames())
def test_dataframes_round_trip(stores: tuple[LocalStore, LocalStore], frame: pd.DataFrame) -> None:
    assert_same(round_trip(stores, frame), frame)


@settings(database=None, deadline=None, max_examples=40)
@given(frames(), st.sampled_from(["ints", "floats", "categories", "strings", "texts", "objects"]))
def test_series_round_trip(
    stores: tuple[LocalStore, LocalStore], frame: pd.DataFrame, column: str
) -> None:
    series = frame[column].rename(column)
    assert_same(round_trip(stores, series), series)


@st.composite
def tables(draw: st.DrawFn) -> pa.Table:
    n = draw(st.integers(0, 6))
    rows = st.lists
    ints = draw(rows(st.integers(-(2**63), 2**63 - 1) | st.none(), min_size=n, max_size=n))
    floats = draw(rows(st.floats() | st.none(), min_size=n, max_size=n))
    strings = draw(rows(st.text(max_size=4) | st.none(), min_size=n, max_size=n))
    lists = draw(rows(rows(st.integers(-5, 5), max_size=3) | st.none(), min_size=n, max_size=n))
    table = pa.table(
        {
            "ints": pa.array(ints, type=pa.int64()),
            "floats": pa.array(floats, type=pa.float64()),
            "strings": pa.array(strings, type=pa.string()),
            "words": pa.array(strings, type=pa.string()).dictionary_encode(),
            "lists": pa.array(lists, type=pa.list_(pa.int8())),
            "structs": pa.StructArray.from_arrays(
                [pa.array(ints, type=pa.int64()), pa.array(strings, type=pa.large_string())],
                names=["i", "s"],
            ),
        },
        metadata={"source": "awaitly tests"},
    )
    if n and draw(st.booleans()):  # big: the buffers go out of band
        table = table.take(pa.array(np.arange(12_000) % n))
    return table


@settings(database=None, deadline=None, max_examples=40)
@given(tables())
def test_arrow_tables_round_trip(stores: tuple[LocalStore, LocalStore], table: pa.Table) -> None:
    assert_same(round_trip(stores, table), table)


def test_big_values_really_use_blobs_in_round_trips(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    frame = pd.DataFrame({"x": big_array(), "s": pd.array([str(i) for i in range(20_000)])})
    table = pa.table({"x": big_array(3)})
    store.save("wf", "values", {}, {"frame": frame, "table": table, "array": big_array(4)})
    sizes = sorted(p.stat().st_size for p in blob_files(tmp_path / "blobs"))
    assert sizes.count(big_array().nbytes) >= 3  # one per float column/array
    back = store.load("wf", "values")
    assert_same(back, {"frame": frame, "table": table, "array": big_array(4)})
    store.close()


@settings(database=None, deadline=None, max_examples=30)
@given(
    st.recursive(
        numpy_arrays | frames() | tables() | st.integers() | st.text(max_size=3),
        lambda inner: (
            st.lists(inner, max_size=3).map(tuple)
            | st.lists(inner, max_size=3)
            | st.dictionaries(st.text(max_size=3), inner, max_size=3)
        ),
        max_leaves=5,
    )
)
def test_nested_containers_round_trip(stores: tuple[LocalStore, LocalStore], value: Any) -> None:
    assert_same(round_trip(stores, value), value)


@pytest.mark.skipif(sys.version_info >= (3, 13), reason="maps keep no descriptor from 3.13")
@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_big_blobs_are_read_when_descriptors_run_short(blobs: BlobStore) -> None:
    import resource

    value = [big_array(i, count=MAPPED) for i in range(3)]
    record = encode(value, blobs)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = len(os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 2 * in_use + 2), hard))
    try:
        back = decode(record, blobs)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert [memory_map_under(a) for a in back] == [None, None, None]  # read, not mapped
    for original, restored in zip(value, back, strict=True):
        np.testing.assert_array_equal(restored, original)
    again = decode(record, blobs)  # with descriptors to spare: mapped
    assert all(isinstance(memory_map_under(a), mmap.mmap) for a in again)


def test_check_value_finds_a_record_short_of_buffers_without_unpickling(tmp_path: Path) -> None:
    import dataclasses

    from awaitly_nb.errors import StateFormatError
    from awaitly_nb.storage.blobs import BlobStore
    from awaitly_nb.storage.values import check_value, write_value

    blobs = BlobStore(tmp_path)
    record = write_value({"a": big_array()}, blobs)
    check_value(record, blobs)  # whole: fine
    short = dataclasses.replace(record, buffers=())
    with pytest.raises(StateFormatError, match=r"takes 1 buffer\(s\), the record names 0"):
        check_value(short, blobs)
