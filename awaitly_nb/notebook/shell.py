"""Finding the running IPython shell (without importing IPython) and tying the session to it."""

from __future__ import annotations

import ast
import contextlib
import sys
import types
from collections.abc import Iterable, Mapping

from awaitly_nb.config import Session, default_workflow, get_session
from awaitly_nb.core.fingerprint import code_fingerprint

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["attach_shell", "current_shell", "session_for_shell", "unwatch_cells", "watch_cells"]


def current_shell() -> Any:
    """The running IPython shell, or None (never imports IPython)."""
    if "IPython" not in sys.modules:
        return None
    from IPython import get_ipython

    return get_ipython()


def attach_shell(session: Session, shell: Any) -> None:
    """In IPython, steps belong to the notebook's workflow (not to the kernel's script)."""
    session.workflow_detector = lambda: default_workflow(shell.user_ns)


_PATHS_KEPT = 4000
"""A plain cell's reads kept to stamp what it made (past that, only counted)."""


def _is_step_cell(source: str) -> bool:
    return source.lstrip().startswith("%%step")


class _CellWatch:
    """Before each cell: remembers the front end's cell id (to tell two cells sharing a
    key from one cell edited), and empties the engine's memo unless it is a ``%%step``
    cell: user code may change any value then (see :mod:`awaitly_nb.core.memo`).

    Around each plain cell: stamps the variables it made or touched (read, set an
    attribute of, called a method of) with the cell's code and the files it read
    (:meth:`Lineage.made_by_cell`). A value that cannot
    be fingerprinted (a decorated function, a lazy file reader) is then an input by that
    stamp: editing the cell that makes it, or a file that cell read, runs the steps that
    read it again.
    """

    def __init__(self, session: Session, shell: Any) -> None:
        self.session = session
        self.shell = shell
        self._plain: tuple[str, dict[str, int], dict[str, str], Any] | None = None

    def __call__(self, info: Any = None) -> None:
        cell_id = getattr(info, "cell_id", None)
        self.session.current_cell = cell_id if isinstance(cell_id, str) and cell_id else None
        source = getattr(info, "raw_cell", None)
        self._stop()
        if not isinstance(source, str) or not _is_step_cell(source):
            self.session.engine.memo.clear()
            if isinstance(source, str):
                self._start(source)

    def _start(self, source: str) -> None:
        from awaitly_nb.files import ReadRecorder
        from awaitly_nb.notebook.namespace import snapshot

        recorder = ReadRecorder(limit=_PATHS_KEPT).watch()
        made = dict(self.session.engine.lineage.produced_by)
        self._plain = (source, snapshot(self.shell.user_ns), made, recorder)

    def _stop(self) -> Any:
        plain, self._plain = self._plain, None
        if plain is not None:
            plain[3].unwatch()
        return plain

    def after(self, result: Any = None) -> None:
        """After a plain cell: stamp what it made (never fails the cell)."""
        plain = self._stop()
        if plain is None:
            return
        with contextlib.suppress(Exception):  # a strange namespace: those names stay unstamped
            self._stamp(*plain)

    def _stamp(self, source: str, before: dict[str, int], made: dict[str, str], reads: Any) -> None:
        from awaitly_nb.notebook.namespace import assigned_names, changed_names, read_names

        lineage = self.session.engine.lineage
        namespace = self.shell.user_ns
        try:
            code = self.shell.transform_cell(source)
            tree = ast.parse(code)
            targets = assigned_names(tree)
            # Anything the cell touched may have changed: ``client.base = ...``,
            # ``setattr(client, ...)``, ``df.to_sql("t", con)``.
            read = read_names(tree.body)
            touched = targets.bound | targets.receivers | read
        except Exception:  # not Python after all: only rebound names
            code, touched, read = source, set(), set()
        names, _ = changed_names(
            before, namespace, touched, getattr(self.shell, "user_ns_hidden", None)
        )
        # Names a step in the cell made (``with step(...)``) keep that step's stamp.
        names = [n for n in names if lineage.produced_by.get(n) == made.get(n)]
        if names:
            store = self.session.known_directory()  # the store's own files are not data
            files = reads.file_states(ignore=[] if store is None else [store])
            made_from = f"{code_fingerprint(code)}|{_small_values(read, namespace)!r}"
            lineage.made_by_cell(names, made_from, files)


