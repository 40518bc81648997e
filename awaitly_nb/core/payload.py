"""What a step saves: its variables and outputs (cells, blocks) or its value (calls).

:class:`StepPayload` is the typed, in-memory form. It is stored as a plain
dict (:meth:`StepPayload.to_saved`), so saved steps never depend on where this
class lives; :meth:`StepPayload.from_saved` reads that dict back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from awaitly_nb.errors import StateFormatError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final

__all__ = ["NOTHING", "StepPayload"]


class _Nothing:
    """The type of :data:`NOTHING`."""

    _instance: _Nothing | None = None

    def __new__(cls) -> _Nothing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NOTHING"

    def __bool__(self) -> bool:
        return False


NOTHING: Final = _Nothing()
"""No value: a step without a last expression, or a cell step (not a call). ``None`` is a value."""


@dataclass(frozen=True)
class StepPayload:
    """A finished step's results.

    Attributes:
        variables: the variables a cell or block saves, by name.
        deleted: the variables it deleted.
        outputs: what it showed, in order (stream and display records).
        result: the last expression's value, if it had one and it can be saved.
        result_bundle: the last expression's MIME bundle as it was shown (a
            replay shows it again, whether or not the value could be saved).
        value: what a call-form step returned (its ``variables``: the globals it
            changed in place).
        skipped: optional variables left out because they cannot be saved.
        process: the process-wide state it changed (:mod:`awaitly_nb.core.process`),
            re-applied when it replays.
        modules: the module attributes it set (``helpers.SCALE = 5``), by module
            name: ``{"helpers": {"SCALE": 5}}``, set again when it replays; for a
            call-form step, the caller's variables it changed in place when the
            caller is another module than the function's (``{"__main__": {"clf": clf}}``).
        definitions: what it changed inside the notebook's functions and classes
            without rebinding them (a memo default, a counter attribute, a class
            attribute), by name and part (:func:`~awaitly_nb.notebook.namespace.definition_state`):
            ``{"Counter": {"total": 5}}``, set again when it replays.
    """

    variables: Mapping[str, Any] = field(default_factory=dict)
    deleted: tuple[str, ...] = ()
    outputs: tuple[dict[str, Any], ...] = ()
    result: Any = NOTHING
    result_bundle: dict[str, Any] | None = None
    value: Any = NOTHING
    skipped: tuple[str, ...] = ()
    process: Mapping[str, Any] = field(default_factory=dict)
    modules: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    definitions: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def has_result(self) -> bool:
        """True if the step ended with an expression whose value or display was saved."""
        return self.result is not NOTHING or self.result_bundle is not None

    def saved_values(self) -> dict[str, Any]:
        """What must be serialisable: the variables and module attributes (``helpers.SCALE``),
        or ``{"value": ...}`` for a call."""
        parts = {f"{n}.{p}": v for n, values in self.definitions.items() for p, v in values.items()}
        if self.value is not NOTHING:
            return {**self.variables, **parts, "value": self.value}
        attributes = {
            f"{m}.{a}": v for m, values in self.modules.items() for a, v in values.items()
        }
        return {**self.variables, **attributes, **parts}

    def without(self, names: set[str]) -> StepPayload:
        """The payload with the variables ``names`` left out (and listed as skipped); a
        definition's part or a module attribute by ``name.part``."""
        kept = {n: v for n, v in self.variables.items() if n not in names}
        parts = {
            n: {p: v for p, v in values.items() if f"{n}.{p}" not in names}
            for n, values in self.definitions.items()
        }
        definitions = {n: values for n, values in parts.items() if values}
        attributes = {
            m: {a: v for a, v in values.items() if f"{m}.{a}" not in names}
            for m, values in self.modules.items()
        }
        modules = {m: values for m, values in attributes.items() if values}
        return replace(
            self,
            variables=kept,
            definitions=definitions,
            modules=modules,
            skipped=tuple(sorted(names)),
        )

    def to_saved(self) -> dict[str, Any]:
        """The dict that is serialised (the stored format)."""
        if self.value is not NOTHING:
            call: dict[str, Any] = {"value": self.value}
            if self.outputs:  # what the call printed or displayed
                call["outputs"] = [dict(o) for o in self.outputs]
            if self.process:  # the random generators it drew from, the variables it set
                call["process"] = dict(self.process)
            if self.variables:  # the globals it changed in place
                call["variables"] = dict(self.variables)
            if self.modules:  # the caller's variables it changed in place, by module
                call["modules"] = {name: dict(values) for name, values in self.modules.items()}
            if self.definitions:
                call["definitions"] = {n: dict(v) for n, v in self.definitions.items()}
            return call
        saved: dict[str, Any] = {
            "variables": dict(self.variables),
            "deleted": list(self.deleted),
            "outputs": [dict(o) for o in self.outputs],
        }
        if self.result is not NOTHING:
            saved.update(has_result=True, result=self.result, result_saved=True)
        elif self.result_bundle is not None:
            saved.update(has_result=True, result_saved=False)
        else:
            saved["has_result"] = False
        if self.result_bundle is not None:
            saved["result_bundle"] = self.result_bundle
        if self.skipped:
            saved["skipped"] = list(self.skipped)
        if self.process:
            saved["process"] = dict(self.process)
        if self.modules:
            saved["modules"] = {name: dict(values) for name, values in self.modules.items()}
        if self.definitions:
            saved["definitions"] = {n: dict(v) for n, v in self.definitions.items()}
        return saved

    @classmethod
    def from_saved(cls, saved: Any, *, call: bool) -> StepPayload:
        """Read what :meth:`to_saved` stored (``call``: a call-form step's value).

        Raises:
            StateFormatError: it is not the shape this kind of step saves.
        """
        if not isinstance(saved, dict):
            raise StateFormatError(f"the saved step is damaged: a {type(saved).__name__}")
        if call:
            if "value" not in saved:
                raise StateFormatError("the saved step holds no value")
            changed = saved.get("variables") or {}
            if not isinstance(changed, dict):
                raise StateFormatError("the saved step's variables are damaged")
            return cls(
                value=saved["value"],
                outputs=tuple(saved.get("outputs") or ()),
                process=_process(saved),
                variables=changed,
                modules=_modules(saved),
                definitions=_modules(saved, "definitions"),
            )
        variables = saved.get("variables")
        if not isinstance(variables, dict):
            raise StateFormatError("the saved step holds no variables")
        result: Any = NOTHING
        bundle = None
        if saved.get("has_result"):
            if saved.get("result_saved"):
                result = saved.get("result")
            if isinstance(saved.get("result_bundle"), dict):
                bundle = saved["result_bundle"]
        return cls(
            variables=variables,
            deleted=tuple(saved.get("deleted") or ()),
            outputs=tuple(saved.get("outputs") or ()),
            result=result,
            result_bundle=bundle,
            skipped=tuple(saved.get("skipped") or ()),
            process=_process(saved),
            modules=_modules(saved),
            definitions=_modules(saved, "definitions"),
        )


def _modules(saved: dict[str, Any], entry: str = "modules") -> Mapping[str, Mapping[str, Any]]:
    modules = saved.get(entry)
    if not isinstance(modules, dict):
        return {}
    return {
        name: values
        for name, values in modules.items()
        if isinstance(name, str) and isinstance(values, dict)
    }


def _process(saved: dict[str, Any]) -> Mapping[str, Any]:
    process = saved.get("process")
    return process if isinstance(process, dict) else {}
