"""``export_state`` / ``import_state``: a store's steps as one bundle file, with progress.

The ``awaitly-nb export`` and ``import`` commands call :func:`export_steps`
and :func:`import_steps` with the store they resolved; the Python functions
use the store :func:`~awaitly_nb.configure` chose.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from awaitly_nb.config import get_session
from awaitly_nb.progress import progress_bar
from awaitly_nb.sharing.bundle import BundleReport, export_bundle, import_bundle
from awaitly_nb.storage.base import StepStore, StoredStep
from awaitly_nb.storage.signing import load_key

__all__ = ["export_state", "export_steps", "import_state", "import_steps", "progress_bar"]


def _blob_bytes(entries: Iterable[StoredStep]) -> int:
    """Bytes of the distinct blobs the given stored steps refer to."""
    sizes = {ref.name: ref.size for entry in entries for ref in entry.blob_refs()}
    return sum(sizes.values())


def export_steps(
    store: StepStore,
    path: str | os.PathLike[str],
    *,
    workflow: str | None = None,
    keys: Iterable[str] | None = None,
    key: bytes | None = None,
    progress: bool | None = None,
) -> BundleReport:
    """Write ``store``'s steps (all, one workflow's, some keys) to a bundle, signed with ``key``."""
    wanted = None if keys is None else set(keys)
    entries = [e for e in store.entries(workflow) if wanted is None or e.manifest.key in wanted]
    with progress_bar(_blob_bytes(entries), "export", progress) as bar:
        return export_bundle(store, path, workflow=workflow, keys=wanted, key=key, progress=bar)


def import_steps(
    store: StepStore,
    path: str | os.PathLike[str],
    *,
    trust: bool = False,
    key: bytes | None = None,
    progress: bool | None = None,
) -> BundleReport:
    """Import a bundle into ``store`` (see :func:`import_state`)."""
    size = os.path.getsize(path) if os.path.exists(path) else 0
    with progress_bar(size, "import", progress) as bar:
        return import_bundle(store, path, trust=trust, key=key, progress=bar)


def export_state(
    path: str | os.PathLike[str],
    *,
    workflow: str | None = None,
    keys: Iterable[str] | None = None,
    key_file: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
) -> BundleReport:
    """Write saved steps to one bundle file for a teammate.

    Args:
        path: the bundle file to write (``.awnb`` by convention).
        workflow: only this workflow's steps (default: every workflow in the store).
        keys: only these keys.
        key_file: the team key to sign with (default: ``$AWAITLY_NB_KEY``; no key:
            unsigned, and the importer must pass ``trust=True``).
        progress: show a progress bar (default: for bundles over 64 MB).

    >>> import tempfile, awaitly_nb
    >>> tmp = tempfile.mkdtemp()
    >>> _ = awaitly_nb.configure(dir=tmp + "/a", workflow="doc")
    >>> awaitly_nb.step(lambda: 41 + 1, key="answer")
    42
    >>> export_state(tmp + "/state.awnb").steps
    [('doc', 'answer')]
    >>> _ = awaitly_nb.configure(dir=tmp + "/b")
    >>> import_state(tmp + "/state.awnb", trust=True).steps
    [('doc', 'answer')]
    >>> awaitly_nb.step(lambda: 0, key="answer", pin=True)  # restored, not run
    42
    >>> _ = awaitly_nb.configure(dir=None, workflow=None)
    """
    return export_steps(
        get_session().store,
        path,
        workflow=workflow,
        keys=keys,
        key=load_key(key_file),
        progress=progress,
    )


def import_state(
    path: str | os.PathLike[str],
    *,
    trust: bool = False,
    key_file: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
) -> BundleReport:
    """Import a bundle's steps into the store; they then restore like your own.

    A bundle signed with the team key (``key_file`` or ``$AWAITLY_NB_KEY``) is
    accepted; any other needs ``trust=True``, because restoring a step
    unpickles it, which runs code. Every checksum is verified first: a
    tampered or truncated bundle is refused and nothing is imported. Steps
    written by another Python or library version import with a warning and run
    again if they cannot be loaded.

    Raises:
        TrustError: the bundle is not signed with the team key and ``trust`` is false.
        StateFormatError: the bundle is damaged; nothing was imported.
    """
    session = get_session()
    report = import_steps(
        session.store, path, trust=trust, key=load_key(key_file), progress=progress
    )
    session.engine.notify_changed()
    return report
