"""How much does replaying a small ``%%step`` cell cost over running an empty cell?

Runs both in one in-process IPython shell, many times, and prints medians and
the difference. Usage: ``python benchmarks/replay.py [--repeat N]``.
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from contextlib import redirect_stderr, redirect_stdout

from IPython.testing.globalipapp import start_ipython

import awaitly_nb

SMALL_CELL = """%%step key=small:1
rows = [{"id": i, "name": f"user {i}"} for i in range(20)]
total = sum(r["id"] for r in rows)
print("total", total)
total"""


def _median_ms(shell: object, source: str, repeat: int) -> float:
    times = []
    sink = io.StringIO()
    for _ in range(repeat):
        with redirect_stdout(sink), redirect_stderr(sink):
            started = time.perf_counter()
            result = shell.run_cell(source)  # type: ignore[attr-defined]
            times.append((time.perf_counter() - started) * 1000)
        if not result.success:
            raise RuntimeError(f"cell failed: {result.error_in_exec or result.error_before_exec}")
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    shell = start_ipython()
    shell.run_line_magic("load_ext", "awaitly_nb")
    awaitly_nb.configure(dir=tempfile.mkdtemp(), workflow="bench")
    shell.run_cell(SMALL_CELL)  # the first run saves

    empty = _median_ms(shell, "pass", args.repeat)
    plain = _median_ms(shell, SMALL_CELL.split("\n", 1)[1], args.repeat)
    replay = _median_ms(shell, SMALL_CELL, args.repeat)
    quiet = _median_ms(shell, SMALL_CELL.replace("small:1", "small:1 --quiet"), args.repeat)
    print(f"median of {args.repeat} runs, in-process IPython shell")
    print(f"  empty cell                   {empty:7.3f} ms")
    print(f"  small cell, no %%step        {plain:7.3f} ms")
    print(f"  small cell replayed          {replay:7.3f} ms  (+{replay - empty:.3f} ms over empty)")
    print(f"  small cell replayed, --quiet {quiet:7.3f} ms  (+{quiet - empty:.3f} ms over empty)")


if __name__ == "__main__":
    main()