_SCALARS = (type(None), bool, int, float, complex, str, bytes)


def _small_values(names: Iterable[str], namespace: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Digests of the parameters a plain cell read (``client = Client(BASE_URL)``: a
    number, a string, a short list of them) and the code of the notebook functions it
    called: cheap to fingerprint, and what an object it made may depend on. Big values
    are left out (hashing them after every plain cell would cost too much).

    >>> _small_values(["n", "rows", "big"], {"n": 3, "rows": [1, 2], "big": list(range(500))})[0][0]
    'n'
    """
    from awaitly_nb.core.digest import value_digest
    from awaitly_nb.core.fingerprint import function_fingerprint

    found = []
    for name in sorted(names):
        value = namespace.get(name, _ABSENT)
        if isinstance(value, types.FunctionType) and value.__module__ == "__main__":
            found.append((name, function_fingerprint(value) or ""))
        elif _small(value):
            found.append((name, value_digest(value) or "?"))
    return found


_ABSENT = object()


def _small(value: Any) -> bool:
    if isinstance(value, _SCALARS):
        return not isinstance(value, (str, bytes)) or len(value) <= 10_000
    if isinstance(value, (list, tuple, set, frozenset)):
        return len(value) <= 100 and all(_small_scalar(v) for v in value)
    if isinstance(value, dict):
        return len(value) <= 100 and all(
            _small_scalar(k) and _small_scalar(v) for k, v in value.items()
        )
    return False


def _small_scalar(value: Any) -> bool:
    return isinstance(value, _SCALARS) and (
        not isinstance(value, (str, bytes)) or len(value) <= 1_000
    )


def display_settings(shell: Any = None) -> dict[str, Any]:
    """IPython's display settings where they differ from their defaults: ``%precision``,
    ``%pprint``, the inline backend's figure formats (``%config
    InlineBackend.figure_formats``, ``set_matplotlib_formats("retina")``), and the
    printers the notebook registered for a type (:func:`notebook_printers`)."""
    shell = shell or current_shell()
    found: dict[str, Any] = {}
    plain = getattr(getattr(shell, "display_formatter", None), "formatters", {}).get("text/plain")
    if plain is not None:
        if getattr(plain, "float_precision", ""):
            found["precision"] = plain.float_precision
        if getattr(plain, "pprint", True) is False:
            found["pprint"] = False
    printers = notebook_printers(shell)
    if printers:
        found["printers"] = printers
    config = sys.modules.get("matplotlib_inline.config")
    if config is not None and config.InlineBackend.initialized():
        backend = config.InlineBackend.instance()
        formats, kwargs = sorted(backend.figure_formats), dict(backend.print_figure_kwargs)
    else:  # `%config InlineBackend...` before pyplot loads it: what it will start with
        formats, kwargs = _pending_inline(shell)
    if formats != ["png"]:
        found["figure_formats"] = formats
    if kwargs != _FIGURE_KWARGS:
        found["print_figure_kwargs"] = kwargs
    return found


def _pending_inline(shell: Any) -> tuple[list[str], dict[str, Any]]:
    """The figure formats and print options the shell's configuration holds for the
    inline backend not loaded yet (``%config InlineBackend.figure_format = 'svg'``)."""
    try:
        config = shell.config
        section = config.get("InlineBackend", {})
        formats = section.get("figure_formats") or (
            {section["figure_format"]} if section.get("figure_format") else {"png"}
        )
        kwargs = section.get("print_figure_kwargs") or _FIGURE_KWARGS
        return sorted(formats), dict(kwargs)
    except Exception:  # no shell, or a configuration of another shape
        return ["png"], dict(_FIGURE_KWARGS)


_FIGURE_KWARGS = {"bbox_inches": "tight"}


def notebook_printers(shell: Any = None) -> dict[str, tuple[Any, Any]]:
    """The printers functions defined in the notebook were registered as, for a type
    (``display_formatter.formatters["text/plain"].for_type(Fraction, show)``): by
    format and type name, ``(type, function)`` (``((module, name), function)`` for
    one registered by name). Libraries' own printers are left out."""
    shell = shell or current_shell()
    found: dict[str, tuple[Any, Any]] = {}
    formatters = getattr(getattr(shell, "display_formatter", None), "formatters", {})
    for mime, formatter in formatters.items():
        for cls, printer in dict(getattr(formatter, "type_printers", {})).items():
            if getattr(printer, "__module__", None) == "__main__":
                name = f"{getattr(cls, '__module__', '')}.{getattr(cls, '__qualname__', cls)}"
                found[f"{mime} {name}"] = (cls, printer)
        for where, printer in dict(getattr(formatter, "deferred_printers", {})).items():
            if getattr(printer, "__module__", None) == "__main__":
                found[f"{mime} {'.'.join(where)}"] = (where, printer)
    return dict(sorted(found.items()))


