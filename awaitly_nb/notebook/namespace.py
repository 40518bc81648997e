"""Which variables a cell produced: its syntax tree plus a namespace diff.

The diff finds names that were created or rebound; the tree also finds
objects changed in place (``rows.append(x)``, ``df["a"] = 1``, ``n += 1`` on a
list, ``obj.attr = v``) and names bound to the same object again (a repeated
``import``), which a diff of identities cannot see.
"""

from __future__ import annotations

import ast
import contextlib
import gc
import os
import re
import sys
import types
from collections.abc import Callable, Iterable, Iterator, Mapping

from awaitly_nb.core.digest import value_digest
from awaitly_nb.core.fingerprint import global_names
from awaitly_nb.core.sharing import ATOMS, SHARED, memory_of, shared_objects, sharing_with
from awaitly_nb.errors import AwaitlyError
from awaitly_nb.files import module_origin

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NamedTuple
else:
    from awaitly_nb._namedtuple import NamedTuple

__all__ = [
    "Targets",
    "assigned_names",
    "changed_names",
    "co_variables",
    "edited_holders",
    "input_names",
    "is_internal_name",
    "produced",
    "reached_globals",
    "read_names",
    "snapshot",
    "user_inputs",
]

_INTERNAL = re.compile(r"^(_|__|___|_i|_ii|_iii|_i\d+|_\d+|In|Out|_oh|_ih|_dh|_sh|_exit_code)$")


def is_internal_name(name: str) -> bool:
    """True for IPython's own history names (``_``, ``_i3``, ``Out``...) and dunders."""
    return bool(_INTERNAL.match(name)) or (name.startswith("__") and name.endswith("__"))


def _root_name(node: ast.AST) -> str | None:
    """``a`` for ``a``, ``a.b.c``, ``a[0].b``; None for anything else.

    A call breaks the chain: ``f().append(x)`` changes what ``f`` returned, not ``f``.
    """
    while True:
        if isinstance(node, ast.Name):
            return node.id
        if isinstance(node, (ast.Attribute, ast.Subscript, ast.Starred)):
            node = node.value
        else:
            return None


class _Finder(ast.NodeVisitor):
    """Collects module-level names that a block of statements binds or mutates."""

    def __init__(self) -> None:
        self.names: set[str] = set()
        self.receivers: set[str] = set()
        self.deleted: set[str] = set()
        self.handles: set[str] = set()

    def _target(self, node: ast.AST) -> None:
        if isinstance(node, (ast.Tuple, ast.List)):
            for elt in node.elts:
                self._target(elt)
            return
        name = _root_name(node)
        if name is not None:
            self.names.add(name)

    # Binding statements.
    def visit_Assign(self, node: ast.Assign) -> None:
        for target in node.targets:
            self._target(target)
        self.visit(node.value)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self._target(node.target)
        self.visit(node.value)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self._target(node.target)
            self.visit(node.value)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self._target(node.target)
        self.visit(node.value)

    def visit_For(self, node: ast.For | ast.AsyncFor) -> None:
        self._target(node.target)
        self.generic_visit(node)

    visit_AsyncFor = visit_For

    def visit_withitem(self, node: ast.withitem) -> None:
        if node.optional_vars is not None:
            self._target(node.optional_vars)
            if isinstance(node.optional_vars, ast.Name):
                self.handles.add(node.optional_vars.id)
        self.visit(node.context_expr)

    def visit_Import(self, node: ast.Import | ast.ImportFrom) -> None:
        for alias in node.names:
            if alias.name != "*":
                self.names.add(alias.asname or alias.name.split(".")[0])

    visit_ImportFrom = visit_Import

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        # `except E as e` unbinds e at the end of the handler: not an output.
        for stmt in node.body:
            self.visit(stmt)

    def visit_Delete(self, node: ast.Delete) -> None:
        for target in node.targets:
            if isinstance(target, ast.Name):
                self.deleted.add(target.id)
            else:
                self._target(target)

    def visit_Global(self, node: ast.Global) -> None:
        self.names.update(node.names)

    # Definitions bind their name; their bodies are another scope.
    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.names.add(node.name)
        for decorator in node.decorator_list:
            self.visit(decorator)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.names.add(node.name)
        for expr in (*node.decorator_list, *node.bases):
            self.visit(expr)
        # The body is another scope and does not run now: nothing it binds is an output.

    def visit_Lambda(self, node: ast.Lambda) -> None:
        return

    def _comprehension(self, node: ast.AST) -> None:
        # Comprehension targets are local; calls inside may still mutate.
        for child in ast.walk(node):
            if isinstance(child, ast.Call):
                self._call(child)
            elif isinstance(child, ast.NamedExpr):
                self._target(child.target)

    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _comprehension

    # Method calls: `rows.append(x)` changes `rows`.
    def _call(self, node: ast.Call) -> None:
        if isinstance(node.func, ast.Attribute):
            name = _root_name(node.func.value)
            if name is not None:
                self.receivers.add(name)

    def visit_Call(self, node: ast.Call) -> None:
        self._call(node)
        self.generic_visit(node)


