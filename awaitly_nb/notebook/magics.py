"""The ``%%step`` and ``%steps`` magics: parse the line, call the engine, render."""

from __future__ import annotations

import ast
import difflib
import re
import shlex
from typing import Any

from IPython.core.displayhook import DisplayHook
from IPython.core.error import UsageError
from IPython.core.magic import (
    Magics,
    cell_magic,
    line_magic,
    magics_class,
    no_var_expand,
    output_can_be_silenced,
)
from IPython.core.magic_arguments import argument, kwds, magic_arguments

from awaitly_nb.config import get_session
from awaitly_nb.core.engine import StepSpec
from awaitly_nb.core.fingerprint import code_fingerprint
from awaitly_nb.core.payload import NOTHING
from awaitly_nb.errors import AwaitlyError, InvalidKeyError
from awaitly_nb.files import literal_paths
from awaitly_nb.notebook.namespace import input_names, user_inputs
from awaitly_nb.notebook.running import NotebookStep
from awaitly_nb.notebook.status_table import status_text

__all__ = ["StepMagics"]

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
        return ast.parse(source).body
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
    @output_can_be_silenced
    @cell_magic
    def step(self, line: str, cell: str) -> Any:
        """Run an expensive cell once; afterwards restore its variables and output.

        The first run executes the cell and saves the variables it created,
        rebound or changed, together with what it showed (prints, tables,
        plots, the last value). Later runs with the same key — after a kernel
        restart, tomorrow, on a teammate's machine — skip the body, restore
        the variables and show the output again. If the cell's code changes
        (comments and whitespace do not count) it runs again.

        Examples::

            %%step key=user:1
            user = fetch_user("1")

            %%step posts:{user_id} outputs=posts --quiet
            posts = fetch_posts(user_id)
        """
        __tracebackhide__ = True
        shell: Any = self.shell
        key, outputs, exclude, args = self._parse(line, cell)
        source = shell.transform_cell(cell)
        fingerprint = code_fingerprint(source)
        body = _statements(source)
        spec = StepSpec(
            key=key if key is not None else f"cell:{fingerprint[:16]}",
            kind="cell",
            code=fingerprint,
            reads=frozenset(user_inputs(input_names(body), shell.user_ns, shell.user_ns_hidden)),
            values=shell.user_ns,
            deps=(*args.deps, *literal_paths(body)),
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
        )
        try:
            decision = step.lookup()
        except InvalidKeyError as exc:
            raise UsageError(f"{exc}. Usage: {_FORM}") from None
        if decision.hit:
            return step.restore()
        return self._run(step, source, cell)

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

    def _run(self, step: NotebookStep, source: str, cell: str) -> Any:
        """Run the cell's code as IPython would (the last expression is its value)."""
        __tracebackhide__ = True
        shell: Any = self.shell
        filename = shell.compile.cache(source, shell.execution_count, raw_code=cell)
        tree = shell.compile.ast_parse(source, filename=filename)
        statements = list(tree.body)
        last = tree.body[-1] if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        if last is not None:
            tree.body.pop()
        try:
            body = shell.compile(tree, filename, "exec")
            expression = None
            if last is not None:
                expression = shell.compile(ast.Expression(last.value), filename, "eval")
        except SyntaxError as exc:
            if "await" in str(exc.msg) or "async" in str(exc.msg):
                raise UsageError(
                    "a %%step cell cannot use top-level await yet; use a with-block, which "
                    'can: `with step("key"):` with the awaiting code indented under it '
                    "(from awaitly_nb import step)"
                ) from None
            raise
        result: Any = NOTHING
        step.start(statements)
        try:
            exec(body, shell.user_global_ns, step.namespace)
            if expression is not None:
                result = eval(expression, shell.user_global_ns, step.namespace)
        except BaseException as exc:
            step.end(exc)
            raise
        # Shown before the figures drawn at the end, as IPython does; `;` silences it.
        shown = not DisplayHook.semicolon_at_end_of_expression(cell) and step.show_result(result)
        try:
            step.end(None, result=result)
        except AwaitlyError as exc:
            raise UsageError(str(exc)) from None
        return None if result is NOTHING or shown else result

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
