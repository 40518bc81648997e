"""One notebook step from lookup to save: what ``%%step`` and ``with step(...)`` share.

A :class:`NotebookStep` asks the engine, shows a one-line note, restores and
replays a hit, or records a run (live output teed, figures flushed), finds
the variables it produced and hands the payload to the engine, which saves
it. The magic and the with-block only parse their input and run the body.
"""

from __future__ import annotations

import ast
import re
import sys
import types
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from pathlib import Path

from awaitly_nb.config import get_session
from awaitly_nb.core import process
from awaitly_nb.core.digest import VALUE, value_digest
from awaitly_nb.core.engine import Decision, Run, StepEngine, StepSpec, unsaveable
from awaitly_nb.core.payload import NOTHING, StepPayload
from awaitly_nb.core.sharing import memory_of
from awaitly_nb.files import ReadRecorder
from awaitly_nb.formatting import NOTE_METADATA, format_duration, format_time, note_data
from awaitly_nb.notebook.capture import (
    LIVE_WIDGET_HINT,
    WIDGET_MIME,
    OutputRecorder,
    flush_inline_figures,
)
from awaitly_nb.notebook.namespace import (
    apart,
    assigned_names,
    co_variables,
    definition_changes,
    definition_digests,
    edited_holders,
    imported_modules,
    is_internal_name,
    module_changes,
    module_digests,
    module_stores,
    produced,
    reach,
    snapshot,
)
from awaitly_nb.notebook.restore import (
    replay,
    restore,
    set_definition_state,
    set_module_attributes,
)
from awaitly_nb.storage.codec import MAIN_BY_REFERENCE, main_global

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["NotebookStep", "show_note"]


_SEED = re.compile(r"seed\w*\s*\(|set_state\s*\(")
"""A call that seeds a generator or sets its state: ``np.random.seed(0)``,
``set_seed(0)``, ``seed_everything(0)``, ``np.random.set_state(saved)``."""


def _seeded(namespace: Any) -> bool:
    """True if a cell run so far seeded a global random generator (``np.random.seed(0)``).

    Then the generators' state before a step that draws from them is one of
    its inputs; without a seed their numbers are not meant to repeat.
    """
    history = namespace.get("In") if hasattr(namespace, "get") else None
    if isinstance(history, list):
        return any(isinstance(src, str) and _SEED.search(src) for src in history)
    source = getattr(sys.modules.get("__main__"), "__file__", None)
    try:
        return bool(source and _SEED.search(Path(source).read_text(errors="replace")))
    except OSError:
        return False


def _seeds(name: str) -> bool:
    """A call of this name seeds a generator: ``seed``, ``set_seed``, ``seed_everything``."""
    return "seed" in name


def _calls_seed(statements: Iterable[ast.stmt]) -> bool:
    """True if the code calls something named like a seed (``random.seed(1)``,
    ``set_seed(1)``): then the generators' state before it is not one of its inputs."""
    for stmt in statements:
        for node in ast.walk(stmt):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if isinstance(name, str) and _seeds(name):
                    return True
    return False


def code_calls_seed(code: types.CodeType) -> bool:
    """True if compiled code (or code nested in it) calls something named like a seed."""
    return any(_seeds(name) for name in code.co_names) or any(
        isinstance(const, types.CodeType) and code_calls_seed(const) for const in code.co_consts
    )


def state_inputs(
    before: Mapping[str, Any], changed: Mapping[str, Any], *, seeds: bool, namespace: Any
) -> dict[str, str]:
    """The process states a step's result depends on: a random generator's state before
    the step drew from it, when code run earlier seeded it and the step does not seed
    it itself (``seeds``)."""
    if seeds or not _seeded(namespace):
        return {}
    return process.input_states(before, changed)


def reapply_process(key: str, payload: StepPayload, shell: Any = None) -> None:
    """Set again the process state a replayed step changed (random generators,
    ``os.environ``, ...); a note says what cannot be set here."""
    problems = process.apply_changes(payload.process)
    if problems:
        show_note(
            f"{key!r} changed process state that cannot be set again here: " + "; ".join(problems),
            shell,
        )


def show_note(text: str, shell: Any = None) -> None:
    """Show a short awaitly_nb note (as a small display in a notebook, on stderr elsewhere)."""
    pub = getattr(shell, "display_pub", None)
    if pub is None:
        print(f"[awaitly_nb] {text}", file=sys.stderr)
        return
    pub.publish(data=note_data(text), metadata=NOTE_METADATA)


