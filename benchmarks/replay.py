"""How much does replaying ``%%step`` cells cost over running empty cells?

Runs in one in-process IPython shell: a small cell many times (medians), and
a 50-step notebook (each step reads a parameter and the previous step's
output) run once, then replayed after a simulated restart, against 50 empty
cells. Usage: ``python benchmarks/replay.py [--repeat N]``.
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
    fifty_steps(shell, args.repeat // 20 or 1)


def _notebook(n: int) -> list[str]:
    cells = ["n = 3"]
    for i in range(n):
        previous = f"x{i - 1}" if i else "n"
        cells.append(
            f"%%step key=s{i} --quiet\n"
            f"x{i} = [v + {previous if i == 0 else f'len({previous})'} for v in range(20)]\n"
            f"print(len(x{i}))"
        )
    return cells


def _run_all(shell: object, cells: list[str]) -> float:
    sink = io.StringIO()
    with redirect_stdout(sink), redirect_stderr(sink):
        started = time.perf_counter()
        for source in cells:
            result = shell.run_cell(source)  # type: ignore[attr-defined]
            if not result.success:
                raise RuntimeError(f"cell failed: {result.error_in_exec}")
        return (time.perf_counter() - started) * 1000


def fifty_steps(shell: object, repeat: int) -> None:
    """Replay of a 50-step notebook after a restart, against 50 empty cells."""
    cells = _notebook(50)
    awaitly_nb.configure(workflow="fifty")
    _run_all(shell, cells)  # the first run saves every step
    replays, empties = [], []
    for _ in range(repeat):
        for name in [k for k in shell.user_ns if k.startswith("x")]:  # type: ignore[attr-defined]
            del shell.user_ns[name]  # type: ignore[attr-defined]
        replays.append(_run_all(shell, cells))
        empties.append(_run_all(shell, ["pass"] * len(cells)))
    replay, empty = statistics.median(replays), statistics.median(empties)
    per_step = (replay - empty) / 50
    print(f"50-step notebook after a restart, median of {repeat}")
    print(f"  51 empty cells               {empty:7.1f} ms")
    print(f"  all 50 steps replayed        {replay:7.1f} ms  (+{per_step:.3f} ms per step)")


if __name__ == "__main__":
    main()
