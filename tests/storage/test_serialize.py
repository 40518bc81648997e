"""serialize: cloudpickle protocol 5, out-of-band buffers, and the versions that wrote a value.

Damaged stored records are the codec's business: see ``test_codec.py``.
"""

from __future__ import annotations

import math
import mmap
import pickle
import platform
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cloudpickle
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import awaitly_nb
from awaitly_nb import SerializationError, StateFormatError
from awaitly_nb.storage.codec import dumps_value, loads_value, versions


def out_of_band(collected: list[pickle.PickleBuffer]) -> Any:
    """A buffer_callback that takes every buffer out of band into ``collected``."""

    def callback(buffer: pickle.PickleBuffer) -> bool:
        collected.append(buffer)
        return False

    return callback


# A pickle of an instance of a class whose module does not exist.
UNLOADABLE = b"\x80\x04cno_such_module_for_awaitly_tests\nThing\n)\x81."


# --- versions --------------------------------------------------------------------------------


def test_versions_name_python_cloudpickle_and_the_package() -> None:
    assert versions() == {
        "python": platform.python_version(),
        "cloudpickle": cloudpickle.__version__,
        "awaitly_nb": awaitly_nb.__version__,
    }
    assert all(isinstance(v, str) for v in versions().values())


# --- dumps_value / loads_value ---------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [None, 0, "text", {"a": (1, 2)}, {1, 2}, b"\x00raw", [None, 1.5], frozenset({"x"})],
    ids=repr,
)
def test_values_round_trip(value: Any) -> None:
    data = dumps_value(value)
    assert isinstance(data, bytes)
    back = loads_value(data)
    assert type(back) is type(value)
    assert back == value


def test_streams_use_pickle_protocol_5() -> None:
    data = dumps_value({"x": 1})
    assert data[:2] == b"\x80\x05"  # PROTO 5


def test_numpy_arrays_and_closures_round_trip() -> None:
    array = np.linspace(0, 1, 7)
    np.testing.assert_array_equal(loads_value(dumps_value(array)), array)
    scale = 3
    assert loads_value(dumps_value(lambda x: x * scale))(2) == 6


@settings(database=None, deadline=None, max_examples=50)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
        max_leaves=20,
    )
)
def test_json_like_values_round_trip(value: Any) -> None:
    assert loads_value(dumps_value(value)) == value


@pytest.mark.parametrize(
    "make",
    [threading.Lock, lambda: (i for i in range(3))],
    ids=["lock", "generator"],
)
def test_unpicklable_values_raise_serialization_error(make: Any) -> None:
    value = make()
    with pytest.raises(SerializationError, match="cannot serialise") as info:
        dumps_value(value)
    assert type(value).__qualname__ in str(info.value)
    assert isinstance(info.value, TypeError)


# --- out-of-band buffers ---------------------------------------------------------------------


def test_buffer_callback_takes_buffers_out_of_band() -> None:
    array = np.arange(10_000, dtype=np.int64)
    collected: list[pickle.PickleBuffer] = []
    stream = dumps_value(array, buffer_callback=out_of_band(collected))
    assert len(collected) == 1
    assert collected[0].raw().nbytes == array.nbytes
    assert len(stream) < 1000  # the array's bytes are not in the stream
    assert array.tobytes() not in stream
    back = loads_value(stream, buffers=[c.raw() for c in collected])
    np.testing.assert_array_equal(back, array)
    assert back.dtype == array.dtype


def test_buffer_callback_returning_true_keeps_the_buffer_in_band() -> None:
    array = np.arange(1000, dtype=np.int64)
    seen: list[pickle.PickleBuffer] = []

    def in_band(buffer: pickle.PickleBuffer) -> bool:
        seen.append(buffer)
        return True

    stream = dumps_value(array, buffer_callback=in_band)
    assert len(seen) == 1
    assert array.tobytes() in stream
    np.testing.assert_array_equal(loads_value(stream), array)


def test_an_out_of_band_stream_without_its_buffers_cannot_be_loaded() -> None:
    collected: list[pickle.PickleBuffer] = []
    stream = dumps_value(np.zeros(100), buffer_callback=out_of_band(collected))
    with pytest.raises(StateFormatError, match="cannot unpickle"):
        loads_value(stream)
    with pytest.raises(StateFormatError, match="cannot unpickle"):
        loads_value(stream, buffers=[])


