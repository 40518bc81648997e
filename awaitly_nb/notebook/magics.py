"""The ``%%step`` and ``%steps`` magics: parse the line, call the engine, render."""

from __future__ import annotations

import ast
import difflib
import inspect
import re
import shlex
import sys
from collections.abc import MutableMapping
from dataclasses import dataclass
from types import CodeType
from typing import Any

from IPython.core.displayhook import DisplayHook
from IPython.core.error import UsageError
from IPython.core.magic import (
    Magics,
    cell_magic,
    line_magic,
    magics_class,
    no_var_expand,
)
from IPython.core.magic_arguments import argument, kwds, magic_arguments

from awaitly_nb.config import get_session
from awaitly_nb.core.engine import StepSpec
from awaitly_nb.core.fingerprint import code_fingerprint, parse
from awaitly_nb.core.payload import NOTHING
from awaitly_nb.errors import AwaitlyError, InvalidKeyError
from awaitly_nb.files import literal_paths, named_paths
from awaitly_nb.notebook.namespace import assigned_names, step_inputs
from awaitly_nb.notebook.running import NotebookStep
from awaitly_nb.notebook.status_table import status_text

__all__ = ["AwaitingStepCells", "StepMagics", "needs_await"]

_FORM = (
    "%%step [KEY | key=KEY] [outputs=a,b] [exclude=c] [deps=data/*.csv,config.yaml] "
    "[--force] [--pin] [--quiet]"
)
# One pass over the key: plain text, an escaped brace ({{ or }}), a {field}, or a stray brace.
_TOKEN = re.compile(r"(?P<text>[^{}]+)|(?P<escape>\{\{|\}\})|\{(?P<field>[^{}]*)\}|[{}]")


def _unknown(key: str, session: Any) -> str:
    """ "no saved step 'x'...", with the saved keys that look like it."""
    keys = [m.key for m in session.engine.steps()]
    close = difflib.get_close_matches(key, keys, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(k) for k in close)}?" if close else ""
    return f"no saved step {key!r} in workflow {session.workflow_id()!r}{hint}"


def _unquote(text: str) -> str:
    """``"user 1"`` or ``'user 1'`` → ``user 1`` (IPython keeps quotes in magic arguments).

    >>> _unquote('"user 1"'), _unquote("'a b'"), _unquote("plain")
    ('user 1', 'a b', 'plain')
    """
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


def _name_list(option: str, value: str) -> list[str]:
    names = [n.strip() for n in value.split(",")]
    if not value or not all(n.isidentifier() for n in names):
        raise UsageError(
            f"{option}= takes variable names separated by commas, e.g. {option}=df,model "
            f"(got {option}={value!r}). Usage: {_FORM}"
        )
    return names


def _statements(source: str) -> list[ast.stmt]:
    """The cell's statements (none if it is not plain Python: the run will say why)."""
    try:
        return parse(source).body
    except SyntaxError:
        return []


def _expand_key(template: str, namespace: dict[str, Any]) -> str:
    """Fill ``{expr}`` fields of a key from the notebook's variables (``{{`` is a brace)."""
    parts = []
    for match in _TOKEN.finditer(template):
        text, escape, expr = match.group("text", "escape", "field")
        if text is not None:
            parts.append(text)
        elif escape is not None:
            parts.append(escape[0])
        elif expr is not None and expr.strip():
            try:
                parts.append(str(eval(expr.strip(), namespace)))
            except Exception as exc:
                raise UsageError(
                    f"cannot fill {{{expr.strip()}}} in the key {template!r}: "
                    f"{type(exc).__name__}: {exc}"
                ) from None
        else:
            raise UsageError(f"unbalanced braces in the key {template!r}; write {{{{ for a brace")
    return "".join(parts)


_AWAIT = re.compile(r"\b(await|async)\b")


