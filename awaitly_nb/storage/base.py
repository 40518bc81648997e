"""The one store protocol: what every step store does, and what is written once for all.

A store keeps, for each step ``(workflow, key)``, one index record — the
step's :class:`~awaitly_nb.storage.manifest.StepManifest` and its
:class:`~awaitly_nb.storage.manifest.ValueRecord` — and the blob files the
value needs. A concrete store only moves those: :meth:`StepStore.read`,
:meth:`~StepStore.write`, :meth:`~StepStore.remove` and
:meth:`~StepStore.keys` for records, and its ``blobs``. Everything else
(typed records, saving and loading a value, listing, clearing, gc, verify)
is written here once, on top of those primitives:

- :class:`~awaitly_nb.storage.local.LocalStore`: a diskcache index and blob files;
- :class:`~awaitly_nb.storage.shared.SharedStore`: Redis or any fsspec URL;
- :class:`~awaitly_nb.storage.memory.MemoryStore`: in memory, for tests.

A save writes the blobs first and the record last, in one write, so a reader
sees the previous entry or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path

from awaitly_nb.errors import CacheWarning, StateFormatError, StorageError, warn
from awaitly_nb.storage.blobs import BlobStore, GcReport
from awaitly_nb.storage.codec import versions
from awaitly_nb.storage.manifest import BlobRef, StepManifest, ValueRecord
from awaitly_nb.storage.names import check_name
from awaitly_nb.storage.values import check_value, read_value, write_value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NamedTuple
else:
    from awaitly_nb._namedtuple import NamedTuple

__all__ = ["VARIANT", "GcReport", "StepStore", "StoredStep", "variant_key"]

VARIANT = "\x00variant:"
"""Separates a step's key from a variant's fingerprint (keys never contain NUL)."""


def variant_key(key: str, fingerprint: str) -> str:
    """The record key of a step's variant saved with ``fingerprint``."""
    return f"{key}{VARIANT}{fingerprint}"


class StoredStep(NamedTuple):
    """A saved step as found in a store; :meth:`load` reads its value.

    The value record is checked when it is used (:attr:`record`, :meth:`load`),
    so a damaged one is reported as damaged, not as absent.
    """

    manifest: StepManifest
    raw_record: Any
    blobs: BlobStore

    @property
    def record(self) -> ValueRecord:
        """The value's record.

        Raises:
            StateFormatError: it is damaged or of an unknown format.
        """
        return ValueRecord.from_dict(self.raw_record)

    def blob_refs(self) -> list[BlobRef]:
        """The blobs the value needs (none if its record is damaged)."""
        try:
            return self.record.blobs()
        except StateFormatError:
            return []

    def load(self, *, verify_limit: int | None = None) -> Any:
        """The saved value.

        Raises:
            StateFormatError: the entry is damaged or cannot be unpickled here.
        """
        if verify_limit is None:
            return read_value(self.record, self.blobs)
        return read_value(self.record, self.blobs, verify_limit=verify_limit)