def restored_note(decision: Decision) -> str:
    manifest, payload = decision.manifest, decision.payload
    assert manifest is not None and payload is not None
    shown = ", ".join(payload.variables) or "no variables"
    note = (
        f"restored {decision.spec.key!r} ({shown}) saved {format_time(manifest.saved_at)}; "
        f"the original run took {format_duration(manifest.duration_ms)}"
    )
    if decision.unchecked:
        values = decision.spec.values or {}
        names = ", ".join(
            f"{n} ({type(values[n]).__qualname__})" if n in values else n
            for n in decision.unchecked
        )
        note += f"; not compared by value: {names}"
    if decision.trusted:
        steps = sorted(set(decision.trusted.values()))
        names = ", ".join(f"{n} (from {k!r})" for n, k in sorted(decision.trusted.items()))
        note += (
            f"; trusted the saved step{'s' if len(steps) > 1 else ''} "
            f"{', '.join(repr(k) for k in steps)} for inputs not defined now: {names}"
        )
    return note


def rerun_note(decision: Decision) -> str | None:
    if decision.status == "stale":
        return f"running {decision.spec.key!r} again: {decision.reason}"
    if decision.status == "unreadable":
        return f"running {decision.spec.key!r} again: the saved entry cannot be restored"
    return None


def digests(names: Iterable[str], namespace: Mapping[str, Any]) -> dict[str, tuple[int, str]]:
    """Identity and fingerprint of each of ``names`` that can be fingerprinted (before
    user code runs, to tell later what it changed in place: :func:`changed_since`)."""
    out = {}
    for name in names:
        value = namespace[name]
        digest = value_digest(value, namespace)
        if digest is not None:
            out[name] = (id(value), digest)
    return out


def changed_since(
    before: Mapping[str, tuple[int, str]], namespace: Mapping[str, Any], known: Iterable[str] = ()
) -> set[str]:
    """Names of :func:`digests` that hold the same objects, changed in place (a global
    that a function the step called appended to)."""
    skip = set(known)
    changed = set()
    for name, (identity, digest) in before.items():
        value = namespace.get(name, NOTHING)
        if name in skip or value is NOTHING or id(value) != identity:
            continue  # rebound or deleted: the namespace diff has it
        if value_digest(value, namespace) != digest:
            changed.add(name)
    return changed


def changed_inputs(
    engine: StepEngine, decision: Decision, values: Mapping[str, Any], known: Iterable[str] = ()
) -> set[str]:
    """Inputs compared by value that the run changed in place without naming them as
    targets: passed to a function that changed them (``add_col(df)``, ``draw(rng)``)."""
    skip = set(known)
    changed = set()
    for name, saved in decision.inputs.items():
        if name in skip or name not in values or not saved.startswith(VALUE):
            continue
        value = values[name]
        if isinstance(value, (types.ModuleType, types.FunctionType, type)):
            continue  # a definition's digest follows the globals it uses, saved apart
        if not engine.unchanged(decision, name, value):
            changed.add(name)
    return changed


def bound_to(objects: list[Any], namespace: Mapping[str, Any]) -> set[str]:
    """The names ``namespace`` has for ``objects`` (that are not numbers or strings),
    and for a numpy array among them, the arrays viewing its memory (a change made
    through ``train`` is a change of ``data`` when ``train = data[:7]``)."""
    ids = {id(o) for o in objects if not isinstance(o, (int, float, str, bytes, bool))}
    if not ids:
        return set()
    memory = {m for o in objects if (m := memory_of(o)) is not None}
    return {
        n
        for n, v in namespace.items()
        if (id(v) in ids or (memory and memory_of(v) in memory)) and not is_internal_name(n)
    }