def test_loads_value_takes_any_buffer_objects_including_memory_maps(tmp_path: Path) -> None:
    array = np.arange(4096, dtype=np.float32)
    collected: list[pickle.PickleBuffer] = []
    stream = dumps_value({"a": array}, buffer_callback=out_of_band(collected))
    assert len(collected) == 1
    path = tmp_path / "buffer"
    path.write_bytes(collected[0].raw())
    with path.open("rb") as file:
        mapped = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_COPY)
    for buffers in ([bytearray(collected[0].raw())], [mapped]):
        back = loads_value(stream, buffers=buffers)["a"]
        np.testing.assert_array_equal(back, array)
        assert back.flags.writeable  # writable buffers give writable arrays
    assert path.read_bytes() == array.tobytes()


# --- values that cannot be loaded here -------------------------------------------------------


def test_damaged_bytes_raise_state_format_error() -> None:
    with pytest.raises(StateFormatError, match="cannot unpickle"):
        loads_value(b"not a pickle")
    with pytest.raises(StateFormatError, match="cannot unpickle"):
        loads_value(dumps_value(list(range(100)))[:-5])


def test_payload_referring_to_a_missing_module_cannot_be_loaded(
    gone_module: SimpleNamespace,
) -> None:
    data = dumps_value(gone_module.obj)
    assert loads_value(data).x == 1  # fine while the module exists
    gone_module.remove()
    with pytest.raises(StateFormatError, match=f"cannot unpickle.*{gone_module.name}"):
        loads_value(data)


def test_unloadable_value_names_the_versions_that_wrote_it_and_ours() -> None:
    theirs = {"python": "2.7.18", "cloudpickle": "0.1", "awaitly_nb": "0.0.1"}
    ours = ", ".join(f"{k} {v}" for k, v in versions().items())
    with pytest.raises(StateFormatError) as info:
        loads_value(UNLOADABLE, theirs)
    message = str(info.value)
    assert "cannot unpickle" in message
    assert "written by python 2.7.18, cloudpickle 0.1, awaitly_nb 0.0.1" in message
    assert f"this is {ours}" in message
    assert "no_such_module_for_awaitly_tests" in message


def test_unknown_writer_versions_are_question_marks() -> None:
    with pytest.raises(StateFormatError, match=r"written by python 3\.0, cloudpickle \?"):
        loads_value(UNLOADABLE, {"python": "3.0"})


@pytest.mark.parametrize("written_by", [None, {}, "same"], ids=["none", "empty", "same"])
def test_no_version_story_when_the_writer_is_unknown_or_the_same(written_by: Any) -> None:
    if written_by == "same":
        written_by = versions()
    with pytest.raises(StateFormatError, match="cannot unpickle") as info:
        loads_value(UNLOADABLE, written_by)
    assert "written by" not in str(info.value)


def test_floats_survive_bit_for_bit() -> None:
    values = [math.nan, -0.0, math.inf, 5e-324]
    back = loads_value(dumps_value(values))
    assert [v.hex() for v in back] == [v.hex() for v in values]


def test_a_view_saved_with_its_base_comes_back_a_view_of_it(tmp_path: Path) -> None:
    from awaitly_nb.storage.local import LocalStore

    base = np.arange(100_000.0)  # big enough to be a blob of its own
    values = {"base": base, "part": base[10:20], "every": base[::-3], "rows": [base[:2]]}
    values["alone"] = np.arange(50.0)[5:8]  # its base is not saved: a copy, not all 50
    store = LocalStore(tmp_path)
    store.save("w", "k", {}, values)
    back = LocalStore(tmp_path).load("w", "k")
    for name in ("part", "every"):
        assert np.array_equal(back[name], values[name])
        assert np.shares_memory(back[name], back["base"])
    assert np.shares_memory(back["rows"][0], back["base"])
    back["base"][10] = -1.0
    assert back["part"][0] == -1.0  # as after a run: one memory
    assert back["alone"].tolist() == [5.0, 6.0, 7.0]
    readonly = np.arange(10.0)
    readonly.flags.writeable = False
    again = LocalStore(tmp_path)
    again.save("w", "r", {}, {"base": readonly, "view": readonly[2:]})
    assert not again.load("w", "r")["view"].flags.writeable


def test_views_of_a_base_no_variable_holds_stay_shared(tmp_path: Path) -> None:
    from awaitly_nb.storage.local import LocalStore

    grid = np.arange(120_000.0).reshape(300, 400)  # itself a view of arange's memory
    values = {"grid": grid, "row": grid[0], "column": grid[:, 1]}
    store = LocalStore(tmp_path)
    store.save("w", "k", {}, values)
    back = LocalStore(tmp_path).load("w", "k")
    back["grid"] *= 2
    assert back["row"][1] == 2.0 and back["column"][1] == 2 * 401.0  # one memory, as after a run