class Targets(NamedTuple):
    """What a block of statements does to module-level names.

    ``bound``: assigned, augmented, stored into (``a[0] = 1``, ``a.b = 1``),
    imported, defined, loop and with targets. ``receivers``: objects whose
    methods it calls (``rows.append(x)``) — maybe changed in place. ``deleted``:
    names it deletes. ``handles``: ``with ... as name`` targets (a closed file).
    """

    bound: set[str]
    receivers: set[str]
    deleted: set[str]
    handles: frozenset[str] = frozenset()


def assigned_names(tree: ast.AST | Iterable[ast.stmt]) -> Targets:
    """The names a block binds or may change at its own level, and those it deletes.

    >>> tree = ast.parse("import numpy as np\\nrows.append(1)\\ncfg['a'] = 2\\nfor i in x: pass")
    >>> targets = assigned_names(tree)
    >>> sorted(targets.bound), sorted(targets.receivers)
    (['cfg', 'i', 'np'], ['rows'])
    """
    finder = _Finder()
    statements = tree.body if isinstance(tree, ast.Module) else tree
    for stmt in statements:  # type: ignore[union-attr]
        finder.visit(stmt)
    return Targets(
        finder.names, finder.receivers - finder.names, finder.deleted, frozenset(finder.handles)
    )


class _Reader(ast.NodeVisitor):
    """Names read from the block's own scope (the module), skipping the local names
    of the functions, lambdas and comprehensions inside it."""

    def __init__(self) -> None:
        self.names: set[str] = set()
        self.local: list[set[str]] = []

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load) and not any(node.id in s for s in self.local):
            self.names.add(node.id)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        # `n += 1` reads n before it binds it (its target is a Store, not a Load)
        target = node.target
        if isinstance(target, ast.Name) and not any(target.id in s for s in self.local):
            self.names.add(target.id)
        self.generic_visit(node)

    def _scope(self, local: set[str], nodes: Iterable[ast.AST]) -> None:
        self.local.append(local)
        for node in nodes:
            self.visit(node)
        self.local.pop()

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        # Decorators, defaults and annotations run here; the body runs in its own scope,
        # where parameters and the names it assigns are local (unless declared global).
        args = node.args
        outer: list[ast.AST] = [*args.defaults, *(d for d in args.kw_defaults if d is not None)]
        params = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
        outer += [a.annotation for a in params if a is not None and a.annotation is not None]
        body: list[ast.AST] = [node.body] if isinstance(node, ast.Lambda) else list(node.body)
        if not isinstance(node, ast.Lambda):
            outer += [*node.decorator_list, *([node.returns] if node.returns else [])]
        for child in outer:
            self.visit(child)
        declared = {
            name
            for child in body
            for sub in ast.walk(child)
            if isinstance(sub, (ast.Global, ast.Nonlocal))
            for name in sub.names
        }
        local = {a.arg for a in params if a is not None}
        local |= {
            sub.id
            for child in body
            for sub in ast.walk(child)
            if isinstance(sub, ast.Name) and isinstance(sub.ctx, (ast.Store, ast.Del))
        }
        self._scope(local - declared, body)

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def _comprehension(
        self, node: ast.ListComp | ast.SetComp | ast.DictComp | ast.GeneratorExp
    ) -> None:
        # The first iterable is evaluated outside; the loop variables are the
        # comprehension's own.
        generators = node.generators
        self.visit(generators[0].iter)
        local = {
            sub.id
            for gen in generators
            for sub in ast.walk(gen.target)
            if isinstance(sub, ast.Name)
        }
        inner: list[ast.AST] = [g.iter for g in generators[1:]]
        inner += [cond for g in generators for cond in g.ifs]
        inner += [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]
        self._scope(local, inner)

    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _comprehension


