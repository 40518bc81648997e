"""Fingerprints of code: a step whose code changed is stale and runs again.

Comments, blank lines and formatting do not count: the fingerprint is taken
from the code's syntax tree.
"""

from __future__ import annotations

import ast
import types
import warnings
from collections.abc import Callable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["canonical_dump", "code_fingerprint", "function_fingerprint", "global_names", "parse"]


def _digest(text: str) -> str:
    import xxhash  # here: the rest of this module needs only the standard library

    return str(xxhash.xxh3_128_hexdigest(text.encode("utf-8", "surrogatepass")))


def parse(source: str) -> ast.Module:
    """``ast.parse``, without the warnings the user's own run already shows once
    (``SyntaxWarning: invalid escape sequence``...): parsing is our bookkeeping.

    Raises:
        SyntaxError, ValueError: as ``ast.parse``.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        return ast.parse(source)


def code_fingerprint(source: str) -> str:
    """Fingerprint Python ``source``, ignoring comments and whitespace.

    >>> code_fingerprint("x = 1  # one") == code_fingerprint("x=1\\n\\n")
    True
    >>> code_fingerprint("x = 1") == code_fingerprint("x = 2")
    False
    """
    try:
        tree = parse(source)
    except SyntaxError:
        # Not plain Python (e.g. untransformed IPython syntax): fall back to
        # the text with blank lines and trailing spaces removed.
        lines = (line.rstrip() for line in source.splitlines())
        return _digest("\n".join(line for line in lines if line))
    return _digest(canonical_dump(tree))


def canonical_dump(node: Any) -> str:
    """The syntax tree as text, the same on Python 3.10 to 3.13.

    It is what Python 3.11's ``ast.dump(node, annotate_fields=False)`` prints,
    which fingerprints were first taken from: later versions print more
    (3.12's empty ``type_params``) or less (3.13 leaves out empty fields), and
    a teammate on another Python must not see every step as changed.

    >>> canonical_dump(ast.parse("f(x=None)"))
    "Module([Expr(Call(Name('f', Load()), [], [keyword('x', Constant(None))]))], [])"
    >>> canonical_dump(ast.parse("f'{y:>3}'")).endswith("JoinedStr([Constant('>3')]))]))], [])")
    True
    """
    if isinstance(node, ast.AST):
        cls = type(node)
        args = []
        keywords = False
        for name in node._fields:
            value: Any = getattr(node, name, _MISSING)
            if value is _MISSING or (value is None and _optional(cls, name)):
                keywords = True  # as 3.11 does: later fields are named
                continue
            if name == "type_params" and value == []:
                continue  # 3.12's field for `def f[T]()`: absent before
            if isinstance(node, ast.JoinedStr) and name == "values":
                # 3.12 puts empty strings into nested f-string format specs.
                value = [v for v in value if not (isinstance(v, ast.Constant) and v.value == "")]
            text = canonical_dump(value)
            args.append(f"{name}={text}" if keywords else text)
        return f"{cls.__name__}({', '.join(args)})"
    if isinstance(node, list):
        return f"[{', '.join(canonical_dump(item) for item in node)}]"
    return repr(node)


_MISSING = object()


def _optional(cls: type, name: str) -> bool:
    """Whether ``cls.name`` is an optional field (``expr?`` in the grammar)."""
    field_types = getattr(cls, "_field_types", None)  # 3.13
    if isinstance(field_types, dict) and name in field_types:
        import typing  # 3.13 only; a lookup does not import typing

        return type(None) in typing.get_args(field_types[name])
    return getattr(cls, name, ...) is None


def _const(value: Any) -> Any:
    """A constant in a form whose repr does not depend on the process (set order, ids)."""
    if isinstance(value, types.CodeType):
        return _code_parts(value)
    if isinstance(value, (frozenset, set)):
        return ["set", sorted(repr(_const(v)) for v in value)]
    if isinstance(value, tuple):
        return ["tuple", [_const(v) for v in value]]
    return repr(value)


def _code_parts(code: types.CodeType) -> list[Any]:
    parts: list[Any] = [code.co_code, code.co_names, code.co_varnames, code.co_freevars]
    parts.extend(_const(const) for const in code.co_consts)
    return parts


def code_object_fingerprint(code: types.CodeType) -> str:
    """Fingerprint a code object (a generator's ``gi_code``) as functions are fingerprinted."""
    return _digest(repr(_code_parts(code)))


def function_fingerprint(fn: Callable[..., Any]) -> str | None:
    """Fingerprint a function by its compiled code (None for builtins and callables without code).

    >>> function_fingerprint(lambda: 1) == function_fingerprint(lambda: 1)
    True
    >>> function_fingerprint(lambda: 1) == function_fingerprint(lambda: 2)
    False
    """
    code = getattr(fn, "__code__", None)
    if not isinstance(code, types.CodeType):
        return None
    return code_object_fingerprint(code)


def global_names(code: types.CodeType) -> set[str]:
    """The global (and attribute) names a code object and the code nested in it use.

    >>> sorted(global_names((lambda: [helper(x) for x in data]).__code__))
    ['data', 'helper']
    """
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= global_names(const)
    return names
