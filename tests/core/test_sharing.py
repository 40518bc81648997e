"""What :func:`awaitly_nb.core.sharing.shared_objects` reports."""

from __future__ import annotations

import types

import numpy as np

from awaitly_nb.core.sharing import shared_objects


def test_numpy_views_share_their_base_memory() -> None:
    x = np.arange(6)
    assert shared_objects({"y": x[2:]}, {"x": x, "y": x[2:]}) == "x (memory) & y (memory)"
    assert shared_objects({"y": x.copy()}, {"x": x}) is None


def test_objects_of_notebook_classes_and_namespaces_are_followed() -> None:
    rows: list[int] = []
    holder = types.SimpleNamespace(rows=rows, n=3)
    assert shared_objects({"rows": rows}, {"holder": holder}) == "holder.rows & rows"


def test_library_objects_count_by_identity_only() -> None:
    class Opaque:  # a class of a library: its insides are not followed
        pass

    Opaque.__module__ = "somelib"
    rows: list[int] = []
    thing = Opaque()
    thing.rows = rows  # type: ignore[attr-defined]
    assert shared_objects({"rows": rows}, {"thing": thing}) is None
    assert shared_objects({"thing": thing}, {"t2": thing}) == "t2 & thing"


def test_values_that_cannot_be_changed_in_place_do_not_count() -> None:
    t = (1, "a")
    s = "text"
    assert shared_objects({"t": t, "s": s}, {"u": t, "w": s}) is None


def test_sets_are_not_followed_and_skipped_names_are_left_out() -> None:
    rows: list[int] = []
    assert shared_objects({"rows": rows}, {"s": {1, 2}, "_": rows}, lambda n: n == "_") is None


def test_a_big_value_is_followed_in_part() -> None:
    big = [[i] for i in range(100_000)]
    assert shared_objects({"big": big}, {"alias": big[-1]}) is None  # beyond the budget
    assert shared_objects({"big": big}, {"alias": big[0]}) == "alias & big[0]"


def test_a_restored_array_and_another_name_for_it_share_as_before() -> None:
    made = np.arange(6.0).reshape(2, 3)
    restored = np.frombuffer(bytearray(made.tobytes())).reshape(2, 3)  # as a load leaves it
    for x in (made, restored):
        assert shared_objects({"x": x}, {"x": x, "x_all": x}) == "x (memory) & x_all (memory)"