def read_names(statements: Iterable[ast.AST]) -> set[str]:
    """Every name a block reads (loads) from its own scope, at any depth.

    Parameters and local names of the functions and lambdas it defines, and
    comprehension variables, are not reads of the block.

    >>> sorted(read_names(ast.parse("y = f(x) + len(rows)").body))
    ['f', 'len', 'rows', 'x']
    >>> sorted(read_names(ast.parse("g = lambda q: q + k\\nsq = [j * j for j in xs]").body))
    ['k', 'xs']
    """
    reader = _Reader()
    for stmt in statements:
        reader.visit(stmt)
    return reader.names


def _bound_by(target: ast.AST | None) -> set[str]:
    finder = _Finder()
    if target is not None:
        finder._target(target)
    return finder.names


def _inputs(statements: Iterable[ast.stmt], bound: set[str]) -> set[str]:
    """Names read before ``bound`` holds them, statement by statement (``bound`` grows)."""
    inputs: set[str] = set()
    for stmt in statements:
        if isinstance(stmt, (ast.For, ast.AsyncFor)):
            # The loop variable is bound before the body reads it.
            inputs |= read_names([stmt.iter]) - bound
            inputs |= read_names([stmt.target]) - bound  # a[i] as a target reads a and i
            bound |= _bound_by(stmt.target)
            inputs |= _inputs([*stmt.body, *stmt.orelse], bound)
        elif isinstance(stmt, (ast.With, ast.AsyncWith)):
            for item in stmt.items:
                inputs |= read_names([item.context_expr]) - bound
                if item.optional_vars is not None:
                    inputs |= read_names([item.optional_vars]) - bound
                bound |= _bound_by(item.optional_vars)
            inputs |= _inputs(stmt.body, bound)
        else:
            inputs |= read_names([stmt]) - bound
        bound |= assigned_names([stmt]).bound
    return inputs


def input_names(statements: Iterable[ast.stmt]) -> set[str]:
    """Names a block reads before it binds them: its inputs (``df`` in ``df = df.dropna()``).

    >>> sorted(input_names(ast.parse("x = 1\\ny = x + z\\nrows.append(y)").body))
    ['rows', 'z']
    >>> sorted(input_names(ast.parse("for v in items:\\n    total = v").body))
    ['items']
    >>> sorted(input_names(ast.parse("n += 1\\nX *= 2").body))
    ['X', 'n']
    """
    return _inputs(statements, set())


_MAX_REACHED = 2000


def reached_globals(names: Iterable[str], namespace: Mapping[str, Any]) -> set[str]:
    r"""Data the notebook's functions (among ``names``) use as globals, transitively.

    A step that calls ``record("hi")`` where ``def record(m): log.append(m)``
    may change ``log`` without naming it. Functions, classes and modules are
    followed (their code), not returned.

    >>> ns = {"log": [], "n": 3}
    >>> exec("def record(m):\n    log.append(m)\ndef twice(m):\n    record(m); record(n)", ns)
    >>> sorted(reached_globals(["twice"], ns))
    ['log', 'n']
    """
    return reach(names, namespace).data


class Reach(NamedTuple):
    """What a step's code may reach through the functions it calls (:func:`reach`)."""

    data: set[str]
    """Variables the functions use (``log`` in ``log.append``)."""
    definitions: set[str]
    """The namespace's functions and classes among the names and those they use."""
    modules: set[str]
    """Modules they name (``helpers`` in ``helpers.fetch(3)``), or whose functions
    and classes they use (``from helpers import fetch``), by module name."""


def reach(names: Iterable[str], namespace: Mapping[str, Any]) -> Reach:
    r"""What ``names`` reach through the namespace's functions and classes, transitively.

    >>> import types
    >>> ns = {"__name__": "__main__", "log": [], "helpers": types.ModuleType("helpers")}
    >>> code = "def record(m):\n  log.append(helpers.tag(m))\nclass C:\n  def f(self): record(1)"
    >>> exec(code, ns)
    >>> [sorted(part) for part in reach(["C"], ns)]
    [['log'], ['C', 'record'], ['helpers']]
    """
    data: set[str] = set()
    definitions: set[str] = set()
    modules: set[str] = set()
    here = namespace.get("__name__", "__main__")
    seen: set[int] = set()
    todo = [(n, namespace[n]) for n in names if n in namespace]
    while todo and len(seen) < _MAX_REACHED:
        name, value = todo.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        codes: list[types.CodeType] = []
        if isinstance(value, types.FunctionType) and value.__globals__ is namespace:
            codes.append(value.__code__)
            definitions.add(name)
        elif isinstance(value, type) and value.__module__ == here:
            definitions.add(name)
            for member in vars(value).values():
                target = getattr(member, "__func__", member)
                if isinstance(target, types.FunctionType) and target.__globals__ is namespace:
                    codes.append(target.__code__)
        elif isinstance(value, types.ModuleType):
            modules.add(value.__name__)
        elif isinstance(value, (types.FunctionType, type)):
            modules.add(str(getattr(value, "__module__", None) or ""))
        for code in codes:
            for used in global_names(code):
                if used not in namespace or is_internal_name(used):
                    continue
                item = namespace[used]
                if isinstance(item, (types.FunctionType, type, types.ModuleType)):
                    todo.append((used, item))
                elif not isinstance(item, types.BuiltinFunctionType):
                    data.add(used)
    modules -= {"", "builtins"}
    return Reach(data, definitions, modules)


