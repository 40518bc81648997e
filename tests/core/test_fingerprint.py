"""Code fingerprints: the same code gives the same fingerprint in every process."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

from awaitly_nb.core.fingerprint import code_fingerprint, function_fingerprint

PROBE = (
    "from awaitly_nb.core.fingerprint import function_fingerprint\n"
    "print(function_fingerprint(lambda x: x in {'a', 'b', 'c', 'd'} or x == ('p', 1.5)))"
)


def test_function_fingerprints_do_not_depend_on_the_hash_seed() -> None:
    seen = {
        subprocess.run(
            [sys.executable, "-c", PROBE],
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for seed in range(1, 6)
    }
    assert len(seen) == 1


def test_set_constants_with_different_members_differ() -> None:
    assert function_fingerprint(lambda x: x in {"a", "b"}) != function_fingerprint(
        lambda x: x in {"a", "c"}
    )


def test_code_fingerprint_ignores_comments_and_blank_lines() -> None:
    assert code_fingerprint("x = 1\n\n# note\ny = 2") == code_fingerprint("x = 1\ny = 2  # b")
    assert code_fingerprint("x = 1") != code_fingerprint("x = 2")


PYTHONS = sorted(Path.home().glob(".pyenv/versions/3.1[0-3].*/bin/python3"))


def test_the_syntax_tree_text_is_the_same_on_python_3_10_to_3_13() -> None:
    """A teammate on another Python must see the same code fingerprints: the text of
    every module of this package, under every Python the machine has."""
    import hashlib
    import subprocess

    from awaitly_nb.core import fingerprint

    package = Path(fingerprint.__file__).parents[1]
    script = (
        "import ast, hashlib, importlib.util, pathlib, sys\n"
        f"spec = importlib.util.spec_from_file_location('fp', {fingerprint.__file__!r})\n"
        "fp = importlib.util.module_from_spec(spec); spec.loader.exec_module(fp)\n"
        f"files = sorted(pathlib.Path({str(package)!r}).rglob('*.py'))\n"
        "text = ''.join(fp.canonical_dump(ast.parse(f.read_text())) for f in files)\n"
        "print(hashlib.sha256(text.encode()).hexdigest())\n"
    )
    files = sorted(package.rglob("*.py"))
    here = "".join(fingerprint.canonical_dump(ast.parse(f.read_text())) for f in files)
    expected = hashlib.sha256(here.encode()).hexdigest()
    if sys.version_info[:2] == (3, 11):  # what fingerprints were first taken from
        dumped = "".join(ast.dump(ast.parse(f.read_text()), annotate_fields=False) for f in files)
        assert here == dumped
    for python in PYTHONS:
        out = subprocess.run([python, "-c", script], capture_output=True, text=True, check=True)
        assert out.stdout.strip() == expected, python
