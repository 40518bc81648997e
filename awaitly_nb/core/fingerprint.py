"""Fingerprints of code: a step whose code changed is stale and runs again.

Comments, blank lines and formatting do not count: the fingerprint is taken
from the code's syntax tree.
"""

from __future__ import annotations

import ast
import types
from collections.abc import Callable
from typing import Any

import xxhash

__all__ = ["code_fingerprint", "function_fingerprint", "global_names"]


def _digest(text: str) -> str:
    return str(xxhash.xxh3_128_hexdigest(text.encode("utf-8", "surrogatepass")))


def code_fingerprint(source: str) -> str:
    """Fingerprint Python ``source``, ignoring comments and whitespace.

    >>> code_fingerprint("x = 1  # one") == code_fingerprint("x=1\\n\\n")
    True
    >>> code_fingerprint("x = 1") == code_fingerprint("x = 2")
    False
    """
    try:
        tree = ast.parse(source)
    except SyntaxError:
        # Not plain Python (e.g. untransformed IPython syntax): fall back to
        # the text with blank lines and trailing spaces removed.
        lines = (line.rstrip() for line in source.splitlines())
        return _digest("\n".join(line for line in lines if line))
    return _digest(ast.dump(tree, annotate_fields=False, include_attributes=False))


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
    return _digest(repr(_code_parts(code)))


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
