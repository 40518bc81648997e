"""Running part of a notebook: trusting saved upstream steps for inputs the kernel lacks.

After a restart a user may run only a downstream step. Its saved inputs are
not in the namespace, so they cannot be compared by value. :class:`Upstream`
looks for the saved step that made each missing input and vouches for it only
when both hold:

- the value that step saved is exactly the one the downstream step read
  (same digest: no plain cell changed it in between), and
- that step is still valid: every input it read is unchanged now (or, when
  missing too, vouched for the same way) and no file it read changed.

The upstream step's *code* cannot be compared (its cell has not run); the note
on the restore says which steps were trusted. When nothing vouches for a
missing input, the step runs and its note names the step that makes the input
and why it could not be trusted, so the ``NameError`` that follows is clear.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping

from awaitly_nb.core.digest import VALUE, value_digest
from awaitly_nb.core.payload import StepPayload
from awaitly_nb.core.process import INPUT_PREFIX, state_digest
from awaitly_nb.errors import StateFormatError, StorageError
from awaitly_nb.storage.base import StepStore
from awaitly_nb.storage.manifest import StepManifest

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Upstream"]

_MAX_DEPTH = 50


class Upstream:
    """Vouches for missing inputs with the saved steps of ``workflow`` (one lookup's worth).

    Args:
        store: where the steps are saved.
        workflow: the workflow whose steps may vouch.
        values: the namespace as it is now.
        file_change: why a file differs from its saved stamp (None: unchanged).
        module_version: passed to :func:`~awaitly_nb.core.digest.value_digest`.
        failed: steps that raised in this session: they vouch for nothing.
    """

    def __init__(
        self,
        store: StepStore,
        workflow: str,
        values: Mapping[str, Any],
        file_change: Callable[[str, Mapping[str, Any]], str | None] | None = None,
        module_version: Callable[[str], str] | None = None,
        *,
        failed: Collection[str] = (),
    ) -> None:
        self.store = store
        self.failed = failed
        self.workflow = workflow
        self.values = values
        self.file_change = file_change
        self.module_version = module_version
        self._manifests: list[StepManifest] | None = None
        self._valid: dict[str, str] = {}

    def vouch(self, reader: str, name: str, saved: str, depth: int = 0) -> tuple[str | None, str]:
        """``(key, "")`` of a valid saved step that made exactly ``saved``; else ``(None, why)``."""
        if not saved.startswith(VALUE):
            return None, f"{name} is not defined now (it was not compared by value)"
        makers = [m for m in self._steps() if name in m.variables and m.key != reader]
        if not makers:
            return None, f"{name} is not defined now and no saved step makes it"
        why = ""
        for maker in reversed(makers):  # the newest first
            if maker.key in self.failed:
                why = why or (
                    f"{name} is not defined now; step {maker.key!r} makes it, "
                    "but it failed when it ran in this kernel"
                )
                continue
            problem = self._holds(maker, depth)
            if not problem:
                problem = self._same_value(maker, name, saved)
            if not problem:
                return maker.key, ""
            why = why or f"{name} is not defined now; step {maker.key!r} makes it, but {problem}"
        return None, why

    def _steps(self) -> list[StepManifest]:
        if self._manifests is None:
            try:
                self._manifests = self.store.manifests(self.workflow)
            except StorageError:
                self._manifests = []
        return self._manifests

    def _holds(self, manifest: StepManifest, depth: int) -> str:
        """ "" if ``manifest``'s inputs and files are as they were when it was saved, else why."""
        key = manifest.key
        if key in self._valid:
            return self._valid[key]
        if depth >= _MAX_DEPTH:
            return "its own inputs go back too far to check"
        self._valid[key] = "it depends on itself"  # cut cycles
        why = self._check(manifest, depth)
        self._valid[key] = why
        return why

    def _check(self, manifest: StepManifest, depth: int) -> str:
        for name, saved in sorted(manifest.inputs.items()):
            if name.startswith(INPUT_PREFIX):
                now = state_digest(name[len(INPUT_PREFIX) :])
                if now is None or VALUE + now != saved:
                    return f"the {name[len(INPUT_PREFIX) :]} state it read changed since"
                continue
            if name in self.values:
                now = value_digest(self.values[name], self.values, self.module_version)
                if now is None or VALUE + now != saved:
                    return f"its input {name} changed since"
            elif self.vouch(manifest.key, name, saved, depth + 1)[0] is None:
                return f"its input {name} is not defined now either"
        if self.file_change is not None:
            for path, stamp in sorted({**manifest.files, **manifest.deps}.items()):
                change = self.file_change(path, stamp)
                if change:
                    return change
        return ""

    def _same_value(self, manifest: StepManifest, name: str, saved: str) -> str:
        try:
            entry = self.store.entry(self.workflow, manifest.key)
            if entry is None:
                return "it is no longer saved"
            payload = StepPayload.from_saved(entry.load(), call=False)
        except (StateFormatError, StorageError) as exc:
            return f"it cannot be restored ({exc})"
        if name not in payload.variables:
            return f"it no longer saves {name}"
        now = value_digest(payload.variables[name], self.values, self.module_version)
        if now is None or VALUE + now != saved:
            return f"a cell changed {name} after it ran"
        return ""