def _set_printers(found: Any, shell: Any) -> None:
    """Register the printers of :func:`notebook_printers` (and drop the notebook's others)."""
    formatters = getattr(getattr(shell, "display_formatter", None), "formatters", {})
    wanted = dict(found or {})
    for mime, formatter in formatters.items():
        for table in ("type_printers", "deferred_printers"):
            printers = getattr(formatter, table, None)
            if isinstance(printers, dict):
                for key, printer in list(printers.items()):
                    if getattr(printer, "__module__", None) == "__main__":
                        del printers[key]
        for name, (what, printer) in wanted.items():
            if name.split(" ", 1)[0] != mime:
                continue
            if isinstance(what, tuple):
                formatter.for_type_by_name(*what, printer)
            else:
                formatter.for_type(what, printer)


def set_display_settings(found: Any, shell: Any = None) -> None:
    """Set what :func:`display_settings` returned (a step's replay): those it names,
    and the defaults for the others."""
    shell = shell or current_shell()
    plain = getattr(getattr(shell, "display_formatter", None), "formatters", {}).get("text/plain")
    if plain is not None:
        plain.float_precision = found.get("precision", "")
        plain.pprint = found.get("pprint", True)
    _set_printers(found.get("printers"), shell)
    figures = "figure_formats" in found or "print_figure_kwargs" in found
    if figures or "matplotlib_inline.config" in sys.modules:
        from matplotlib_inline.config import InlineBackend

        backend = InlineBackend.instance(parent=shell)
        backend.print_figure_kwargs = dict(found.get("print_figure_kwargs", _FIGURE_KWARGS))
        backend.figure_formats = set(found.get("figure_formats", ["png"]))


def watch_cells(session: Session, shell: Any) -> None:
    """Install the hooks around cells: the memo of hashed values, and plain cells' stamps."""
    unwatch_cells(session, shell)
    watch = _CellWatch(session, shell)
    shell.events.register("pre_run_cell", watch)
    shell.events.register("post_run_cell", watch.after)
    from awaitly_nb.core.process import SETTINGS_SOURCES, register_process_state

    SETTINGS_SOURCES["ipython.display"] = lambda: display_settings(shell)
    register_process_state(  # a replayed `%precision 3` or `%config ...` cell sets them again
        "ipython.display",
        lambda: display_settings(shell),
        lambda found: set_display_settings(found, shell),
    )
    session.engine.memo.clear()
    session.engine.memo.enabled = True


def unwatch_cells(session: Session, shell: Any) -> None:
    session.engine.memo.enabled = False
    session.engine.memo.clear()
    from awaitly_nb.core.process import SETTINGS_SOURCES, STATES

    SETTINGS_SOURCES.pop("ipython.display", None)
    STATES.pop("ipython.display", None)
    callbacks = shell.events.callbacks.get("pre_run_cell", [])
    for callback in [c for c in callbacks if isinstance(c, _CellWatch)]:
        callback._stop()
        shell.events.unregister("pre_run_cell", callback)
        if callback.after in shell.events.callbacks.get("post_run_cell", []):
            shell.events.unregister("post_run_cell", callback.after)


def session_for_shell() -> tuple[Session, Any]:
    """The session, attached to the running shell if there is one, and the shell."""
    session, shell = get_session(), current_shell()
    if shell is not None and session.workflow_detector is None:
        attach_shell(session, shell)
    return session, shell
