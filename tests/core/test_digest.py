"""Fingerprints of values: equal values are equal, any change differs, in any process."""

from __future__ import annotations

import dataclasses
import enum
import os
import subprocess
import sys
import threading
from typing import Any

import cloudpickle
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from awaitly_nb.core.digest import summary, value_digest


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int


class Color(enum.Enum):
    RED = 1
    BLUE = 2


def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {"a": [1, 2, 3], "b": ["x", "y", "z"], "c": pd.Categorical(["p", "q", "p"])},
        index=pd.Index([10, 20, 30], name="id"),
    )


# (a value, the same value built again, a changed value)
CASES: dict[str, tuple[Any, Any, Any]] = {
    "int": (5, 5, 6),
    "int vs bool": (1, 1, True),
    "float": (0.1 + 0.2, 0.30000000000000004, 0.3),
    "negative zero": (0.0, 0.0, -0.0),
    "str": ("café", "café", "cafe"),
    "bytes": (b"\x00\x01", b"\x00\x01", b"\x00\x02"),
    "tuple vs list": ((1, 2), (1, 2), [1, 2]),
    "nested": ({"a": [1, {"b": (2, 3)}]}, {"a": [1, {"b": (2, 3)}]}, {"a": [1, {"b": (2, 4)}]}),
    "dict order": ({"a": 1, "b": 2}, {"a": 1, "b": 2}, {"b": 2, "a": 1}),
    "set": ({"x", "y", "z"}, {"z", "y", "x"}, {"x", "y"}),
    "frozen dataclass": (Point(1, 2), Point(1, 2), Point(1, 3)),
    "enum": (Color.RED, Color.RED, Color.BLUE),
    "numpy": (np.arange(10.0), np.arange(10.0), np.arange(10.0) + 1e-12),
    "numpy dtype": (np.arange(3), np.arange(3), np.arange(3).astype(np.int32)),
    "numpy shape": (np.zeros((2, 3)), np.zeros((2, 3)), np.zeros((3, 2))),
    "numpy view": (np.arange(10)[::2], np.array([0, 2, 4, 6, 8]), np.arange(10)[1::2]),
    "dataframe values": (frame(), frame(), frame().assign(a=[1, 2, 4])),
    "dataframe index": (frame(), frame(), frame().set_axis([10, 20, 31], axis=0)),
    "dataframe columns": (frame(), frame(), frame().rename(columns={"a": "A"})),
    "dataframe dtype": (frame(), frame(), frame().astype({"a": "float64"})),
    "categories": (frame(), frame(), frame().assign(c=pd.Categorical(["p", "q", "p"], ["q", "p"]))),
    "arrow": (pa.table({"a": [1, 2]}), pa.table({"a": [1, 2]}), pa.table({"a": [1, 3]})),
    "module": (np, np, pd),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_equal_values_are_equal_and_any_change_differs(case: str) -> None:
    value, again, changed = CASES[case]
    assert value_digest(value) is not None
    assert value_digest(value) == value_digest(again)
    assert value_digest(value) != value_digest(changed)


def test_dataframe_attrs_count() -> None:
    tagged = frame()
    tagged.attrs["unit"] = "kg"
    assert value_digest(tagged) != value_digest(frame())


def test_a_notebook_function_counts_its_code_defaults_and_the_globals_it_uses() -> None:
    ns: dict[str, Any] = {"__name__": "__main__"}
    exec(
        "OFFSET = 1\n"
        "def inner(x):\n    return x + OFFSET\n"
        "def outer(x, k=2):\n    return inner(x) * k\n",
        ns,
    )
    for name in ("inner", "outer"):
        ns[name].__module__ = "__main__"
    before = value_digest(ns["outer"])
    assert before == value_digest(ns["outer"])
    ns["OFFSET"] = 2  # used through inner: outer changes
    assert value_digest(ns["outer"]) != before
    ns["OFFSET"] = 1
    assert value_digest(ns["outer"]) == before
    ns["outer"].__defaults__ = (3,)
    assert value_digest(ns["outer"]) != before


def test_recursive_functions_and_self_containing_values_have_a_digest() -> None:
    ns: dict[str, Any] = {"__name__": "__main__"}
    exec(
        "def even(n):\n    return n == 0 or odd(n - 1)\n"
        "def odd(n):\n    return n != 0 and even(n - 1)\n",
        ns,
    )
    for name in ("even", "odd"):
        ns[name].__module__ = "__main__"
    assert value_digest(ns["even"]) is not None
    loop: list[Any] = [1]
    loop.append(loop)
    assert value_digest(loop) == value_digest(loop)


def test_values_that_cannot_be_fingerprinted_have_none() -> None:
    assert value_digest(threading.Lock()) is None
    assert value_digest(x for x in range(3)) is None
    assert value_digest({"ok": 1, "lock": threading.Lock()}) is None


def test_matplotlib_artists_have_no_digest_also_inside_an_array_or_a_list() -> None:
    # an Axes pickles differently in every process: such an input counts by lineage
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axs = plt.subplots(1, 2)
    try:
        assert value_digest(axs[0]) is None
        assert value_digest(axs) is None  # plt.subplots(1, 2): an object array of axes
        assert value_digest({"panels": list(axs)}) is None
    finally:
        plt.close(fig)


def test_digests_are_stable_across_processes_and_hash_seeds() -> None:
    script = (
        "import numpy as np, pandas as pd\n"
        "from awaitly_nb.core.digest import value_digest\n"
        "import types\n"
        "values = [{'b', 'a', 'c'}, {'k': frozenset({'x', 'y'})}, np.arange(5.0),\n"
        "          pd.DataFrame({'s': ['p', 'q']}), ('t', 1, 2.5, None),\n"
        "          types.SimpleNamespace(tags={'alpha', 'beta', 'gamma', 'delta'}),\n"
        "          pd.Series([{'a', 'b', 'c'}, frozenset({'d', 'e'})], dtype=object)]\n"
        "print([value_digest(v) for v in values])\n"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("0", "1", "12345")
    }
    assert len(outputs) == 1 and "None" not in outputs.pop()


def _notebook_class(method_source: str) -> type:
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(f"class Thing:\n    def v(self):\n        {method_source}\n", namespace)
    return namespace["Thing"]  # type: ignore[no-any-return]


def test_an_object_counts_its_class_code_and_sets_inside_it_in_any_order() -> None:
    one, two = _notebook_class("return 1"), _notebook_class("return 2")
    assert value_digest(one()) == value_digest(_notebook_class("return 1")())
    assert value_digest(one()) != value_digest(two())  # same state, another method

    class Holder:
        def __init__(self, tags: set[str]) -> None:
            self.tags = tags

    assert value_digest(Holder({"a", "b", "c"})) == value_digest(Holder({"c", "b", "a"}))
    assert value_digest(Holder({"a", "b"})) != value_digest(Holder({"a", "c"}))


def test_a_class_pickled_by_value_is_fingerprinted_without_recursing_to_the_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without pickle's memo, cloudpickle reaches a class pickled by value again and
    again until the recursion limit, where any finalizer the garbage collector runs
    fails ("Exception ignored ... RecursionError"), in the user's kernel too."""

    class Local:
        def again(self) -> Local:
            return Local()

    reduced: list[Any] = []
    original = cloudpickle.Pickler.reducer_override

    def counting(pickler: Any, obj: Any) -> Any:
        if obj is Local:
            reduced.append(obj)
        return original(pickler, obj)

    monkeypatch.setattr(cloudpickle.Pickler, "reducer_override", counting)
    assert value_digest(Local()) == value_digest(Local())
    assert 0 < len(reduced) < 20


def test_summaries_are_short() -> None:
    assert summary(5) == "5"
    assert summary("a" * 100) == "str of 100"
    assert summary(frame()) == "DataFrame 3x3"
    assert summary(summary) == "summary()"


def test_a_notebook_abc_subclass_has_a_digest_that_follows_its_methods() -> None:
    source = (
        "import abc\n"
        "class Base(abc.ABC):\n"
        "    @abc.abstractmethod\n"
        "    def f(self): ...\n"
        "class Impl(Base):\n"
        "    def f(self):\n        return 1\n"
    )
    ns: dict[str, Any] = {"__name__": "__main__"}
    exec(source, ns)
    other: dict[str, Any] = {"__name__": "__main__"}
    exec(source.replace("return 1", "return 2"), other)
    for space in (ns, other):
        for name in ("Base", "Impl"):
            space[name].__module__ = "__main__"
    assert value_digest(ns["Impl"]) is not None
    assert value_digest(ns["Impl"]) != value_digest(other["Impl"])


def _notebook(source: str) -> dict[str, Any]:
    ns: dict[str, Any] = {"__name__": "__main__"}
    exec(source, ns)
    return ns


def test_a_cached_notebook_function_counts_the_code_it_wraps() -> None:
    cached = "import functools\n@functools.lru_cache\ndef f(x):\n    return x * {}\n"
    two, nine = _notebook(cached.format(2))["f"], _notebook(cached.format(9))["f"]
    assert value_digest(two) == value_digest(_notebook(cached.format(2))["f"])
    assert value_digest(two) != value_digest(nine)
    two(3)  # its memo is not its definition
    assert value_digest(two) == value_digest(_notebook(cached.format(2))["f"])


def test_attributes_set_on_a_notebook_function_count() -> None:
    ns = _notebook("def f(x):\n    return x * f.k\nf.k = 2\n")
    before = value_digest(ns["f"])
    ns["f"].k = 4
    assert value_digest(ns["f"]) != before


def test_a_function_of_your_module_inside_a_value_counts_its_module_source() -> None:
    import functools
    import types

    module = types.ModuleType("helpers_for_digest")
    exec("def g(k, x):\n    return k * x\n", module.__dict__)
    sys.modules[module.__name__] = module
    try:
        bound = functools.partial(module.g, 2)
        sources = {"helpers_for_digest": "1.0"}

        def version(name: str) -> str:
            return sources.get(name, "")

        installed = value_digest(bound, module_version=version)
        sources["helpers_for_digest"] = "1.0:source-a"  # now one of the user's own modules
        before = value_digest(bound, module_version=version)
        sources["helpers_for_digest"] = "1.0:source-b"  # its source was edited
        assert before != value_digest(bound, module_version=version)
        sources["helpers_for_digest"] = "1.0"
        assert installed == value_digest(bound, module_version=version)  # named only
    finally:
        del sys.modules[module.__name__]


def test_a_singledispatch_function_counts_its_implementations() -> None:
    source = (
        "from functools import singledispatch\n"
        "@singledispatch\ndef f(x):\n    return x\n"
        "@f.register\ndef _(x: int):\n    return x * {}\n"
    )
    two = _notebook(source.format(2))["f"]
    assert value_digest(two) is not None
    assert value_digest(two) == value_digest(_notebook(source.format(2))["f"])
    assert value_digest(two) != value_digest(_notebook(source.format(4))["f"])


def test_a_cached_property_counts_its_function() -> None:
    source = (
        "from functools import cached_property\n"
        "class C:\n    @cached_property\n    def v(self):\n        return {}\n"
    )
    two, seven = _notebook(source.format(2))["C"], _notebook(source.format(7))["C"]
    for cls in (two, seven):
        cls.__module__ = "__main__"
    assert value_digest(two) != value_digest(seven)


def test_a_bound_builtin_method_counts_its_object_and_an_array_its_fortran_layout() -> None:
    assert value_digest("{:.2f}".format) != value_digest("{:.4f}".format)  # pandas' float_format
    assert value_digest(len) == value_digest(len)
    grid = np.arange(6).reshape(2, 3)
    assert value_digest(grid) == value_digest(grid.copy())
    assert value_digest(grid) != value_digest(np.asfortranarray(grid))
