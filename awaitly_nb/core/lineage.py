"""Lineage: which step last produced each variable, so readers of a re-run step are stale.

A step's inputs are the variables it reads (before binding them) that steps
produced this session, each stamped ``key@saved_at``. When the producing
step runs again its stamp changes, and so does the reader's fingerprint.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["CELL", "Lineage"]

CELL = "cell:"
"""The stamp of a variable a plain cell made (not a step): ``cell:<its code and files>``."""


class Lineage:
    """Which step (``key@saved_at``) last produced each variable this session.

    >>> lineage = Lineage()
    >>> lineage.produced("raw", 100.0, ["df"])
    >>> lineage.inputs(["df", "x"])
    {'df': 'raw@100.000000'}
    """

    def __init__(self) -> None:
        self.produced_by: dict[str, str] = {}

    def inputs(self, names: Iterable[str]) -> dict[str, str]:
        """Which of ``names`` steps produced, as ``{name: "key@saved_at"}``."""
        produced = self.produced_by
        return {name: produced[name] for name in sorted(set(names)) if name in produced}

    @staticmethod
    def own(
        key: str, inputs: Mapping[str, str], before: Mapping[str, str] | None
    ) -> dict[str, str]:
        """Inputs with the step's own earlier output replaced by what it read back then.

        Running ``df = df.dropna()`` again in the same kernel reads the ``df`` it
        produced itself; its input is still the ``df`` it first read
        (``before``: the inputs saved with its entry).

        >>> Lineage.own("clean", {"df": "clean@2.0", "t": "t@1.0"}, {"df": "raw@1.0"})
        {'df': 'raw@1.0', 't': 't@1.0'}
        """
        before = before or {}
        mine = f"{key}@"
        resolved = {}
        for name, stamp in inputs.items():
            if not stamp.startswith(mine):
                resolved[name] = stamp
            elif name in before:
                resolved[name] = before[name]
        return resolved

    def produced(self, key: str, saved_at: float, names: Iterable[str]) -> None:
        """The step ``key`` saved at ``saved_at`` produced (or restored) ``names``."""
        stamp = f"{key}@{saved_at:.6f}"
        for name in names:
            self.produced_by[name] = stamp

    def made_by_cell(
        self, names: Iterable[str], code: str, files: Iterable[tuple[Any, ...]]
    ) -> None:
        """A plain cell (``code``: its fingerprint) made or changed ``names``, reading
        ``files`` (their paths and states). A value no digest can describe is an input by
        this stamp (``cell:...``), which keeps the variable's earlier stamp in it (the
        step or the cells that made or touched it before).

        >>> lineage = Lineage()
        >>> lineage.made_by_cell(["f"], "code-1", [])
        >>> stamp = lineage.produced_by["f"]
        >>> lineage.made_by_cell(["f"], "code-1", [("data.csv", 10, 1, 1, 7)])
        >>> stamp.startswith(CELL), lineage.produced_by["f"] != stamp
        (True, True)
        """
        import xxhash

        cell = xxhash.xxh3_128(repr((code, sorted(files))).encode()).hexdigest()
        for name in names:
            earlier = self.produced_by.get(name, "")
            mixed = f"{earlier}+{cell}" if earlier else cell
            self.produced_by[name] = CELL + xxhash.xxh3_64_hexdigest(mixed.encode())

    def not_saved(self, key: str, names: Iterable[str]) -> None:
        """The step ran but was not saved: its variables are new, and on no disk."""
        stamp = f"{key}@unsaved-{time.time():.6f}"
        for name in names:
            self.produced_by[name] = stamp

    def clear(self) -> None:
        self.produced_by.clear()
