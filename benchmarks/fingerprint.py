"""How fast are inputs fingerprinted, and what does a big restored input cost a reader?

Part 1 fingerprints a 1 GB float64 array and a 1 GB DataFrame with
:func:`awaitly_nb.core.digest.value_digest`, against the bare xxh3-128 of the
same bytes (the baseline, measured in the same run).

Part 2, in one in-process IPython shell: a step saves a 1 GB array, a second
step reads it. After a simulated restart both cells replay. The reader's
lookup must know the array's digest: right after the restore it is proven by
the saved entry (no hashing, ``core/memo.py``); with a plain cell in between
it is hashed. Both are reported with the restore itself.

Usage: ``python benchmarks/fingerprint.py [--gb 1.0] [--repeat 5]``.
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from typing import Any

import numpy as np
import pandas as pd
import xxhash
from IPython.testing.globalipapp import start_ipython

import awaitly_nb
from awaitly_nb.config import get_session
from awaitly_nb.core.digest import value_digest


def _times(fn: Callable[[], Any], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


def _spread(times: list[float]) -> str:
    median, low, high = (1000 * f(times) for f in (statistics.median, min, max))
    return f"median {median:7.1f} ms (min {low:.1f}, max {high:.1f})"


def rates(gb: float, repeat: int) -> None:
    array = np.random.default_rng(0).random(int(gb * 2**30) // 8)
    frame = pd.DataFrame(array.reshape(-1, 8), columns=[f"c{i}" for i in range(8)])
    nbytes = array.nbytes
    view = memoryview(array).cast("B")
    raw = _times(lambda: xxhash.xxh3_128(view).hexdigest(), repeat)
    arr = _times(lambda: value_digest(array), repeat)
    frm = _times(lambda: value_digest(frame), repeat)
    base = statistics.median(raw)
    print(f"fingerprint of {nbytes / 2**30:.2f} GiB, {repeat} runs")
    for label, times in (("bare xxh3-128", raw), ("ndarray", arr), ("DataFrame", frm)):
        rate = nbytes / statistics.median(times) / 1e9
        print(
            f"  {label:14} {_spread(times)}  {rate:5.1f} GB/s  "
            f"({statistics.median(times) / base:.2f}x the baseline)"
        )


def _cell(shell: Any, source: str) -> float:
    sink = io.StringIO()
    with redirect_stdout(sink), redirect_stderr(sink):
        started = time.perf_counter()
        result = shell.run_cell(source)
        elapsed = time.perf_counter() - started
    if not result.success:
        raise RuntimeError(f"cell failed: {result.error_in_exec or result.error_before_exec}")
    return elapsed


def restored_input(gb: float, repeat: int) -> None:
    shell = start_ipython()
    shell.run_line_magic("load_ext", "awaitly_nb")
    awaitly_nb.configure(dir=tempfile.mkdtemp(), workflow="fingerprint-bench")
    n = int(gb * 2**30) // 8
    make = (
        f"%%step key=make --quiet\nimport numpy as np\nbig = np.random.default_rng(1).random({n})"
    )
    read = "%%step key=read --quiet\nhead = float(big[:4].sum())"
    _cell(shell, make)
    _cell(shell, read)
    restores, proven, hashed = [], [], []
    for _ in range(repeat):
        for name in ("big", "head"):
            shell.user_ns.pop(name, None)
        get_session().engine.reset()  # a restart: nothing is known
        restores.append(_cell(shell, make))
        proven.append(_cell(shell, read))
        _cell(shell, "pass")  # a plain cell: the array must be hashed again
        hashed.append(_cell(shell, read))
    print(f"a step reading a restored {gb:.2f} GiB array, after a restart, {repeat} runs")
    print(f"  restore the array            {_spread(restores)}")
    print(f"  reader, right after          {_spread(proven)}  (digest proven, not hashed)")
    print(f"  reader, after a plain cell   {_spread(hashed)}  (hashed)")
    ratio = statistics.median(hashed) / statistics.median(proven)
    print(f"  hashing costs the reader {ratio:.0f}x the proven lookup")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rates(args.gb, args.repeat)
    restored_input(args.gb, args.repeat)


if __name__ == "__main__":
    main()