def definition_state(value: Any) -> dict[str, Any]:
    """What a notebook function or class holds besides its code, by part: a function's
    ``__defaults__`` and ``__kwdefaults__`` (a memo default), its attributes
    (``__dict__.n``: a counter) and closure cells (``__closure__.0``); a class's data
    attributes (``total``). A step that calls it may change them in place.

    >>> def tick(_seen=[]):
    ...     tick.n = getattr(tick, "n", 0) + 1
    >>> tick(); sorted(definition_state(tick).items())
    [('__defaults__', ([],)), ('__dict__.n', 1), ('__kwdefaults__', None)]
    """
    parts: dict[str, Any] = {}
    if isinstance(value, types.FunctionType):
        parts["__defaults__"] = value.__defaults__
        parts["__kwdefaults__"] = value.__kwdefaults__
        parts.update((f"__dict__.{k}", v) for k, v in vars(value).items())
        for i, cell in enumerate(value.__closure__ or ()):
            with contextlib.suppress(ValueError):  # a cell not filled yet
                parts[f"__closure__.{i}"] = cell.cell_contents
    elif isinstance(value, type):
        parts.update(
            (k, v)
            for k, v in vars(value).items()
            if not k.startswith("__") and not hasattr(type(v), "__get__")  # data, not methods
        )
    return parts


def definition_digests(
    names: Iterable[str], namespace: Mapping[str, Any]
) -> dict[str, tuple[int, dict[str, str | None]]]:
    """Identity and the digest of each part of :func:`definition_state` of each of
    ``names`` (before user code runs: :func:`definition_changes` tells what it changed)."""
    out = {}
    for name in names:
        value = namespace.get(name)
        parts = definition_state(value)
        if parts:
            out[name] = (id(value), {p: value_digest(v, namespace) for p, v in parts.items()})
    return out


