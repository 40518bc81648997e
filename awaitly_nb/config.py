"""Configuration in one place: which store and workflow steps use, for every front end.

The store directory, a shared store's URL and the workflow name are resolved
here — from :func:`configure`, else the environment (``AWAITLY_NB_DIR``,
``AWAITLY_NB_STORE``), else the defaults (``./.awaitly``, the notebook's file
name or ``default``) — and used alike by ``%%step``, ``with step``, the call
form in scripts and the ``awaitly-nb`` command. The process-wide
:class:`Session` holds the stores it opened and the
:class:`~awaitly_nb.core.engine.StepEngine` every notebook step goes through.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from awaitly_nb.core.engine import VARIANTS, StepEngine
from awaitly_nb.files import FileProbe
from awaitly_nb.storage.base import StepStore
from awaitly_nb.storage.blobs import GcReport
from awaitly_nb.storage.local import LocalStore
from awaitly_nb.storage.signing import load_key

TYPE_CHECKING = False  # typing is not imported at run time: see awaitly_nb._namedtuple
if TYPE_CHECKING:
    from typing import Any

    from awaitly_nb.core.workflow import EngineCache

__all__ = [
    "DEFAULT_DIR",
    "ENV_DIR",
    "ENV_STORE",
    "Session",
    "configure",
    "default_directory",
    "default_workflow",
    "gc",
    "get_session",
    "open_store",
    "store_url",
]

ENV_DIR = "AWAITLY_NB_DIR"
ENV_STORE = "AWAITLY_NB_STORE"
ENV_TRUST = "AWAITLY_NB_TRUST_UNSIGNED"
ENV_STORE_OPTIONS = "AWAITLY_NB_STORE_OPTIONS"
DEFAULT_DIR = ".awaitly"


def default_directory(environ: Mapping[str, str] = os.environ) -> Path:
    """``$AWAITLY_NB_DIR``, else ``./.awaitly`` (absolute)."""
    return Path(environ.get(ENV_DIR) or DEFAULT_DIR).absolute()


def store_url(environ: Mapping[str, str] = os.environ) -> str | None:
    """``$AWAITLY_NB_STORE`` (a shared store's URL), or None for the local store."""
    return environ.get(ENV_STORE) or None


def store_options_from_env(environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """``$AWAITLY_NB_STORE_OPTIONS``: the shared store's options as a JSON object.

    Raises:
        ValueError: it is not a JSON object.
    """
    text = environ.get(ENV_STORE_OPTIONS, "").strip()
    if not text:
        return {}
    import json

    try:
        options = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"${ENV_STORE_OPTIONS} is not JSON: {exc}") from None
    if not isinstance(options, dict):
        raise ValueError(f"${ENV_STORE_OPTIONS} must be a JSON object, got {text[:40]!r}")
    return options


def trust_unsigned_from_env(environ: Mapping[str, str] = os.environ) -> bool:
    """``$AWAITLY_NB_TRUST_UNSIGNED`` set to 1 (or true/yes): use a shared store unsigned."""
    return environ.get(ENV_TRUST, "").strip().lower() in {"1", "true", "yes"}


def open_store(
    directory: str | os.PathLike[str],
    url: str | None = None,
    *,
    key: bytes | None = None,
    trust_unsigned: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> StepStore:
    """The local store in ``directory``, or the shared store at ``url`` (blobs cached in it).

    A shared store needs the team ``key`` (its records are signed and checked with
    it) unless ``trust_unsigned``.

    Raises:
        TrustError: a shared store without a key or ``trust_unsigned``.
        StorageError: the shared store cannot be opened.
        ValueError: ``url`` is not a URL.
    """
    directory = Path(directory)
    if url is None:
        return LocalStore(directory)
    from awaitly_nb.storage.shared import open_shared_store

    return open_shared_store(
        url,
        directory / "shared-cache",
        key=key,
        trust_unsigned=trust_unsigned,
        storage_options=storage_options,
    )


def _jupyter_notebook_name() -> str | None:
    """The notebook's file name as Jupyter tells its kernels (``$JPY_SESSION_NAME``)."""
    name = os.environ.get("JPY_SESSION_NAME")
    return Path(name).name if name else None


def default_workflow(user_ns: Mapping[str, Any] | None = None) -> str:
    """The notebook's file name when the front end tells it, else the script's, else ``default``.

    ``user_ns`` is a notebook's namespace (VS Code puts ``__vsc_ipynb_file__`` there).
    In a kernel, the kernel's launcher script is not a workflow name.
    """
    if user_ns is not None:
        vscode = user_ns.get("__vsc_ipynb_file__")
        if isinstance(vscode, str) and vscode:
            return Path(vscode).name
    name = _jupyter_notebook_name()
    if name:
        return name
    if user_ns is None:
        main_file = getattr(sys.modules.get("__main__"), "__file__", None)
        if main_file and not Path(main_file).name.startswith("ipykernel_launcher"):
            return Path(main_file).name
    return "default"


class Session:
    """Where steps are saved and under which workflow; see :func:`configure`."""

    def __init__(self) -> None:
        self.directory: Path | None = None
        self.shared: str | None = None
        """A shared store's URL (Redis or fsspec); None keeps steps in ``directory`` only."""
        self.workflow: str | None = None
        self.workflow_detector: Callable[[], str | None] | None = None
        """Set by the notebook layer: tells the notebook's name."""
        self.current_cell: str | None = None
        """The id of the cell running now, when the front end sends one (Jupyter does)."""
        self.step_cells: dict[tuple[str, str], str] = {}
        """Which cell last ran or restored each ``(workflow, key)`` this session."""
        self.key: bytes | None = None
        """The team key (else ``$AWAITLY_NB_KEY``): signs and checks shared-store records."""
        self.trust_unsigned: bool | None = None
        """Use a shared store without a key (else ``$AWAITLY_NB_TRUST_UNSIGNED``)."""
        self.storage_options: dict[str, Any] | None = None
        """The shared store's driver options (else ``$AWAITLY_NB_STORE_OPTIONS``)."""
        self._stores: dict[tuple[Path, str | None], StepStore] = {}
        self._default: tuple[str, Path] | None = None
        self.engine = StepEngine(lambda: self.store, self.workflow_id, FileProbe())

    def __repr__(self) -> str:
        return (
            f"Session(directory={self.directory!r}, shared={self.shared!r}, "
            f"workflow={self.workflow!r}, trust_unsigned={self.trust_unsigned!r})"
        )

    def close_stores(self) -> None:
        """Close the stores opened so far (they reopen on next use)."""
        for store in self._stores.values():
            with contextlib.suppress(Exception):
                store.close()
        self._stores.clear()
        self._default = None

    def resolved_directory(self) -> Path:
        """The store directory: configured, else ``$AWAITLY_NB_DIR``, else ``./.awaitly``.

        The default is fixed at first use: a cell that changes the working
        directory later does not move the store.
        """
        if self.directory is not None:
            return self.directory
        env = os.environ.get(ENV_DIR) or ""
        if self._default is None or self._default[0] != env:
            self._default = (env, default_directory())
        return self._default[1]

    def known_directory(self) -> Path | None:
        """The store directory if it is fixed already (configured, or a step used it);
        None before, without fixing it."""
        if self.directory is not None:
            return self.directory
        return None if self._default is None else self._default[1]

    @property
    def store(self) -> StepStore:
        """The store in use: local, or shared (its blobs cached in the local directory)."""
        where = (self.resolved_directory(), self.shared or store_url())
        store = self._stores.get(where)
        if store is None:
            options = self.storage_options
            store = self._stores[where] = open_store(
                *where,
                key=self.team_key(),
                trust_unsigned=self.trusts_unsigned(),
                storage_options=store_options_from_env() if options is None else options,
            )
        return store

    def team_key(self) -> bytes | None:
        """The key configured, else ``$AWAITLY_NB_KEY``."""
        return self.key or load_key()

    def trusts_unsigned(self) -> bool:
        """``trust_unsigned`` as configured, else ``$AWAITLY_NB_TRUST_UNSIGNED``."""
        return trust_unsigned_from_env() if self.trust_unsigned is None else self.trust_unsigned

    def check_trust(self) -> None:
        """Raise now if the shared store in use would be refused for want of a key.

        Raises:
            TrustError: a shared store, and neither a key nor ``trust_unsigned``.
        """
        url = self.shared or store_url()
        if url and self.team_key() is None and not self.trusts_unsigned():
            from awaitly_nb.storage.shared import untrusted

            raise untrusted(url)

    def workflow_id(self) -> str:
        """The workflow steps belong to: configured, else the notebook's name, else ``default``."""
        if self.workflow:
            return self.workflow
        if self.workflow_detector is not None:
            detected = self.workflow_detector()
            if detected:
                return detected
        return default_workflow()


_SESSION = Session()


def get_session() -> Session:
    """The process-wide session used by ``%%step``, ``with step(...)`` and ``step(fn, ...)``."""
    return _SESSION


def gc(*, min_age: float = 600.0) -> GcReport:
    """Delete the blob files no saved step refers to (in the current store).

    Forgetting a step, or saving it again with new values, leaves its old
    blobs behind; this reclaims them. Files younger than ``min_age`` seconds
    stay, so a save in progress in another kernel is safe.

    >>> import tempfile
    >>> _ = configure(dir=tempfile.mkdtemp())
    >>> gc(min_age=0).blobs
    0
    >>> _ = configure(dir=None)
    """
    return _SESSION.store.gc(min_age=min_age)


def step_cache() -> EngineCache:
    """awaitly's ``StepCache`` over the store and workflow that notebooks use.

    With ``create_workflow(cache=step_cache())`` a script's workflow saves its
    keyed steps where ``%%step`` and ``step(fn, ...)`` do (the current store and
    workflow, see :func:`configure`), so a notebook and a script share keyed
    results; see :class:`~awaitly_nb.core.workflow.EngineCache`.

    >>> import tempfile
    >>> from awaitly_nb import create_workflow, step
    >>> _ = configure(dir=tempfile.mkdtemp(), workflow="analysis.ipynb")
    >>> workflow = create_workflow(cache=step_cache())
    >>> workflow(lambda s: s(lambda: 6 * 7, key="answer"))
    42
    >>> step(lambda: 0, key="answer", pin=True)  # the notebook's form, trusting the key
    42
    >>> _ = configure(dir=None, workflow=None)
    """
    from awaitly_nb.core.workflow import EngineCache  # asyncio: only for the workflow API

    return EngineCache(_SESSION.engine)


_UNSET: Any = object()


def configure(
    *,
    dir: Any = _UNSET,
    workflow: Any = _UNSET,
    store: Any = _UNSET,
    variants: Any = _UNSET,
    key: Any = _UNSET,
    trust_unsigned: Any = _UNSET,
    storage_options: Any = _UNSET,
) -> Session:
    """Choose where notebook steps are saved and the workflow they belong to.

    Only the settings given change; pass None to go back to the default.

    Args:
        dir: the store directory (default ``$AWAITLY_NB_DIR`` or ``./.awaitly``).
        workflow: the workflow id (default: the notebook's file name, else ``default``).
        store: a shared store to use instead of the local one (default
            ``$AWAITLY_NB_STORE``): ``redis://host:6379/0`` or an fsspec URL
            (``s3://bucket/team``, ``file:///shared/steps``, ``memory://name``).
            Blobs are cached in ``dir``.
        variants: how many variants (other code or inputs) each key keeps, so
            going back to an earlier parameter replays it (default 4; 0 keeps none).
        key: the team key (text or bytes; default ``$AWAITLY_NB_KEY``): a shared
            store's records are signed with it, and only records signed with it
            are used, checked before anything is unpickled.
        storage_options: options for the shared store's driver (default
            ``$AWAITLY_NB_STORE_OPTIONS``, a JSON object): fsspec's
            ``storage_options`` (``{"client_kwargs": {"endpoint_url": ...}, "key":
            ..., "secret": ...}``) or redis-py's ``from_url`` keywords
            (``password``, ``ssl_ca_certs``, ``socket_timeout``).
        trust_unsigned: use a shared store without a key (default
            ``$AWAITLY_NB_TRUST_UNSIGNED``): whoever can write to it can then run
            code in your kernel.

    Raises:
        TypeError, ValueError: a setting of the wrong type or value (nothing changes).

    >>> import tempfile
    >>> session = configure(dir=tempfile.mkdtemp(), workflow="analysis.ipynb")
    >>> session.workflow_id()
    'analysis.ipynb'
    >>> _ = configure(dir=None, workflow=None)  # back to the defaults
    """
    if variants is not _UNSET:
        if variants is None:
            variants = VARIANTS
        if type(variants) is not int or variants < 0:
            raise ValueError(f"variants must be a whole number >= 0, got {variants!r}")
    if workflow is not _UNSET:
        if workflow is not None and (not isinstance(workflow, str) or not workflow):
            raise ValueError(f"workflow must be a non-empty string, got {workflow!r}")
        _SESSION.workflow = workflow
    if dir is not _UNSET:
        if dir is not None and not isinstance(dir, (str, os.PathLike)):
            raise TypeError(f"dir must be a path, got {type(dir).__name__}")
        _SESSION.close_stores()
        _SESSION.directory = None if dir is None else Path(dir).absolute()
        _SESSION.engine.reset()  # another store: what this session saw is elsewhere
    if store is not _UNSET:
        if store is not None and (not isinstance(store, str) or "://" not in store):
            raise ValueError(
                f"store= takes a URL such as redis://127.0.0.1:6379/0 or s3://bucket/path, "
                f"got {store!r}; for a local folder use dir="
            )
        _SESSION.close_stores()
        _SESSION.shared = store
        _SESSION.engine.reset()
    if key is not _UNSET:
        if key is not None and (not isinstance(key, (str, bytes)) or not key.strip()):
            raise TypeError(f"key must be the team key as text or bytes, got {key!r:.20}")
        _SESSION.close_stores()
        _SESSION.key = key.encode() if isinstance(key, str) else key
    if storage_options is not _UNSET:
        if storage_options is not None and not isinstance(storage_options, Mapping):
            raise TypeError(f"storage_options must be a dict, got {type(storage_options).__name__}")
        _SESSION.close_stores()
        _SESSION.storage_options = None if storage_options is None else dict(storage_options)
    if trust_unsigned is not _UNSET:
        if trust_unsigned is not None and not isinstance(trust_unsigned, bool):
            raise TypeError(f"trust_unsigned must be True or False, got {trust_unsigned!r}")
        _SESSION.close_stores()
        _SESSION.trust_unsigned = trust_unsigned
    if variants is not _UNSET:
        _SESSION.engine.variants = variants
    if store is not _UNSET and store is not None:
        _SESSION.check_trust()  # said now, not as a traceback at the first step
    return _SESSION
