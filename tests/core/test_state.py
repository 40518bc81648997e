"""WorkflowState, is_step_complete, stringify_state / parse_state."""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from awaitly_nb import (
    CacheWarning,
    SerializationError,
    StateFormatError,
    StepEntry,
    StepMeta,
    WorkflowState,
    create_workflow,
    is_step_complete,
    parse_state,
    stringify_state,
)

SETTINGS = settings(
    database=None,
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow],
)


def state_of(**values: Any) -> WorkflowState:
    return WorkflowState(
        {
            k: StepEntry(v, StepMeta(saved_at=1700000000.5, duration_ms=12.5, name=k))
            for k, v in values.items()
        }
    )


def roundtrip(value: Any) -> Any:
    return parse_state(stringify_state(state_of(v=value)))["v"].value


def same(a: Any, b: Any) -> bool:
    """Equal with the same types all the way down; NaN equals NaN and -0.0 is not 0.0."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a):
            return math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def find_in_json(doc: Any, value: Any) -> bool:
    """True if ``value`` appears somewhere in the decoded JSON document."""
    if same(doc, value):
        return True
    if isinstance(doc, dict):
        return any(find_in_json(v, value) for v in doc.values())
    if isinstance(doc, list):
        return any(find_in_json(v, value) for v in doc)
    return False


# --- WorkflowState and is_step_complete ------------------------------------------------------


def test_workflow_state_entries_membership_and_length() -> None:
    meta = StepMeta(saved_at=10.0, duration_ms=2.0, name="load")
    state = WorkflowState({"user:1": StepEntry({"id": 1}, meta)})
    assert "user:1" in state
    assert "user:2" not in state
    assert len(state) == 1
    assert len(WorkflowState()) == 0
    assert state.steps["user:1"].value == {"id": 1}
    assert state.steps["user:1"].meta.saved_at == 10.0
    assert state.steps["user:1"].meta.duration_ms == 2.0
    assert state.steps["user:1"].meta.name == "load"
    assert state.metadata == {}


def test_is_step_complete() -> None:
    state = state_of(done=None)
    assert is_step_complete(state, "done") is True
    assert is_step_complete(state, "other") is False
    assert is_step_complete(None, "done") is False
    assert is_step_complete(WorkflowState(), "done") is False


def test_workflow_meta_is_recorded_in_state() -> None:
    cache: dict[str, Any] = {}
    create_workflow(cache=cache)(lambda step: step(lambda: 1, key="k", name="the step"))
    back = parse_state(stringify_state(WorkflowState(dict(cache))))
    meta = back["k"].meta
    assert meta == cache["k"].meta
    assert meta.name == "the step"


# --- stringify / parse -----------------------------------------------------------------------


def test_stringify_returns_json_text_and_metadata_round_trips() -> None:
    text = stringify_state(state_of(n=42), {"workflow_id": "wf-123", "user": {"id": 1}})
    assert isinstance(text, str)
    json.loads(text)
    back = parse_state(text)
    assert back.metadata == {"workflow_id": "wf-123", "user": {"id": 1}}
    assert back["n"].value == 42
    assert back["n"].meta == StepMeta(saved_at=1700000000.5, duration_ms=12.5, name="n")


def test_metadata_defaults_to_the_states_own() -> None:
    state = state_of(n=1)
    state.metadata = {"from": "state"}
    assert parse_state(stringify_state(state)).metadata == {"from": "state"}
    assert parse_state(stringify_state(state, {"given": 1})).metadata == {"given": 1}


def test_parse_state_accepts_bytes() -> None:
    text = stringify_state(state_of(n="é"))
    assert parse_state(text.encode("utf-8"))["n"].value == "é"


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        0,
        -(2**70),
        1.5,
        -0.0,
        "héllo \u2603",
        [1, "two", None, [3.0]],
        {"a": {"b": [True, False]}, "c": ""},
        {},
        [],
    ],
)
def test_json_able_values_are_readable_in_the_text(value: Any) -> None:
    text = stringify_state(state_of(v=value))
    assert find_in_json(json.loads(text), value)
    assert same(parse_state(text)["v"].value, value)


@dataclass
class Point:
    x: int
    y: float


class Plain:
    def __init__(self, n: int) -> None:
        self.n = n

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Plain) and other.n == self.n

    __hash__ = None  # type: ignore[assignment]


def test_numpy_arrays_round_trip() -> None:
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    back = roundtrip(array)
    assert isinstance(back, np.ndarray)
    assert back.dtype == np.float32
    assert back.shape == (3, 4)
    np.testing.assert_array_equal(back, array)


@pytest.mark.parametrize(
    "value",
    [
        (1, 2, "three"),
        {1, 2, 3},
        frozenset({"a"}),
        b"\x00\xffbytes",
        {1: "int key", 2: "two"},
        {"nested": (1, {2, 3})},
        [1, (2,)],
        float("inf"),
        Point(1, 2.5),
        Plain(7),
        3 + 4j,
    ],
    ids=repr,
)
def test_non_json_values_round_trip_with_their_types(value: Any) -> None:
    text = stringify_state(state_of(v=value))
    back = parse_state(text)["v"].value
    assert type(back) is type(value)
    assert back == value
    assert same(back, value)


def test_nan_round_trips() -> None:
    back = roundtrip(float("nan"))
    assert isinstance(back, float)
    assert math.isnan(back)
    nested = roundtrip({"scores": [1.0, float("nan")]})
    assert math.isnan(nested["scores"][1])


def test_lambdas_and_local_classes_round_trip() -> None:
    offset = 10
    back = roundtrip(lambda x: x + offset)
    assert back(1) == 11

    class Local:
        def __init__(self) -> None:
            self.v = "local"

    assert roundtrip(Local()).v == "local"


def test_class_defined_in_main_round_trips() -> None:
    Main = type("Main", (), {"__module__": "__main__", "hello": lambda self: "hi"})
    back = roundtrip(Main())
    assert back.hello() == "hi"


def test_non_json_values_are_not_stored_as_plain_json() -> None:
    """A tuple must not come back as a list, nor int keys as strings."""
    assert roundtrip((1, 2)) == (1, 2)
    assert type(roundtrip((1, 2))) is tuple
    assert list(roundtrip({1: "a"})) == [1]


def test_unpicklable_value_raises_serialization_error() -> None:
    import threading

    with pytest.raises(SerializationError, match="lock"):
        stringify_state(state_of(v=threading.Lock()))


def test_metadata_must_be_json_serialisable() -> None:
    with pytest.raises(TypeError, match="metadata"):
        stringify_state(state_of(), {"when": object()})


def test_stringify_takes_a_workflow_state() -> None:
    with pytest.raises(TypeError, match="WorkflowState"):
        stringify_state({"k": 1})  # type: ignore[arg-type]


# --- damaged text ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "not valid JSON"),
        ("{", "not valid JSON"),
        ("not json at all", "not valid JSON"),
        ("[]", "not an awaitly_nb state"),
        ("null", "not an awaitly_nb state"),
        ('{"steps": {}}', "not an awaitly_nb state"),
    ],
)
def test_malformed_text_raises_state_format_error(text: str, message: str) -> None:
    with pytest.raises(StateFormatError, match=message):
        parse_state(text)


def test_unknown_version_raises_state_format_error() -> None:
    doc = json.loads(stringify_state(state_of(n=1)))
    doc["version"] = 999
    with pytest.raises(StateFormatError, match="version 999"):
        parse_state(json.dumps(doc))


def test_edited_json_value_fails_its_checksum() -> None:
    text = stringify_state(state_of(n=42))
    assert '"value": 42' in text
    edited = text.replace('"value": 42', '"value": 43')
    with pytest.raises(StateFormatError, match=r"'n'.*checksum"):
        parse_state(edited)


def test_edited_base64_data_fails_its_checksum() -> None:
    text = stringify_state(state_of(t=(1, 2, 3)))
    doc = json.loads(text)
    data = doc["steps"]["t"]["data"]
    raw = bytearray(base64.b64decode(data))
    raw[len(raw) // 2] ^= 0x01
    doc["steps"]["t"]["data"] = base64.b64encode(bytes(raw)).decode()
    edited = json.dumps(doc)
    with pytest.raises(StateFormatError, match=r"'t'.*checksum"):
        parse_state(edited)


def test_invalid_base64_data_raises_state_format_error() -> None:
    doc = json.loads(stringify_state(state_of(t=(1, 2, 3))))
    doc["steps"]["t"]["data"] = "!!!not base64!!!"
    with pytest.raises(StateFormatError, match=r"'t'.*base64"):
        parse_state(json.dumps(doc))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda entry: entry.pop("sha256"), "checksum"),
        (lambda entry: entry.pop("value"), "missing value"),
        (lambda entry: entry.update(encoding="yaml"), "unknown encoding"),
        (lambda entry: entry.update(meta="x"), "meta"),
        (lambda entry: entry.update(meta={"saved_at": "yesterday"}), "saved_at"),
    ],
)
def test_damaged_entries_raise_state_format_error(damage: Any, message: str) -> None:
    doc = json.loads(stringify_state(state_of(n=1)))
    damage(doc["steps"]["n"])
    with pytest.raises(StateFormatError, match=message):
        parse_state(json.dumps(doc))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda doc: doc.update(steps=[]), "steps"),
        (lambda doc: doc.pop("steps"), "steps"),
        (lambda doc: doc.update(metadata=[1]), "metadata"),
        (lambda doc: doc["steps"].update(n=5), "entry must be an object"),
    ],
)
def test_damaged_documents_raise_state_format_error(change: Any, message: str) -> None:
    doc = json.loads(stringify_state(state_of(n=1)))
    change(doc)
    with pytest.raises(StateFormatError, match=message):
        parse_state(json.dumps(doc))


def test_every_prefix_of_a_valid_text_raises_state_format_error() -> None:
    text = stringify_state(
        state_of(a={"x": [1, 2.5, None]}, b=(1, "two"), c="text"), {"workflow_id": "wf"}
    )
    assert len(parse_state(text)) == 3
    for end in range(len(text)):
        with pytest.raises(StateFormatError):
            parse_state(text[:end])


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=15,
)


@SETTINGS
@given(value=json_values, cut=st.data())
def test_truncated_texts_raise_state_format_error(value: Any, cut: st.DataObject) -> None:
    text = stringify_state(state_of(v=value, p=(value,)), {"m": value})
    end = cut.draw(st.integers(min_value=0, max_value=len(text) - 1))
    with pytest.raises(StateFormatError):
        parse_state(text[:end])


# --- values that cannot be unpickled here ----------------------------------------------------


def test_value_that_cannot_be_unpickled_warns_naming_the_key_and_is_left_out(
    gone_module: SimpleNamespace,
) -> None:
    text = stringify_state(state_of(kept=1, **{"lost:step": gone_module.obj}))
    gone_module.remove()
    with pytest.warns(CacheWarning, match=r"'lost:step'.*" + gone_module.name):
        state = parse_state(text)
    assert "lost:step" not in state
    assert state["kept"].value == 1


def test_hand_built_text_referring_to_a_missing_module_warns() -> None:
    import hashlib

    data = b"\x80\x04cno_such_module_for_awaitly_tests\nThing\n)\x81."
    text = json.dumps(
        {
            "format": "awaitly_nb/state",
            "version": 1,
            "metadata": {},
            "steps": {
                "ghost": {
                    "encoding": "cloudpickle",
                    "data": base64.b64encode(data).decode(),
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "meta": {"saved_at": 0.0, "duration_ms": 0.0, "name": None},
                }
            },
        }
    )
    with pytest.warns(CacheWarning, match="'ghost'"):
        state = parse_state(text)
    assert len(state) == 0


def test_a_step_left_out_of_the_state_runs_again(gone_module: SimpleNamespace) -> None:
    text = stringify_state(state_of(lost=gone_module.obj))
    gone_module.remove()
    with pytest.warns(CacheWarning):
        state = parse_state(text)
    calls = []
    create_workflow(resume_state=state)(lambda step: step(lambda: calls.append(1), key="lost"))
    assert calls == [1]


# --- properties ------------------------------------------------------------------------------


@SETTINGS
@given(values=st.dictionaries(st.text(min_size=1).filter(lambda k: "\x00" not in k), json_values))
def test_json_able_values_round_trip_and_stay_readable(values: dict[str, Any]) -> None:
    state = WorkflowState({k: StepEntry(v, StepMeta(saved_at=0.0)) for k, v in values.items()})
    text = stringify_state(state, {"count": len(values)})
    doc = json.loads(text)
    back = parse_state(text)
    assert list(back.steps) == list(values)
    for key, value in values.items():
        assert same(back[key].value, value)
        entry = dict(doc["steps"][key])
        entry.pop("meta", None)
        assert find_in_json(entry, value)


hashables = st.recursive(
    st.integers() | st.text(max_size=5) | st.binary(max_size=5),
    lambda children: st.tuples(children, children) | st.frozensets(children, max_size=3),
    max_leaves=6,
)

any_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN, infinities and -0.0 included
    | st.text()
    | st.binary(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.lists(children, max_size=4).map(tuple)
        | st.dictionaries(st.text(max_size=5), children, max_size=4)
        | st.dictionaries(st.integers(), children, max_size=3)
        | st.sets(hashables, max_size=4)
        | st.frozensets(hashables, max_size=4)
    ),
    max_leaves=20,
)


@SETTINGS
@given(value=any_values)
def test_any_nested_value_round_trips(value: Any) -> None:
    back = roundtrip(value)
    assert same(back, value), (value, back)


def test_string_with_a_lone_surrogate_round_trips() -> None:
    assert roundtrip("\ud800") == "\ud800"


def test_edited_value_with_a_lone_surrogate_escape_raises_state_format_error() -> None:
    text = stringify_state(state_of(n="x"))
    edited = text.replace('"value": "x"', '"value": "\\ud800"')
    assert edited != text
    with pytest.raises(StateFormatError):
        parse_state(edited)


def test_huge_int_round_trips() -> None:
    assert roundtrip(10**5000) == 10**5000
