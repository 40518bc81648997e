"""The versioned cloudpickle envelope: header, checksum, damage and foreign entries."""

from __future__ import annotations

import json
import platform
import struct
import sys
import threading
import types
from types import SimpleNamespace
from typing import Any

import cloudpickle
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import awaitly_nb
from awaitly_nb import SerializationError, StateFormatError
from awaitly_nb.storage.serialize import (
    ENVELOPE_VERSION,
    MAGIC,
    checksum,
    dumps_envelope,
    dumps_value,
    loads_envelope,
    loads_value,
    read_header,
    versions,
)


@pytest.fixture
def gone_module(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """An object whose class lives in a module that can be made to disappear.

    While the module is in ``sys.modules`` cloudpickle pickles the object by
    reference; after ``remove()`` the pickled bytes name a module that does not
    exist, so they cannot be unpickled.
    """
    name = "awaitly_nb_tests_gone_module"
    module = types.ModuleType(name)

    class Gone:
        def __init__(self) -> None:
            self.x = 1

    Gone.__module__ = name
    Gone.__qualname__ = "Gone"
    module.Gone = Gone  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, name, module)
    return SimpleNamespace(
        name=name, obj=Gone(), remove=lambda: monkeypatch.delitem(sys.modules, name)
    )


def build_envelope(payload: bytes, **header_changes: Any) -> bytes:
    """An envelope made by hand, so its header can say anything."""
    header: dict[str, Any] = {
        **versions(),
        "format": ENVELOPE_VERSION,
        "size": len(payload),
        "xxh3_128": checksum(payload),
    }
    header.update(header_changes)
    head = json.dumps(header).encode()
    return MAGIC + struct.pack("<I", len(head)) + head + payload


def payload_start(data: bytes) -> int:
    (head_len,) = struct.unpack("<I", data[len(MAGIC) : len(MAGIC) + 4])
    return len(MAGIC) + 4 + head_len


@pytest.mark.parametrize(
    "value",
    [None, 0, "text", {"a": (1, 2)}, {1, 2}, b"\x00raw", [None, 1.5]],
    ids=repr,
)
def test_envelope_round_trips(value: Any) -> None:
    back = loads_envelope(dumps_envelope(value))
    assert type(back) is type(value)
    assert back == value


def test_envelope_round_trips_numpy_and_lambdas() -> None:
    array = np.linspace(0, 1, 7)
    np.testing.assert_array_equal(loads_envelope(dumps_envelope(array)), array)
    scale = 3
    assert loads_envelope(dumps_envelope(lambda x: x * scale))(2) == 6


def test_header_records_format_python_cloudpickle_and_package_versions() -> None:
    data = dumps_envelope({"x": 1})
    assert data.startswith(MAGIC)
    header, payload = read_header(data)
    assert header["format"] == ENVELOPE_VERSION
    assert header["python"] == platform.python_version()
    assert header["cloudpickle"] == cloudpickle.__version__
    assert header["awaitly_nb"] == awaitly_nb.__version__
    assert header["size"] == len(payload)
    assert bytes(payload) == data[payload_start(data) :]


def test_not_an_envelope_is_rejected_before_unpickling() -> None:
    import pickle

    with pytest.raises(StateFormatError, match="magic"):
        loads_envelope(pickle.dumps({"plain": "pickle"}))
    with pytest.raises(StateFormatError, match="magic"):
        loads_envelope(b"")


def test_unknown_format_version_is_rejected() -> None:
    data = build_envelope(dumps_value(1), format=ENVELOPE_VERSION + 1)
    with pytest.raises(StateFormatError, match=f"version {ENVELOPE_VERSION + 1}"):
        loads_envelope(data)


def test_damaged_header_is_rejected() -> None:
    data = bytearray(dumps_envelope(1))
    data[len(MAGIC) + 4] = ord("[")  # the header's opening brace
    with pytest.raises(StateFormatError, match="header"):
        loads_envelope(bytes(data))


def test_every_prefix_of_an_envelope_is_rejected() -> None:
    data = dumps_envelope({"key": list(range(20))})
    for end in range(len(data)):
        with pytest.raises(StateFormatError):
            loads_envelope(data[:end])


def test_extra_bytes_after_the_payload_are_rejected() -> None:
    with pytest.raises(StateFormatError, match="payload"):
        loads_envelope(dumps_envelope("x") + b"\x00")


@settings(database=None, deadline=None, max_examples=200)
@given(where=st.integers(min_value=0), bit=st.integers(min_value=0, max_value=7))
def test_flipped_byte_in_the_payload_is_detected(where: int, bit: int) -> None:
    data = bytearray(dumps_envelope({"values": [1, 2, 3], "name": "payload"}))
    start = payload_start(bytes(data))
    data[start + where % (len(data) - start)] ^= 1 << bit
    with pytest.raises(StateFormatError, match="checksum"):
        loads_envelope(bytes(data))


def test_payload_referring_to_a_missing_module_cannot_be_loaded(
    gone_module: SimpleNamespace,
) -> None:
    data = dumps_envelope(gone_module.obj)
    assert loads_envelope(data).x == 1  # fine while the module exists
    gone_module.remove()
    with pytest.raises(StateFormatError, match=f"cannot unpickle.*{gone_module.name}"):
        loads_envelope(data)


def test_unloadable_payload_names_the_versions_that_wrote_it() -> None:
    payload = b"\x80\x04cno_such_module_for_awaitly_tests\nThing\n)\x81."
    data = build_envelope(payload, python="2.7.18", cloudpickle="0.1")
    with pytest.raises(StateFormatError, match=r"written by python 2\.7\.18, cloudpickle 0\.1"):
        loads_envelope(data)


@pytest.mark.parametrize(
    "make",
    [threading.Lock, lambda: (i for i in range(3))],
    ids=["lock", "generator"],
)
def test_unpicklable_values_raise_serialization_error(make: Any) -> None:
    with pytest.raises(SerializationError, match="cannot serialise") as info:
        dumps_envelope(make())
    assert isinstance(info.value, TypeError)


def test_loads_value_reports_damage_as_state_format_error() -> None:
    with pytest.raises(StateFormatError, match="cannot unpickle"):
        loads_value(b"not a pickle")
    assert loads_value(dumps_value((1, "a"))) == (1, "a")


def test_checksum_is_stable_and_content_sensitive() -> None:
    assert checksum(b"abc") == checksum(memoryview(b"abc"))
    assert checksum(b"abc") != checksum(b"abd")