class NotebookStep:
    """A ``%%step`` cell or ``with step(...)`` block in ``namespace``.

    Args:
        spec: the step's identity and options (see :class:`~awaitly_nb.core.engine.StepSpec`).
        namespace: where the body runs (the notebook's or the module's globals).
        shell: the IPython shell, or None in a plain script.
        outputs: the variables to save (None: every variable the body produced).
        exclude: variables not to save.
        quiet: no note on a restore.
        hint: how to exclude variables in this form (``{names}`` is filled in).
    """

    def __init__(
        self,
        spec: StepSpec,
        namespace: MutableMapping[str, Any],
        shell: Any,
        *,
        outputs: list[str] | None = None,
        exclude: Iterable[str] = (),
        quiet: bool = False,
        hint: str,
        targets: Iterable[str] | None = None,
    ) -> None:
        self.spec, self.namespace, self.shell = spec, namespace, shell
        self.outputs, self.exclude, self.quiet, self.hint = outputs, set(exclude), quiet, hint
        self.targets = None if targets is None else set(targets)
        self.engine = get_session().engine
        self._run: Run | None = None

    def lookup(self) -> Decision:
        """Ask the engine; say why a saved entry is not used."""
        self.decision = self.engine.lookup(self.spec)
        separated = self._separated()
        if separated:
            self.decision = self.decision._replace(status="stale", payload=None, reason=separated)
        note = rerun_note(self.decision)
        shared = self._shared_key()
        if shared:
            note = f"running {self.spec.key!r} again: {shared}"
        if note and not self.quiet:
            show_note(note, self.shell)
        return self.decision

    def _separated(self) -> str:
        """Why a hit cannot stand: a variable it would bind again because it shared
        objects with what the step changed shares none with its inputs now, or its
        own contents were edited since; or one holding what it restores could not be
        saved with it."""
        manifest, payload = self.decision.manifest, self.decision.payload
        if not self.decision.hit or manifest is None or payload is None or self.targets is None:
            return ""
        reads = self.spec.reads
        carried = [n for n in manifest.variables if n not in self.targets and n not in reads]
        # holding what it restores but not saved with it (a lock inside): would go on
        # holding the objects the restore replaces
        skipped = [n for n in payload.skipped if n in self.namespace and n not in reads]
        if not carried and not skipped:
            return ""
        if carried:
            reached = reach(reads, self.namespace)
            # your module's data it changed, under the notebook's name for it (CACHE)
            modules = {id(v) for values in payload.modules.values() for v in values.values()}
            carried = [
                n
                for n in carried
                if n not in reached.data and id(payload.variables.get(n)) not in modules
            ]
            inputs = {n: self.namespace[n] for n in reads if n in self.namespace}
            names = apart(carried, inputs, self.namespace)
            if names:
                verb = "shares" if len(names) == 1 else "share"
                return f"{', '.join(names)} no longer {verb} objects with what it read"
            edited = edited_holders(carried, payload.variables, self.namespace)
            if edited:  # `config = {"model": model, "lr": 0.2}` edited: not the saved 0.1
                return f"{', '.join(edited)} changed since the step saved it"
        replaced = {n: self.namespace[n] for n in payload.variables if n in self.namespace}
        loose = set(apart(skipped, replaced, self.namespace)) if replaced else set(skipped)
        stuck = [n for n in skipped if n not in loose]
        if stuck:
            verb = "holds" if len(stuck) == 1 else "hold"
            return f"{', '.join(stuck)} {verb} what it saved but could not be saved with it"
        return ""

    def _shared_key(self) -> str:
        """Why a key's code changed when another cell of this kernel uses the same key."""
        session = get_session()
        cell = session.current_cell if self.spec.kind == "cell" else None
        if cell is None:
            return ""
        where = (self.engine.workflow_id(), self.spec.key)
        other = session.step_cells.get(where)
        session.step_cells[where] = cell
        if other is None or other == cell or self.decision.reason != "code changed":
            return ""
        return (
            f"another cell uses key {self.spec.key!r} with other code; each keeps its "
            "own variant, but give each cell its own key"
        )

    def restore(self) -> Any:
        """Restore a hit's variables, show its note and outputs; return its last value."""
        payload = self.decision.payload
        assert payload is not None
        restore(self.namespace, payload)
        reapply_process(self.spec.key, payload, self.shell)
        problems = set_module_attributes(payload.modules)
        problems += set_definition_state(self.namespace, payload.definitions)
        if problems:
            show_note(
                f"{self.spec.key!r} changed what cannot be set again here: " + "; ".join(problems),
                self.shell,
            )
        manifest = self.decision.manifest
        if manifest is not None:  # inside a running step, what this one read counts for it
            ReadRecorder.inherit([*manifest.files, *manifest.deps])
        if self.spec.kind == "cell" and manifest is not None:
            self._bound(payload.variables, manifest)
        if not self.quiet:
            show_note(restored_note(self.decision), self.shell)
        return replay(payload, self.shell)

    def start(self, statements: Iterable[ast.stmt]) -> None:
        """The body (``statements``) is about to run: note what it may bind or change,
        remember the namespace, record what it shows."""
        statements = list(statements)
        self._targets = assigned_names(statements)
        self._before = snapshot(self.namespace)
        reached = reach(self.spec.reads, self.namespace)
        self._reached = digests(reached.data, self.namespace)
        self._definitions = definition_digests(reached.definitions, self.namespace)
        imported = imported_modules(statements)
        self._fresh = {m for m in imported if m not in sys.modules}  # first imported here
        self._modules = module_digests(reached.modules | imported, self.engine.own_module)
        self._process = process.snapshot()
        self._settings = process.state_digest(process.SETTINGS)  # what its output may follow
        self._seeds = _calls_seed(statements)
        self._statements = statements
        self._shown_bundle: dict[str, Any] | None = None  # the last value as shown
        self._recorder = OutputRecorder(self.shell).__enter__()
        self._reads = ReadRecorder(ignore=[get_session().store.directory]).__enter__()
        self._run = self.engine.begin(self.decision)

    def show_result(self, result: Any) -> bool:
        """Show the body's last value now, as ``Out[n]`` (True if shown).

        IPython shows a cell's value before the figures its inline backend draws
        at the end of the cell; the step records its place among the outputs, so
        a replay keeps that order.
        """
        hook = getattr(self.shell, "displayhook", None)
        if result is NOTHING or result is None or hook is None:
            return False
        self._recorder.outputs.append({"type": "result"})
        compute = getattr(hook, "compute_format_data", None)
        if compute is None:
            with self._recorder.paused():
                hook(result)
            return True

        def keep(value: Any) -> Any:  # what it showed is what a replay shows: no second repr
            data = compute(value)
            if value is result and isinstance(data, tuple) and data:
                self._shown_bundle = data[0]
            return data

        had = "compute_format_data" in vars(hook)
        hook.compute_format_data = keep
        try:
            with self._recorder.paused():
                hook(result)
        finally:
            if had:
                hook.compute_format_data = compute
            else:
                del hook.compute_format_data
        return True

    def end(
        self, error: BaseException | None, *, result: Any = NOTHING, exclude: Iterable[str] = ()
    ) -> None:
        """The body finished (``error`` if it raised): save it, or report the failure.

        ``result`` is the value of the body's last expression, if it has one.

        Raises:
            AwaitlyError: ``outputs=`` names a variable the body did not set.
        """
        run, self._run = self._run, None
        assert run is not None, "end() without start()"
        try:
            if error is None:
                flush_inline_figures()
        finally:
            self._reads.__exit__()
            self._recorder.__exit__(type(error) if error else None, error, None)
        if error is not None:
            self.engine.fail(run, error)
            return
        hidden = getattr(self.shell, "user_ns_hidden", None)
        if getattr(self.shell, "user_ns", None) is not self.namespace:
            hidden = None
        excluded = self.exclude | set(exclude)
        names, deleted, optional = produced(
            self._before,
            self.namespace,
            self._targets,
            hidden=hidden,
            outputs=self.outputs,
            exclude=excluded,
        )
        untouched = set(self._untouched(optional & set(self._targets.receivers)))
        names = [n for n in names if n not in untouched]
        optional -= untouched
        if self.outputs is None:  # changed by the functions it called: outputs too
            known = {*names, *deleted, *untouched, *excluded}  # each input is hashed once
            changed = changed_since(self._reached, self.namespace, known) | changed_inputs(
                self.engine, self.decision, self.namespace, known
            )
            names = sorted({*names, *changed})
            optional |= changed
            # Variables sharing objects with the outputs come along, so they stay shared.
            shared = co_variables({n: self.namespace[n] for n in names}, self.namespace, hidden)
            shared -= excluded
            names = sorted({*names, *shared})
            optional |= shared
        variables = {n: self.namespace[n] for n in names}
        changed_state = process.changes(self._process, process.snapshot())
        # What the functions it called changed inside definitions and your modules.
        definitions = definition_changes(self._definitions, self.namespace)
        optional |= {f"{n}.{part}" for n, parts in definitions.items() for part in parts}
        fresh: dict[str, dict[str, tuple[int, str | None]]] = {
            m: {} for m in self._fresh if m in sys.modules and self.engine.own_module(m)
        }
        modules = module_changes({**self._modules, **fresh})  # a fresh one: all its data
        stores = module_stores(self._statements, self.namespace)  # helpers.CONN = ...
        # one its functions changed that cannot be saved (a lock made at import) is left
        # out, not an error; one the step's own code set must be saved
        optional |= {
            f"{m}.{a}"
            for m, values in modules.items()
            for a in values
            if a not in stores.get(m, {})
        }
        for module, values in stores.items():
            modules.setdefault(module, {}).update(values)
        # `from helpers import CACHE`: the notebook's name for it stays the same object
        set_there = [v for values in modules.values() for v in values.values()]
        aliases = bound_to(set_there, self.namespace)
        variables.update((n, self.namespace[n]) for n in aliases if n not in variables)
        optional |= aliases
        payload = StepPayload(
            variables=variables,
            deleted=tuple(deleted),
            outputs=tuple(self._recorder.outputs),
            process=changed_state,
            modules=modules,
            definitions=definitions,
            **self._result_fields(result, variables),
        )
        implied = state_inputs(
            self._process, changed_state, seeds=self._seeds, namespace=self.namespace
        )
        if self._settings is not None:
            implied[process.INPUT_PREFIX + process.SETTINGS] = self._settings
        token = MAIN_BY_REFERENCE.set(self._by_reference())
        try:
            manifest = self.engine.finish(
                run,
                payload,
                optional=optional,
                hint=self.hint,
                files=self._reads.files(),
                written=self._reads.written,
                inputs=implied,
                extra=self._cell_extra(),
            )
        finally:
            MAIN_BY_REFERENCE.reset(token)
        if self.spec.kind == "cell" and manifest is not None:
            self._bound(manifest.variables, manifest)
            self._forget_superseded(manifest)

    def _by_reference(self) -> Callable[[Any], str | None] | None:
        """Which of the notebook's classes and functions to save by name: those defined
        outside this step and bound under their name, so a restore brings back
        instances of the live class (``isinstance``, ``==``, Enum identity hold)."""
        main = sys.modules.get("__main__")
        if main is None or vars(main) is not self.namespace:
            return None
        defined = set(self._targets.bound)

        def by_reference(obj: Any) -> str | None:
            qualname = getattr(obj, "__qualname__", "")
            if getattr(obj, "__module__", None) != "__main__" or "<" in qualname:
                return None
            if qualname.split(".")[0] in defined:
                return None  # the step defines it: saved with the step
            try:
                return qualname if main_global(qualname) is obj else None
            except Exception:
                return None

        return by_reference

    def _cell_extra(self) -> dict[str, Any]:
        cell = get_session().current_cell if self.spec.kind == "cell" else None
        return {"cell": cell} if cell else {}

    def _forget_superseded(self, manifest: Any) -> None:
        """A cell without a key saves under its code: when the code changes, the entry
        its old code saved (same cell id) is no longer listed as complete."""
        cell = manifest.extra.get("cell")
        if not cell or not manifest.key.startswith("cell:"):
            return
        for old in self.engine.steps():
            if (
                old.key != manifest.key
                and old.key.startswith("cell:")
                and old.extra.get("cell") == cell
            ):
                self.engine.forget(old.key)
                self.engine.tracker.drop(manifest.workflow, old.key)

    def _untouched(self, receivers: Iterable[str]) -> list[str]:
        """Objects the body only called methods on and left as they were: not outputs.

        A module (``np.sum(x)``) never is; an input compared by value is not
        when its fingerprint is the same as before the body ran (``a.count(1)``),
        so restoring the step does not put a copy in its place.
        """
        decision = self.decision
        return [
            name
            for name in sorted(receivers)
            if isinstance(self.namespace[name], types.ModuleType)
            or self.engine.unchanged(decision, name, self.namespace[name])
        ]

    def _bound(self, names: Iterable[str], manifest: Any) -> None:
        """The variables ``names`` hold exactly what ``manifest``'s step saved."""
        origin = f"{manifest.workflow}/{manifest.key}@{manifest.saved_at:.6f}"
        values = {n: self.namespace[n] for n in names if n in self.namespace}
        self.engine.memo.bound(values, origin=origin)

    def _result_fields(self, result: Any, variables: dict[str, Any]) -> dict[str, Any]:
        """What the last expression showed (its MIME bundle, replayed as it was), and
        its value if it can be saved (``Out[n]`` and ``_`` hold it after a replay)."""
        if result is NOTHING or result is None:
            return {}
        fields: dict[str, Any] = {}
        formatter = getattr(self.shell, "display_formatter", None)
        bundle = self._shown_bundle
        if bundle is None and formatter is not None:
            try:
                bundle, _ = formatter.format(result)
            except Exception:  # a repr that raises: IPython shows the error when it displays
                bundle = None
        if bundle is not None:
            if bundle and WIDGET_MIME in bundle:  # its model is gone after a restart
                text = str(bundle.get("text/plain", type(result).__name__))
                bundle = {"text/plain": f"{text}\n{LIVE_WIDGET_HINT}"}
                fields["result_bundle"] = bundle
                return fields
            if bundle:
                fields["result_bundle"] = bundle
        if any(v is result for v in variables.values()) or not unsaveable({"result": result}):
            fields["result"] = result
        return fields