def definition_changes(
    before: Mapping[str, tuple[int, Mapping[str, str | None]]], namespace: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """The parts of the definitions of :func:`definition_digests` that changed, by name
    (a definition rebound or deleted since is the namespace diff's: left out)."""
    changed: dict[str, dict[str, Any]] = {}
    for name, (identity, digests) in before.items():
        value = namespace.get(name)
        if value is None or id(value) != identity:
            continue
        for part, item in definition_state(value).items():
            was = digests.get(part, "")
            now = value_digest(item, namespace)
            if was is None or now is None or now == was:
                continue  # unchanged, or not fingerprinted (then not known to have changed)
            changed.setdefault(name, {})[part] = item
    return changed


_MODULE_DATA_MAX = 100_000
"""A module's list, dict or set longer than this is not fingerprinted before and
after each step (a big table a helper module builds at import)."""


def _module_data(name: str, value: Any) -> bool:
    if name.startswith("__") or isinstance(
        value, (types.ModuleType, types.FunctionType, type, types.BuiltinFunctionType)
    ):
        return False
    return not (isinstance(value, (list, dict, set)) and len(value) > _MODULE_DATA_MAX)


def imported_modules(statements: Iterable[ast.stmt]) -> set[str]:
    r"""The modules the code imports (``from helpers import fetch``: ``helpers``, and
    ``helpers.fetch`` in case it is a submodule).

    >>> sorted(imported_modules(ast.parse("import a.b\nfrom c import d").body))
    ['a', 'a.b', 'c', 'c.d']
    """
    found: set[str] = set()
    for statement in statements:
        for node in ast.walk(statement):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    parts = alias.name.split(".")
                    found.update(".".join(parts[: i + 1]) for i in range(len(parts)))
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def module_digests(
    names: Iterable[str], own: Callable[[str], bool]
) -> dict[str, dict[str, tuple[int, str | None]]]:
    """Identity and digest of the data of each of your own modules among ``names``
    (``helpers.CACHE``), before user code runs: :func:`module_changes` tells what a
    function of the module changed (filled a cache, appended to a registry)."""
    out = {}
    for name in sorted(names):
        module = sys.modules.get(name)
        if module is None or not own(name):
            continue
        data = vars(module)
        out[name] = {
            attr: (id(value), value_digest(value, data))
            for attr, value in list(data.items())
            if _module_data(attr, value)
        }
    return out


def module_changes(
    before: Mapping[str, Mapping[str, tuple[int, str | None]]],
) -> dict[str, dict[str, Any]]:
    """The data of the modules of :func:`module_digests` set, rebound or changed in
    place since, as ``{"helpers": {"CACHE": {3: 6}}}``."""
    changed: dict[str, dict[str, Any]] = {}
    for name, attrs in before.items():
        module = sys.modules.get(name)
        if module is None:
            continue
        data = vars(module)
        for attr, value in list(data.items()):
            if not _module_data(attr, value):
                continue
            was = attrs.get(attr)
            same = was is not None and id(value) == was[0]
            if same and (was[1] is None or value_digest(value, data) == was[1]):  # type: ignore[index]
                continue  # the same object, unchanged (or not fingerprinted)
            changed.setdefault(name, {})[attr] = value
    return changed


_ATOMS = ATOMS
_MAX_OBJECTS = 100_000


def _reachable(roots: Iterable[Any], limit: int = _MAX_OBJECTS) -> set[int]:
    """Ids of the objects reachable from ``roots`` (atoms and definitions left out)."""
    seen: set[int] = set()
    todo = [r for r in roots if not isinstance(r, _ATOMS)]
    while todo and len(seen) < limit:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        todo.extend(r for r in gc.get_referents(obj) if not isinstance(r, _ATOMS))
    return seen


def co_variables(
    outputs: Mapping[str, Any],
    namespace: Mapping[str, Any],
    hidden: Mapping[str, Any] | None = None,
) -> set[str]:
    """Other variables that share objects with a step's outputs, so they are saved
    (and restored) with them and stay shared: ``fig`` when ``ax`` is an output
    (``ax.figure``), ``alias`` when it is ``df``, ``pipe`` when ``clf`` in it is.

    For a numpy array among the outputs, the other arrays viewing its memory come
    along: ``data`` when the step made ``train = data[:7]`` (a replay keeps
    ``train`` a view of it) or changed ``train`` in place (``data`` changed too).

    >>> class Fig: pass
    >>> class Ax:
    ...     def __init__(self, fig): self.figure = fig
    >>> fig = Fig(); ns = {"fig": fig, "ax": Ax(fig), "n": 3, "other": Fig()}
    >>> sorted(co_variables({"ax": ns["ax"]}, ns))
    ['fig']
    >>> import numpy as np
    >>> data = np.arange(10.0); ns = {"data": data, "train": data[:7], "test": data[7:]}
    >>> sorted(co_variables({"train": ns["train"]}, ns))
    ['data', 'test']
    """
    if all(isinstance(v, _ATOMS) for v in outputs.values()):
        return set()
    inside: dict[str, set[int]] = {}  # what each other variable holds
    rest = []  # past the budget: found only when an output holds or views them
    budget = _MAX_OBJECTS * 3  # a notebook of big pure-Python structures is searched in part
    for name, value in namespace.items():
        if name in outputs or is_internal_name(name) or isinstance(value, _ATOMS):
            continue
        if hidden and name in hidden and hidden[name] is value:
            continue
        if budget > 0:
            inside[name] = _reachable([value], limit=min(budget, _MAX_OBJECTS))
            budget -= len(inside[name])
        else:
            rest.append(name)
    found = _linked(outputs, namespace, inside)
    if rest:
        below = _reachable(outputs.values())
        memory = {m for v in outputs.values() if (m := memory_of(v)) is not None}
        found |= {n for n in rest if id(namespace[n]) in below or memory_of(namespace[n]) in memory}
    return found


def _linked(
    values: Mapping[str, Any], namespace: Mapping[str, Any], inside: Mapping[str, set[int]]
) -> set[str]:
    """Those of ``inside``'s variables (with the ids of what each holds) linked to
    ``values``: holding what their lists, dicts and arrays hold (``parts`` for ``sel =
    [parts["p3"]]``), viewing their arrays' memory (``data`` for ``train =
    data[:7]``), held by one of them or holding one, and so on through one another
    (``b = {"ref": a}`` for ``c = [a, a]``; ``GRID`` inside ``grid`` holding ``pipe``)."""
    roots = {id(v) for v in values.values() if not isinstance(v, _ATOMS)}
    below = _reachable(values.values())
    memory = {m for v in values.values() if (m := memory_of(v)) is not None}
    linked: set[str] = set()

    def join(name: str) -> None:
        linked.add(name)
        roots.add(id(namespace[name]))
        below.update(inside[name])

    for name in sharing_with(values, namespace, list(inside)):
        join(name)
    grown = True
    while grown:
        grown = False
        for name, held in inside.items():
            value = namespace[name]
            if name not in linked and (
                id(value) in below or roots & held or memory_of(value) in memory
            ):
                join(name)
                grown = True
    return linked


def apart(
    carried: Iterable[str], inputs: Mapping[str, Any], namespace: Mapping[str, Any]
) -> list[str]:
    """Those of ``carried`` (variables a saved step holds because they shared objects
    with what it changed: ``clf`` inside ``pipe``) that share none with ``inputs``
    now: a replay would bind them to the saved objects, undoing an edit that
    separated them (``pipe`` made with a new estimator).

    >>> rows = []; holder = {"rows": rows}
    >>> apart(["holder", "other"], {"rows": rows}, {"holder": holder, "other": {"x": []}})
    ['other']
    >>> grid = {"estimator": rows, "params": {"C": [1]}}; ns = {"grid": grid, "p": grid["params"]}
    >>> apart(["grid", "p"], {"rows": rows}, ns)  # p through grid
    []
    """
    names = [n for n in carried if n in namespace and not isinstance(namespace[n], _ATOMS)]
    if not names:
        return []
    linked = _linked(inputs, namespace, {n: _reachable([namespace[n]]) for n in names})
    return [n for n in names if n not in linked]


def edited_holders(
    carried: Iterable[str], saved: Mapping[str, Any], namespace: Mapping[str, Any]
) -> list[str]:
    """Those of ``carried`` (variables a saved step holds because they share objects
    with its variables) whose own contents differ now from the saved ones: the
    cell that made them was edited (``config = {"model": model, "lr": 0.2}``, saved
    with ``lr`` 0.1). What they share with the step's variables is left out of the
    comparison, as are arrays (they view the memory the step changed).

    >>> a = [1]; old = {"ref": a, "lr": 0.1}
    >>> now = {"a": [1], "config": {"ref": None, "lr": 0.2}}; now["config"]["ref"] = now["a"]
    >>> edited_holders(["config"], {"a": a, "config": old}, now)
    ['config']
    >>> now["config"]["lr"] = 0.1
    >>> edited_holders(["config"], {"a": a, "config": old}, now)
    []
    """
    held = set(carried)
    names = [
        n
        for n in sorted(held)
        if n in namespace
        and n in saved
        and not isinstance(namespace[n], _ATOMS)
        and memory_of(namespace[n]) is None
    ]
    if not names:
        return []
    then = frozenset(_reachable([v for n, v in saved.items() if n not in held]))
    now = frozenset(_reachable([namespace[n] for n in saved if n not in held and n in namespace]))
    edited = []
    for name in names:
        before = value_digest(saved[name], namespace, shared=then)
        after = value_digest(namespace[name], namespace, shared=now)
        if before is not None and after is not None and before != after:
            edited.append(name)
    return edited


def user_inputs(
    names: Iterable[str], namespace: Mapping[str, Any], hidden: Mapping[str, Any] | None = None
) -> set[str]:
    """The names that are the user's inputs: not IPython's history names, not the shell's own.

    >>> sorted(user_inputs(["t", "_", "Out", "get_ipython"], {}, {"get_ipython": None}))
    ['t']
    """
    hidden = hidden or {}
    return {
        n
        for n in names
        if not is_internal_name(n) and not (n in hidden and hidden[n] is namespace.get(n))
    }


def module_reads(
    statements: Iterable[ast.stmt],
    reads: Iterable[str],
    namespace: Mapping[str, Any],
    own: Callable[[str], bool],
) -> dict[str, Any]:
    """The attributes a step reads from the user's own modules among its inputs, as
    inputs of their own: ``{"helpers.SCALE": 2}``. A cell may set them
    (``helpers.SCALE = 2``), and the module's version only follows its source.

    >>> import types
    >>> helpers = types.ModuleType("helpers")
    >>> helpers.SCALE = 2
    >>> module_reads(ast.parse("y = helpers.SCALE * x").body, ["helpers", "x"],
    ...              {"helpers": helpers, "x": 1}, own=lambda name: True)
    {'helpers.SCALE': 2}
    """
    modules = {
        name: module
        for name in reads
        if isinstance(module := namespace.get(name), types.ModuleType) and own(module.__name__)
    }
    return {
        f"{name}.{attr}": value
        for name, _, attr, value in _module_attributes(statements, ast.Load, modules)
    }


_ABSENT = object()


def module_stores(
    statements: Iterable[ast.stmt], namespace: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """The module attributes a step set (``helpers.SCALE = 5``), as they are now:
    ``{"helpers": {"SCALE": 5}}``. Saving the module itself would keep only its name.

    >>> import types
    >>> helpers = types.ModuleType("helpers")
    >>> helpers.SCALE = 5
    >>> module_stores(ast.parse("helpers.SCALE = 5").body, {"helpers": helpers})
    {'helpers': {'SCALE': 5}}
    """
    modules = {n: m for n, m in namespace.items() if isinstance(m, types.ModuleType)}
    found: dict[str, dict[str, Any]] = {}
    for _, module, attr, value in _module_attributes(statements, ast.Store, modules):
        found.setdefault(module.__name__, {})[attr] = value
    return found


def _module_attributes(
    statements: Iterable[ast.stmt], context: type[ast.expr_context], modules: Mapping[str, Any]
) -> Iterator[tuple[str, Any, str, Any]]:
    """``(name, module, attribute, value)`` for each ``name.attribute`` the code reads
    (``ast.Load``) or sets (``ast.Store``) where ``name`` is one of ``modules``; the
    value as the module holds it now (its own dict: no module ``__getattr__`` runs)."""
    if not modules:
        return
    for statement in statements:
        for node in ast.walk(statement):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.ctx, context)
                and isinstance(node.value, ast.Name)
                and node.value.id in modules
            ):
                module = modules[node.value.id]
                value = vars(module).get(node.attr, _ABSENT)
                if value is not _ABSENT:
                    yield node.value.id, module, node.attr, value