def needs_await(source: str) -> bool:
    """Whether ``source`` uses ``await`` (or ``async for``/``with``) at top level.

    >>> needs_await("user = await fetch(1)"), needs_await("async def f():\\n    await g()")
    (True, False)
    """
    if not _AWAIT.search(source):
        return False
    try:
        code = compile(source, "<cell>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    except (SyntaxError, ValueError):
        return False  # the run reports it as a plain cell would
    return bool(code.co_flags & inspect.CO_COROUTINE)


class AwaitingStepCells:
    """The input transformer that lets a ``%%step`` cell use top-level ``await``.

    Cell magics are called synchronously, so IPython could not run the body's
    ``await`` inside one. A ``%%step`` cell whose body awaits at top level is
    rewritten to ``await get_ipython().run_cell_magic("step", line, body)``:
    the magic returns a coroutine, which IPython runs in its event loop like
    any cell with ``await`` (ipykernel's loop, or the terminal's). Other cells
    pass through unchanged.
    """

    # IPython's check_complete (is this cell finished?) must skip it: a cell
    # magic is complete at a blank line, not when its first line parses.
    has_side_effects = True

    def __init__(self, shell: Any) -> None:
        self.shell = shell

    def __call__(self, lines: list[str]) -> list[str]:
        if not lines or not lines[0].startswith("%%step"):
            return lines
        name, _, line = lines[0][2:].rstrip().partition(" ")
        if name != "step":
            return lines
        body = "".join(lines[1:])
        try:
            source = self.shell.transform_cell(body)
        except Exception:
            return lines  # the magic reports it
        if not needs_await(source):
            return lines
        return [f"await get_ipython().run_cell_magic('step', {line!r}, {body!r})\n"]


def install_await_transformer(shell: Any) -> None:
    """Add :class:`AwaitingStepCells` after IPython's own clean-up transforms (once)."""
    cleanup = shell.input_transformers_cleanup
    cleanup[:] = [t for t in cleanup if not isinstance(t, AwaitingStepCells)]
    cleanup.append(AwaitingStepCells(shell))


def remove_await_transformer(shell: Any) -> None:
    cleanup = shell.input_transformers_cleanup
    cleanup[:] = [t for t in cleanup if not isinstance(t, AwaitingStepCells)]


def _cell_number(shell: Any) -> int:
    """The number of the cell running the magic (its traceback says ``Cell In[n]``): the
    one IPython gave the code calling us. ``execution_count`` is already the next one
    while a cell runs in IPython 9."""
    numbers = getattr(shell.compile, "_filename_map", {})
    frame = sys._getframe(1)
    while frame is not None:
        number = numbers.get(frame.f_code.co_filename)
        if isinstance(number, int):
            return number
        frame = frame.f_back  # type: ignore[assignment]
    return int(shell.execution_count)


def _silenced(cell: str, value: Any) -> Any:
    """A cell ending in ``;`` shows no value."""
    return None if DisplayHook.semicolon_at_end_of_expression(cell) else value


@dataclass(frozen=True)
class _Code:
    """A cell compiled as IPython does: the statements, then the last expression apart."""

    statements: list[ast.stmt]
    body: CodeType
    expression: CodeType | None

    def value(self, shell: Any, namespace: MutableMapping[str, Any]) -> Any:
        """The last expression's value (a coroutine if it awaits), or NOTHING."""
        __tracebackhide__ = True
        if self.expression is None:
            return NOTHING
        return eval(self.expression, shell.user_global_ns, namespace)


@magics_class
class StepMagics(Magics):
    """The awaitly_nb magics."""

    @magic_arguments("%step")
    @kwds(usage=_FORM[1:].replace("%", "%%"))  # IPython puts the first % back
    @argument(
        "spec",
        nargs="*",
        help="KEY (or key=KEY; {name} fills in a variable), outputs=a,b (the variables "
        "to save; default: every variable the cell created, rebound or changed), "
        "exclude=c (variables not to save)",
    )
    @argument("--force", action="store_true", help="run the cell again and overwrite the entry")
    @argument("--pin", action="store_true", help="trust the key alone; ignore code changes")
    @argument("--quiet", action="store_true", help="no note when the cell is restored")
    @no_var_expand
    @cell_magic
    def step(self, line: str, cell: str) -> Any:
        """Run an expensive cell once; afterwards restore its variables and output.

        The first run executes the cell and saves the variables it created,
        rebound or changed, together with what it showed (prints, tables,
        plots, the last value). Later runs with the same key — after a kernel
        restart, tomorrow, on a teammate's machine — skip the body, restore
        the variables and show the output again. If the cell's code changes
        (comments and whitespace do not count) it runs again. The cell may use
        top-level ``await``, as any cell may.

        Examples::

            %%step key=user:1
            user = fetch_user("1")

            %%step posts:{user_id} outputs=posts --quiet
            posts = await client.get_posts(user_id)
        """
        __tracebackhide__ = True
        shell: Any = self.shell
        source = shell.transform_cell(cell)
        if needs_await(source):
            if not any(isinstance(t, AwaitingStepCells) for t in shell.input_transformers_cleanup):
                raise UsageError(
                    "a %%step cell with top-level await needs the extension's input "
                    "transformer: load it with %load_ext awaitly_nb"
                )
            return self._awaiting(line, cell, source)  # the transformer's `await` runs it
        step = self._lookup(line, cell, source)
        if step.decision.hit:
            return _silenced(cell, step.restore())
        code = self._compile(source, cell, awaiting=False)
        step.start(code.statements)
        try:
            exec(code.body, shell.user_global_ns, step.namespace)
            result = code.value(shell, step.namespace)
        except BaseException as exc:
            step.end(exc)
            raise
        return self._finish(step, cell, result)

    async def _awaiting(self, line: str, cell: str, source: str) -> Any:
        """:meth:`step` for a cell with top-level ``await``: run in the shell's event loop."""
        __tracebackhide__ = True
        step = self._lookup(line, cell, source)
        if step.decision.hit:
            return _silenced(cell, step.restore())
        code = self._compile(source, cell, awaiting=True)
        shell: Any = self.shell
        step.start(code.statements)
        try:
            run = eval(code.body, shell.user_global_ns, step.namespace)
            if code.body.co_flags & inspect.CO_COROUTINE:
                await run
            result = code.value(shell, step.namespace)
            if code.expression is not None and code.expression.co_flags & inspect.CO_COROUTINE:
                result = await result
        except BaseException as exc:
            step.end(exc)
            raise
        return self._finish(step, cell, result)

    def _lookup(self, line: str, cell: str, source: str) -> NotebookStep:
        """The cell's step, looked up (``.decision`` says hit or miss)."""
        shell: Any = self.shell
        key, outputs, exclude, args = self._parse(line, cell)
        fingerprint = code_fingerprint(source)
        body = _statements(source)
        reads, values = step_inputs(
            body, shell.user_ns, shell.user_ns_hidden, get_session().engine.own_module
        )
        spec = StepSpec(
            key=key if key is not None else f"cell:{fingerprint[:16]}",
            kind="cell",
            code=fingerprint,
            reads=reads,
            values=values,
            deps=(*args.deps, *literal_paths(body), *named_paths(values.get(n) for n in reads)),
            pin=args.pin,
            force=args.force,
        )
        step = NotebookStep(
            spec,
            shell.user_ns,
            shell,
            outputs=outputs,
            exclude=exclude,
            quiet=args.quiet,
            hint="exclude={names} to the %%step line",
            targets=assigned_names(body).bound,
        )
        try:
            step.lookup()
        except InvalidKeyError as exc:
            raise UsageError(f"{exc}. Usage: {_FORM}") from None
        return step

    def _parse(self, line: str, cell: str) -> tuple[str | None, list[str] | None, set[str], Any]:
        try:
            # Quotes group words, as in a shell: key="user 1" is one key.
            args = self.step.parser.parse_args(shlex.split(line))
        except ValueError as exc:  # an unclosed quote
            raise UsageError(f"cannot read the %%step line: {exc}. Usage: {_FORM}") from None
        except UsageError as exc:
            raise UsageError(f"{exc}. Usage: {_FORM}") from None
        key: str | None = None
        outputs: list[str] | None = None
        exclude: set[str] = set()
        deps: tuple[str, ...] = ()
        for token in args.spec:
            name, sep, value = token.partition("=")
            if not sep:
                if key is not None:
                    raise UsageError(f"two keys given ({key!r}, {token!r}). Usage: {_FORM}")
                key = token
            elif name == "key":
                if not value:
                    raise UsageError(f"the key is empty. Usage: {_FORM}")
                if key is not None:
                    raise UsageError(f"two keys given ({key!r}, {value!r}). Usage: {_FORM}")
                key = value
            elif name == "outputs":
                outputs = _name_list("outputs", value)
            elif name == "exclude":
                exclude = set(_name_list("exclude", value))
            elif name == "deps":
                deps = tuple(p.strip() for p in value.split(",") if p.strip())
                if not deps:
                    raise UsageError(f"deps= takes file paths or globs. Usage: {_FORM}")
            else:
                raise UsageError(f"unknown option {name}=. Usage: {_FORM}")
        if key is not None:
            assert self.shell is not None
            key = _expand_key(key, self.shell.user_ns)
            if not key:
                raise UsageError(f"the key is empty. Usage: {_FORM}")
        args.deps = deps
        return key, outputs, exclude, args

    def _compile(self, source: str, cell: str, awaiting: bool) -> _Code:
        """The cell's code as IPython compiles it: the last expression apart (its value is
        shown), the cell's own file name (tracebacks show its lines)."""
        shell: Any = self.shell
        filename = shell.compile.cache(source, _cell_number(shell), raw_code=cell)
        tree = shell.compile.ast_parse(source, filename=filename)
        statements = list(tree.body)
        last = tree.body[-1] if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        if last is not None:
            tree.body.pop()
        with shell.compile.extra_flags(ast.PyCF_ALLOW_TOP_LEVEL_AWAIT if awaiting else 0):
            body = shell.compile(tree, filename, "exec")
            expression = None
            if last is not None:
                expression = shell.compile(ast.Expression(last.value), filename, "eval")
        return _Code(statements, body, expression)

    def _finish(self, step: NotebookStep, cell: str, result: Any) -> Any:
        """Show the cell's value (before the figures drawn at the end, as IPython does)
        and save the step."""
        silenced = DisplayHook.semicolon_at_end_of_expression(cell)
        shown = not silenced and step.show_result(result)
        try:
            step.end(None, result=result)
        except AwaitlyError as exc:
            raise UsageError(str(exc)) from None
        return None if result is NOTHING or shown or silenced else result

    @line_magic
    def steps(self, line: str) -> Any:
        """Show, forget or clear the saved steps of this notebook.

        Usage::

            %steps                 the status widget (a text table outside a notebook)
            %steps list            the text table
            %steps forget KEY      forget one step (it runs again next time)
            %steps why KEY         compare what a saved step read with the values now
            %steps clear           forget every step of this notebook
        """
        words = line.split()
        session = get_session()
        engine = session.engine
        command = words[0] if words else ""
        if not words:
            return self._status_view()
        if command == "list" and len(words) == 1:
            print(status_text(session))
        elif command == "forget" and len(words) >= 2:
            key = _unquote(line.strip()[len("forget") :].strip())  # keys may hold spaces
            if not engine.forget(key):
                raise UsageError(_unknown(key, session))
            print(f"forgot {key!r}")
        elif command == "why" and len(words) >= 2:
            key = _unquote(line.strip()[len("why") :].strip())
            try:
                shell: Any = self.shell
                print("\n".join(engine.explain(key, shell.user_ns)))
            except KeyError:
                raise UsageError(_unknown(key, session)) from None
        elif command == "clear" and len(words) == 1:
            count = engine.clear()
            print(f"forgot {count} step{'s' if count != 1 else ''} of {session.workflow_id()!r}")
        else:
            raise UsageError(
                "usage: %steps | %steps list | %steps forget KEY | %steps why KEY | %steps clear"
            )
        return None

    def _status_view(self) -> Any:
        """The widget in a kernel; the text table in a terminal or without ipywidgets."""
        if getattr(self.shell, "kernel", None) is None:
            print(status_text())
            return None
        try:
            from awaitly_nb.notebook.widget import StatusWidget
        except ImportError as exc:
            print(f"(the status widget needs ipywidgets: {exc}; showing the text table)")
            print(status_text())
            return None
        return StatusWidget.for_session()
