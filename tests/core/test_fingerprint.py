"""Code fingerprints: the same code gives the same fingerprint in every process."""

from __future__ import annotations

import os
import subprocess
import sys

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