_SHELL_CALLS = {"system", "getoutput", "run_cell_magic", "run_line_magic"}
_EXPANDED = re.compile(r"\{([A-Za-z_]\w*)|\$([A-Za-z_]\w*)")


def shell_names(statements: Iterable[ast.stmt]) -> set[str]:
    r"""The variables a shell command or magic expands (``!head -n 2 {path}``, ``$path``):
    IPython fills them in at run time, so the code does not name them.

    >>> sorted(shell_names(ast.parse("get_ipython().system('head -n 2 {path} $out')").body))
    ['out', 'path']
    """
    found: set[str] = set()
    for statement in statements:
        for node in ast.walk(statement):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in _SHELL_CALLS
            ):
                for arg in node.args:
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                        found.update(a or b for a, b in _EXPANDED.findall(arg.value))
    return found


_ENV_READS = {"get", "setdefault"}


def _is_environ(node: ast.AST | None) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "environ") or (
        isinstance(node, ast.Name) and node.id == "environ"
    )


def _text(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def environ_names(statements: Iterable[ast.stmt]) -> set[str]:
    """The environment variables the code reads by name: ``os.environ["X"]``,
    ``os.environ.get("X")``, ``os.getenv("X")``, ``"X" in os.environ``.

    >>> code = "a = os.environ['A']; b = os.getenv('B', '1'); c = 'C' in environ"
    >>> sorted(environ_names(ast.parse(code + "; os.environ['D'] = a").body))
    ['A', 'B', 'C']
    """
    found: set[str] = set()
    for statement in statements:
        for node in ast.walk(statement):
            name = None
            if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
                name = _text(node.slice) if _is_environ(node.value) else None
            elif isinstance(node, ast.Call) and node.args:
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if called == "getenv" or (
                    called in _ENV_READS and _is_environ(getattr(func, "value", None))
                ):
                    name = _text(node.args[0])
            elif isinstance(node, ast.Compare) and any(_is_environ(c) for c in node.comparators):
                name = _text(node.left)
            if name is not None:
                found.add(name)
    return found


def step_inputs(
    statements: Iterable[ast.stmt],
    namespace: Mapping[str, Any],
    hidden: Mapping[str, Any] | None,
    own: Callable[[str], bool],
) -> tuple[frozenset[str], Mapping[str, Any]]:
    """A cell's or block's inputs: the names it reads, and where their values are (the
    namespace, with the attributes it reads from the user's modules: :func:`module_reads`)."""
    statements = list(statements)
    reads = user_inputs(input_names(statements) | shell_names(statements), namespace, hidden)
    extra = dict(module_reads(statements, reads, namespace, own))
    for module in sorted({m.split(".")[0] for m in imported_modules(statements)}):
        origin = module_origin(module)  # which copy `import` finds: sys.path may change
        if origin is not None:
            extra[f"import {module}"] = origin
    for name in sorted(environ_names(statements)):  # set by the kernel's environment or a cell
        extra[f"os.environ[{name!r}]"] = os.environ.get(name)
    shared = shared_objects(  # one object under two names is not two equal values
        {n: namespace[n] for n in reads if n in namespace},
        namespace,
        lambda n: is_internal_name(n) or bool(hidden and n in hidden and hidden[n] is namespace[n]),
    )
    if shared is not None:
        extra[SHARED] = shared
    if not extra:
        return frozenset(reads), namespace
    return frozenset(reads | extra.keys()), {**namespace, **extra}


def snapshot(namespace: Mapping[str, Any]) -> dict[str, int]:
    """Identities of the namespace's user variables, to diff after the cell ran."""
    return {k: id(v) for k, v in namespace.items() if not is_internal_name(k)}


def changed_names(
    before: Mapping[str, int],
    namespace: Mapping[str, Any],
    candidates: Iterable[str] = (),
    hidden: Mapping[str, Any] | None = None,
) -> tuple[list[str], list[str]]:
    """Variables the cell produced (new, rebound, or named by ``candidates``) and those it deleted.

    ``hidden`` holds names the shell itself defines; they are not outputs.

    >>> ns = {"a": 1, "rows": []}
    >>> before = snapshot(ns)
    >>> ns["b"] = 2; ns["rows"].append(1); del ns["a"]
    >>> changed_names(before, ns, candidates={"rows"})
    (['b', 'rows'], ['a'])
    """
    produced = {
        name
        for name, value in namespace.items()
        if not is_internal_name(name) and before.get(name) != id(value)
    }
    produced.update(n for n in candidates if n in namespace and not is_internal_name(n))
    if hidden:  # the shell's own names (get_ipython, exit, ...) unless the cell rebound them
        produced = {n for n in produced if n not in hidden or hidden[n] is not namespace[n]}
    deleted = [name for name in before if name not in namespace]
    return sorted(produced), sorted(deleted)


def produced(
    before: Mapping[str, int],
    namespace: Mapping[str, Any],
    targets: Targets,
    *,
    hidden: Mapping[str, Any] | None = None,
    outputs: list[str] | None = None,
    exclude: Iterable[str] = (),
) -> tuple[list[str], list[str], set[str]]:
    """The variables to save, those the step deleted, and which of them are optional.

    Optional ones are objects whose methods the step called but that it did not
    rebind: they may have changed in place (``rows.append(x)``), or not
    (``conn.execute(q)``); and ``with ... as f`` targets closed at the end of the
    block. One that cannot be saved is left out, not an error.

    Raises:
        AwaitlyError: ``outputs`` names a variable the step did not set.
    """
    if outputs is not None:
        missing = [n for n in outputs if n not in namespace]
        if missing:
            raise AwaitlyError(
                f"outputs= names variables that do not exist after the step: {', '.join(missing)}; "
                "nothing was saved"
            )
        return list(outputs), [], set()
    names, deleted = changed_names(before, namespace, targets.bound | targets.receivers, hidden)
    skip = set(exclude)
    names = [n for n in names if n not in skip]
    optional = {n for n in names if n in targets.receivers and before.get(n) == id(namespace[n])}
    optional |= {n for n in names if n in targets.handles and _finished(namespace[n])}
    return names, deleted, optional


def _finished(value: Any) -> bool:
    """Whether a ``with ... as`` target says it cannot be used any more: a closed file,
    archive or socket, a shut-down executor. One still open after the block (a
    sqlite3 connection: its ``with`` ends a transaction) is a variable like any other.

    >>> import io, sqlite3
    >>> with io.StringIO() as f:
    ...     pass
    >>> with sqlite3.connect(":memory:") as con:
    ...     pass
    >>> _finished(f), _finished(con)
    (True, False)
    """
    try:
        return (
            getattr(value, "closed", None) is True
            or (hasattr(value, "fp") and value.fp is None)  # zipfile.ZipFile
            or getattr(value, "_shutdown", None) is True  # concurrent.futures executors
        )
    except Exception:
        return False
