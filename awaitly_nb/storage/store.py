"""The step store: manifests and saved values of notebook steps, on diskcache.

A step is identified by ``(workflow, key)``. Its *manifest* is a small
JSON-able dict (key, workflow, fingerprint, variable names, sizes, timings,
versions) that can be listed without loading any value; its *payload* is the
saved values in a versioned envelope. Both are written in one diskcache
transaction, payload first, so a reader sees either the previous entry or the
new one, never half of one.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import diskcache

from awaitly_nb.errors import StateFormatError, StorageError
from awaitly_nb.storage.serialize import dumps_envelope, loads_envelope, versions

__all__ = ["MANIFEST_VERSION", "StepStore"]

MANIFEST_VERSION = 1
_MANIFEST = "manifest"
_PAYLOAD = "payload"


class StepStore:
    """Saved steps in a directory (``.awaitly/`` by default).

    >>> import tempfile
    >>> store = StepStore(tempfile.mkdtemp())
    >>> manifest = store.save("nb", "user:1", {"variables": ["user"]}, {"user": {"id": 1}})
    >>> store.manifest("nb", "user:1")["variables"], store.load("nb", "user:1")
    (['user'], {'user': {'id': 1}})
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        try:
            self.index = diskcache.Cache(str(self.directory / "index"))
        except Exception as exc:
            raise StorageError(f"cannot open the step store in {self.directory}: {exc}") from exc

    def manifest(self, workflow: str, key: str) -> dict[str, Any] | None:
        """The manifest of a saved step, or None."""
        found = self.index.get((_MANIFEST, workflow, key))
        return found if isinstance(found, dict) else None

    def save(
        self, workflow: str, key: str, manifest: dict[str, Any], payload: Any
    ) -> dict[str, Any]:
        """Save ``payload`` and its ``manifest``; return the manifest as stored.

        Raises:
            SerializationError: the payload cannot be pickled; nothing is written.
        """
        data = dumps_envelope(payload)
        stored = dict(manifest)
        stored.update(
            format=MANIFEST_VERSION,
            workflow=workflow,
            key=key,
            size=len(data),
            saved_at=stored.get("saved_at", time.time()),
            versions=versions(),
        )
        with self.index.transact():
            self.index.set((_PAYLOAD, workflow, key), data)
            self.index.set((_MANIFEST, workflow, key), stored)
        return stored

    def load(self, workflow: str, key: str) -> Any:
        """The saved payload.

        Raises:
            KeyError: nothing is saved under ``(workflow, key)``.
            StateFormatError: the entry is damaged or cannot be unpickled here.
        """
        data = self.index.get((_PAYLOAD, workflow, key))
        if data is None:
            raise KeyError((workflow, key))
        if not isinstance(data, bytes):
            raise StateFormatError("stored payload is not bytes")
        return loads_envelope(data)

    def delete(self, workflow: str, key: str) -> bool:
        """Forget a step; True if it was saved."""
        with self.index.transact():
            had = bool(self.index.delete((_MANIFEST, workflow, key)))
            self.index.delete((_PAYLOAD, workflow, key))
        return had

    def manifests(self, workflow: str | None = None) -> list[dict[str, Any]]:
        """Manifests of the saved steps (of one workflow, or all), oldest first."""
        found = [
            m
            for m in (self.index.get(k) for k in self._keys(_MANIFEST, workflow))
            if isinstance(m, dict)
        ]
        return sorted(found, key=lambda m: (m.get("saved_at", 0.0), m.get("key", "")))

    def clear(self, workflow: str | None = None) -> int:
        """Forget every step (of one workflow, or all); return how many."""
        count = 0
        for _, wf, key in list(self._keys(_MANIFEST, workflow)):
            count += self.delete(wf, key)
        return count

    def workflows(self) -> list[str]:
        """The workflows that have saved steps."""
        return sorted({k[1] for k in self._keys(_MANIFEST, None)})

    def _keys(self, kind: str, workflow: str | None) -> Iterator[tuple[str, str, str]]:
        for k in self.index.iterkeys():
            if (
                isinstance(k, tuple)
                and len(k) == 3
                and k[0] == kind
                and (workflow is None or k[1] == workflow)
            ):
                yield k

    def close(self) -> None:
        self.index.close()

    def __repr__(self) -> str:
        return f"StepStore({str(self.directory)!r})"
