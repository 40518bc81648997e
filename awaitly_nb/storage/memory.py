"""An in-memory step store, for tests and short scripts: records in a dict, blobs in a folder."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from awaitly_nb.storage.base import StepStore
from awaitly_nb.storage.blobs import BlobStore

__all__ = ["MemoryStore"]


class MemoryStore(StepStore):
    """Step records in a dict; blobs in ``directory`` (a new temporary folder by default).

    >>> store = MemoryStore()
    >>> _ = store.save("nb", "k", {}, [1, 2])
    >>> store.step_keys(), store.load("nb", "k")
    ([('nb', 'k')], [1, 2])
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = Path(directory if directory is not None else tempfile.mkdtemp())
        self.blobs = BlobStore(self.directory / "blobs")
        self.records: dict[tuple[str, str], dict[str, Any]] = {}

    def read(self, workflow: str, key: str) -> Any:
        return self.records.get((workflow, key))

    def write(self, workflow: str, key: str, record: dict[str, Any]) -> None:
        self.records[(workflow, key)] = record

    def remove(self, workflow: str, key: str) -> bool:
        return self.records.pop((workflow, key), None) is not None

    def record_keys(self, workflow: str | None = None) -> list[tuple[str, str]]:
        return [k for k in self.records if workflow is None or k[0] == workflow]