class StepStore(ABC):
    """Saved steps: records in an index, big buffers in :attr:`blobs`.

    >>> from awaitly_nb.storage.memory import MemoryStore
    >>> store = MemoryStore()
    >>> manifest = store.save("nb", "user:1", {"variables": ["user"]}, {"user": {"id": 1}})
    >>> manifest.variables, store.load("nb", "user:1")
    (('user',), {'user': {'id': 1}})
    """

    directory: Path
    """The local folder of the store (for a shared store: its local cache)."""
    blobs: BlobStore
    """Where the store keeps blobs (a shared store reads them through a local cache)."""

    # --- the primitives a store implements: records as plain dicts --------------
    @abstractmethod
    def read(self, workflow: str, key: str) -> Any:
        """The raw record ``{"manifest": ..., "value": ...}`` of a step, or None.

        A damaged record is None (with a warning); a store that cannot be
        reached raises :class:`~awaitly_nb.errors.StorageError`.
        """

    @abstractmethod
    def write(self, workflow: str, key: str, record: dict[str, Any]) -> None:
        """Write a step's raw record in one piece (its blobs are in place already)."""

    @abstractmethod
    def remove(self, workflow: str, key: str) -> bool:
        """Delete a step's record; True if there was one."""

    @abstractmethod
    def record_keys(self, workflow: str | None = None) -> list[tuple[str, str]]:
        """The ``(workflow, key)`` of every record (of one workflow, or all), variants too."""

    def close(self) -> None:  # noqa: B027 - most stores hold nothing to close
        """Release connections and files (the store reopens them on next use)."""

    def disk_usage(self) -> int:
        """Bytes the store uses on this machine."""
        total = 0
        for path in self.directory.rglob("*"):
            try:
                if path.is_file():
                    total += path.stat().st_size
            except OSError:
                pass
        return total

    # --- written once, for every store ------------------------------------------
    def step_keys(self, workflow: str | None = None) -> list[tuple[str, str]]:
        """The ``(workflow, key)`` of every saved step (of one workflow, or all)."""
        return [(wf, key) for wf, key in self.record_keys(workflow) if VARIANT not in key]

    def variant_keys(self, workflow: str, key: str) -> list[str]:
        """The record keys of the variants kept for a step."""
        prefix = key + VARIANT
        return [k for _, k in self.record_keys(workflow) if k.startswith(prefix)]

    def variant_counts(self, workflow: str) -> dict[str, int]:
        """How many variants are kept for each step of ``workflow`` (steps with none left out)."""
        counts: dict[str, int] = {}
        for _, name in self.record_keys(workflow):
            if VARIANT in name:
                key = name.split(VARIANT, 1)[0]
                counts[key] = counts.get(key, 0) + 1
        return counts

    def _keep_variant(
        self, workflow: str, key: str, record: dict[str, Any], fingerprint: str
    ) -> list[str]:
        """Keep a record being saved as a variant too; return the step's variants, the
        most recently saved first.

        The step's record lists its variants, so a save reads one record instead of
        every key in the store. A record saved before the list existed (or imported)
        has none: then the store is searched once.
        """
        name = variant_key(key, fingerprint)
        self.write(workflow, name, record)
        previous = self.read(workflow, key)
        listed = previous.get("variants") if isinstance(previous, dict) else []
        if not (isinstance(listed, list) and all(isinstance(n, str) for n in listed)):
            found = []
            for other in self.variant_keys(workflow, key):
                entry = self.entry(workflow, other)
                found.append((entry.manifest.saved_at if entry else 0.0, other))
            listed = [n for _, n in sorted(found, reverse=True)]
        return [name, *(n for n in listed if n != name)]

    def entry(self, workflow: str, key: str) -> StoredStep | None:
        """The saved step, or None (a damaged record, or one of an unknown format, is absent)."""
        raw = self.read(workflow, key)
        if not isinstance(raw, dict):
            return None
        fields = raw.get("manifest")
        if isinstance(fields, dict):  # where the record is filed says whose it is
            fields = {**fields, "workflow": workflow, "key": key}
        try:
            manifest = StepManifest.from_dict(fields, f"saved step {key!r} of {workflow!r}")
        except StateFormatError as exc:
            warn(f"{exc}; it is treated as not saved and runs again", CacheWarning)
            return None
        return StoredStep(manifest, raw.get("value"), self.blobs)

    def manifest(self, workflow: str, key: str) -> StepManifest | None:
        """The manifest of a saved step, or None."""
        entry = self.entry(workflow, key)
        return None if entry is None else entry.manifest

    def load(self, workflow: str, key: str) -> Any:
        """The saved value.

        Raises:
            KeyError: nothing is saved under ``(workflow, key)``.
            StateFormatError: the entry is damaged or cannot be unpickled here.
        """
        entry = self.entry(workflow, key)
        if entry is None:
            raise KeyError((workflow, key))
        return entry.load()

    def entries(self, workflow: str | None = None) -> Iterator[StoredStep]:
        """Every readable saved step (of one workflow, or all)."""
        for wf, key in self.step_keys(workflow):
            entry = self.entry(wf, key)
            if entry is not None:
                yield entry

    def manifests(self, workflow: str | None = None) -> list[StepManifest]:
        """Manifests of the saved steps (of one workflow, or all), oldest first."""
        found = [entry.manifest for entry in self.entries(workflow)]
        return sorted(found, key=lambda m: (m.saved_at, m.key))

    def save(
        self,
        workflow: str,
        key: str,
        manifest: StepManifest | Mapping[str, Any],
        value: Any,
        *,
        variants: int = 0,
    ) -> StepManifest:
        """Save ``value`` with its manifest (or manifest fields); return the manifest as stored.

        With ``variants``, the record is also kept as a variant (by its fingerprint),
        at most that many per key; a variant that cannot be written is skipped.

        Raises:
            SerializationError: the value cannot be pickled; nothing is written.
            StorageError: the store refused the write; the previous entry is intact.
        """
        check_name(workflow, "workflow")
        check_name(key)
        if not isinstance(manifest, StepManifest):
            fields = {**manifest, "workflow": workflow, "key": key}
            fields.setdefault("saved_at", time.time())
            manifest = StepManifest.from_dict(fields)
        record = write_value(value, self.blobs)
        stored = replace(
            manifest,
            workflow=workflow,
            key=key,
            size=record.nbytes,
            saved_at=manifest.saved_at or time.time(),
            versions=versions(),
        )
        raw: dict[str, Any] = {"manifest": stored.to_dict(), "value": record.to_dict()}
        dropped: list[str] = []
        if variants and stored.fingerprint:
            # A variant is a convenience: the step itself is saved whatever happens here.
            with contextlib.suppress(StorageError):
                kept = self._keep_variant(workflow, key, raw, stored.fingerprint)
                raw["variants"], dropped = kept[:variants], kept[variants:]
        self.write(workflow, key, raw)
        for name in dropped:
            with contextlib.suppress(StorageError):
                self.remove(workflow, name)
        return stored

    def put_record(self, manifest: StepManifest, record: ValueRecord) -> None:
        """Write a step whose blobs are in place already (an import)."""
        check_name(manifest.workflow, "workflow")
        check_name(manifest.key)
        self.write(
            manifest.workflow,
            manifest.key,
            {"manifest": manifest.to_dict(), "value": record.to_dict()},
        )

    def delete(self, workflow: str, key: str) -> bool:
        """Forget a step and its variants; True if it was saved. Blobs go at the next :meth:`gc`."""
        for name in self.variant_keys(workflow, key):
            self.remove(workflow, name)
        return self.remove(workflow, key)

    def clear(self, workflow: str | None = None) -> int:
        """Forget every step (of one workflow, or all) and their variants; return how many."""
        count = 0
        for wf, key in self.record_keys(workflow):
            if self.remove(wf, key) and VARIANT not in key:
                count += 1
        return count

    def referenced_blobs(self) -> set[str]:
        """Every blob some saved step (or kept variant) needs."""
        names: set[str] = set()
        for wf, key in self.record_keys(None):
            entry = self.entry(wf, key)
            if entry is not None:
                names.update(ref.name for ref in entry.blob_refs())
        return names

    def gc(self, *, min_age: float = 600.0) -> GcReport:
        """Delete blobs no step refers to, and leftovers of interrupted writes.

        Only files older than ``min_age`` seconds are removed, so a save in
        progress in another kernel keeps the blobs it is about to refer to.
        """
        return self.blobs.collect(self.referenced_blobs(), min_age=min_age)

    def verify(self) -> list[str]:
        """Check every saved step against its hashes, reading all its blobs and unpickling
        nothing; return the problems found."""
        problems, damaged = [], []
        for wf, key in self.step_keys(None):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", CacheWarning)
                entry = self.entry(wf, key)
            if entry is None:
                damaged.append(f"{wf} / {key}: the index record is damaged")
                continue
            try:
                check_value(entry.record, entry.blobs)  # never unpickles
            except StateFormatError as exc:
                problems.append(f"{wf} / {key}: {exc}")
        problems.extend(damaged)
        orphans = set(self.blobs.names()) - self.referenced_blobs()
        if orphans:
            problems.append(f"{len(orphans)} blob(s) no step refers to (run gc)")
        return problems

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.directory)!r})"
