"""The run-time NamedTuple that spares a lookup importing typing."""

from __future__ import annotations

import pickle
import typing

import pytest

from awaitly_nb._namedtuple import NamedTuple


class Row(NamedTuple):
    """A row."""

    key: str
    size: int = 0
    tags: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return self.size == 0

    def bigger(self, by: int) -> Row:
        return self._replace(size=self.size + by)


class TypedRow(typing.NamedTuple):
    key: str
    size: int = 0
    tags: tuple[str, ...] = ()


def test_it_behaves_as_typing_named_tuple_does() -> None:
    row = Row("a", 2)
    typed = TypedRow("a", 2)
    assert row == typed == ("a", 2, ())
    assert Row._fields == TypedRow._fields
    assert Row._field_defaults == TypedRow._field_defaults
    assert repr(row) == "Row(key='a', size=2, tags=())"
    key, size, tags = row
    assert (key, size, tags) == ("a", 2, ())
    assert row.bigger(3) == Row("a", 5) and row.bigger(3).empty is False and Row("b").empty
    assert Row.__doc__ == "A row." and Row.__qualname__ == "Row"
    assert Row.__module__ == __name__
    with pytest.raises(AttributeError):
        row.size = 3  # type: ignore[misc]


def test_it_pickles_by_its_module_and_name() -> None:
    assert pickle.loads(pickle.dumps(Row("a", 1, ("x",)))) == Row("a", 1, ("x",))


def test_a_field_without_a_default_after_one_with_a_default_is_refused() -> None:
    with pytest.raises(TypeError, match="follows one with a default"):

        class Bad(NamedTuple):
            a: int = 0
            b: int
