"""How fast are async steps: 1,000 keyed hits at once, and one miss over its coroutine?

Part 1: ``asyncio.gather`` of 1,000 ``step(lambda i=i: fetch(i), key=f"user:{i}")``
that all hit, after a first run saved them and a simulated restart (the store
reopened, the session's memory forgotten); the gather in a fresh Python
process; the gather with ``fetch`` from a module of the user's own (``import
helpers`` in a notebook: a module's version is part of each lookup);
``step.map``; and ``step(fetch, uid, key=...)``. Baseline: the gather of the
1,000 bare coroutines (``fetch`` answers at once), measured in the same run.
Target (issue 13): at most 0.5 s for the 1,000 hits, 0.5 ms a hit.

Part 2: misses awaited one at a time, each call timed, against the bare
coroutine; the time inside ``store.save`` (pickling and writing the entry and
its variant) is timed apart. A 10-field dict and an int, in an empty store; the
dict again in the store of part 1 (2,000 records), with and without variants.
Target: at most 2 ms over the bare coroutine, plus the save.

Nothing is asserted: the figures are printed. Usage:
``python benchmarks/async_steps.py [--repeat N] [--profile]``; ``--profile``
adds cProfile's top entries for the 1,000-hit gather and for misses.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import importlib
import inspect
import json
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import awaitly_nb
from awaitly_nb import step
from awaitly_nb.config import get_session

N = 1000
MISSES = 40
"""Misses timed one at a time, per repeat and per case."""
WORKFLOW = "bench"


async def fetch(uid: int) -> dict[str, Any]:
    """A service that answers at once: a user record of 10 fields."""
    return {
        "id": uid,
        "name": f"user {uid}",
        "email": f"user{uid}@example.com",
        "age": 20 + uid % 50,
        "active": uid % 3 != 0,
        "score": uid * 0.5,
        "city": "Lyon",
        "tags": ["a", "b"],
        "created": "2024-01-01",
        "plan": "free",
    }


async def ping(uid: int) -> int:
    """A service that answers at once with a tiny value."""
    return uid


class Tally:
    """Counts the steps that hit and the calls that ran (an engine listener)."""

    def __init__(self) -> None:
        self.hits = self.ran = 0

    def __call__(self, event: Any) -> None:
        if event.type == "step_cache_hit":
            self.hits += 1
        elif event.type == "step_start":
            self.ran += 1


@contextmanager
def tally() -> Iterator[Tally]:
    listeners = get_session().engine.listeners
    found = Tally()
    listeners.append(found)
    try:
        yield found
    finally:
        listeners.remove(found)


def restart(directory: Path) -> None:
    """A simulated kernel restart: the store reopened, what the session saw forgotten."""
    awaitly_nb.configure(dir=directory, workflow=WORKFLOW)


# --- what is timed -----------------------------------------------------------------------
async def bare_gather() -> list[Any]:
    return list(await asyncio.gather(*(fetch(i) for i in range(N))))


async def step_gather() -> list[Any]:
    return list(
        await asyncio.gather(*(step(lambda i=i: fetch(i), key=f"user:{i}") for i in range(N)))
    )


helpers: Any = None
"""A module of the user's own holding ``fetch``, written and imported at run time."""


def import_helpers(root: Path) -> None:
    global helpers
    source = inspect.getsource(fetch)
    (root / "bench_helpers.py").write_text(f"from typing import Any\n\n\n{source}")
    sys.path.insert(0, str(root))
    helpers = importlib.import_module("bench_helpers")


async def user_module_gather() -> list[Any]:
    return await asyncio.gather(
        *(step(lambda i=i: helpers.fetch(i), key=f"user:{i}") for i in range(N))
    )


async def map_all() -> list[Any]:
    found = await step.map(fetch, range(N), key="user:{}", concurrency=8, progress=False)  # type: ignore[attr-defined]
    return list(found)


async def args_gather() -> list[Any]:
    """``step(fetch, uid, key=...)``, the positional form."""
    return await asyncio.gather(*(step(fetch, i, key=f"user:{i}") for i in range(N)))


def timed(make: Callable[[], Awaitable[Any]]) -> float:
    """Seconds to await ``make()``, inside a running loop (the loop's start-up left out)."""

    async def run() -> float:
        started = time.perf_counter()
        await make()
        return time.perf_counter() - started

    return asyncio.run(run())


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


def _spread(times: list[float]) -> str:
    low, high = min(times), max(times)
    return f"(min {low * 1000:.1f}, max {high * 1000:.1f})"


# --- part 1: 1,000 hits ------------------------------------------------------------------
def hits(root: Path, repeat: int) -> None:
    bare = [timed(bare_gather) for _ in range(repeat)]
    base = statistics.median(bare)
    print(f"1,000 keyed async steps that all hit, after a restart; median of {repeat}")
    print(f"  bare coroutines, gather       {_ms(base)} {_spread(bare)}  (the baseline)")
    import_helpers(root)
    cases: list[tuple[str, str, Callable[[], Awaitable[Any]]]] = [
        ("step(lambda: ...), gather", "gather", step_gather),
        ("fetch from a user module", "user-module", user_module_gather),
        ("step.map, concurrency=8", "map", map_all),
        ("step(fetch, i, key=...)", "args", args_gather),
    ]
    firsts = []
    for label, name, make in cases:
        directory = root / name
        restart(directory)
        firsts.append((label, timed(make)))  # the first run saves all 1,000
        times, hit, ran = [], 0, 0
        for _ in range(repeat):
            restart(directory)
            with tally() as seen:
                times.append(timed(make))
            hit, ran = hit + seen.hits, ran + seen.ran
        _hit_line(label, times, base, hit, ran, repeat)
        if make is step_gather:
            fresh = [fresh_process(directory) for _ in range(repeat)]
            hit = sum(h for _, h, _ in fresh)
            ran = sum(r for _, _, r in fresh)
            _hit_line(
                "gather, in a fresh process", [t for t, _, _ in fresh], base, hit, ran, repeat
            )
    print("  target: 1,000 hits in at most 500 ms (0.5 ms a hit)")
    print("first runs (1,000 misses saved, each in an empty store), once")
    for label, seconds in firsts:
        print(f"  {label:29} {_ms(seconds)}  ({seconds / N * 1000:.2f} ms a call)")


def _hit_line(label: str, times: list[float], base: float, hit: int, ran: int, n: int) -> None:
    median = statistics.median(times)
    checked = "" if (hit, ran) == (N * n, 0) else f"  NOT ALL HITS: {hit} hits, {ran} ran"
    print(
        f"  {label:29} {_ms(median)} {_spread(times)}  {median / N * 1000:.3f} ms a hit, "
        f"{median / base:.0f}x the baseline{checked}"
    )


def fresh_process(directory: Path) -> tuple[float, int, int]:
    """The gather of hits in a new Python process: seconds, hits, calls that ran."""
    out = subprocess.run(
        [sys.executable, __file__, "--hits-in", str(directory)],
        capture_output=True,
        text=True,
        check=True,
    )
    found = json.loads(out.stdout.splitlines()[-1])
    return found["seconds"], found["hits"], found["ran"]


def child(directory: Path) -> None:
    """``--hits-in DIR``: time one gather of the saved hits, print it as JSON."""
    restart(directory)
    with tally() as seen:
        seconds = timed(step_gather)
    print(json.dumps({"seconds": seconds, "hits": seen.hits, "ran": seen.ran}))


# --- part 2: one miss at a time ----------------------------------------------------------
@contextmanager
def saves_timed() -> Iterator[list[float]]:
    """The seconds each ``store.save`` of the current store takes (pickle and write)."""
    store = get_session().store
    save = store.save
    times: list[float] = []

    def timed_save(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return save(*args, **kwargs)
        finally:
            times.append(time.perf_counter() - started)

    store.save = timed_save  # type: ignore[method-assign]
    try:
        yield times
    finally:
        del store.save


def fetch_step(key: str, uid: int) -> Awaitable[Any]:
    return step(lambda: fetch(uid), key=key)


def ping_step(key: str, uid: int) -> Awaitable[Any]:
    return step(lambda: ping(uid), key=key)


def one_at_a_time(
    make: Callable[[str, int], Awaitable[Any]], prefix: str
) -> tuple[list[float], list[float]]:
    """``MISSES`` misses awaited in turn: each call's seconds, and each save's."""

    async def run() -> list[float]:
        times = []
        for i in range(MISSES):
            started = time.perf_counter()
            await make(f"{prefix}:{i}", i)
            times.append(time.perf_counter() - started)
        return times

    with saves_timed() as saves, tally() as seen:
        times = asyncio.run(run())
    if seen.ran != MISSES:
        print(f"  ({prefix}: {seen.ran} of {MISSES} calls ran: not all misses)")
    return times, saves


def bare_call() -> float:
    """Seconds per ``await fetch(i)``, over ``N`` calls in turn."""

    async def run() -> float:
        started = time.perf_counter()
        for i in range(N):
            await fetch(i)
        return (time.perf_counter() - started) / N

    return asyncio.run(run())


def misses(root: Path, repeat: int) -> None:
    base = statistics.median(bare_call() for _ in range(repeat))
    full = root / "gather"  # part 1's store: 1,000 steps and their variants
    cases: list[tuple[str, Callable[[str, int], Awaitable[Any]], Path | None, int | None]] = [
        ("10-field dict, empty store", fetch_step, None, None),
        ("int, empty store", ping_step, None, None),
        ("10-field dict, 2,000 records", fetch_step, full, None),
        ("same, variants=0", fetch_step, full, 0),
    ]
    print(f"misses awaited one at a time, {MISSES} x {repeat} calls each")
    print(f"  bare coroutine, await fetch(i) {base * 1e6:7.1f} us a call  (the baseline)")
    print(
        f"  {'':29} {'median':>8} {'p25':>6} {'p75':>6} {'min':>6} {'max':>6}"
        f"  {'save':>6}  {'over bare, save left out'}"
    )
    for n, (label, make, directory, variants) in enumerate(cases):
        calls, saved = [], []
        for r in range(repeat):
            restart(directory or Path(tempfile.mkdtemp(dir=root)))
            awaitly_nb.configure(variants=variants)
            got, took = one_at_a_time(make, f"miss{n}-{r}")
            calls += got
            saved += took
        awaitly_nb.configure(variants=None)
        q1, median, q3 = statistics.quantiles(calls, n=4)
        save = statistics.median(saved)
        rest = median - base - save
        figures = " ".join(f"{1000 * t:6.2f}" for t in (q1, q3, min(calls), max(calls)))
        print(
            f"  {label:29} {1000 * median:6.2f}ms {figures}  {1000 * save:6.2f}"
            f"  {1000 * rest:6.2f} ms"
        )
    print("  (ms; target: at most 2 ms over the bare coroutine, the save left out)")


# --- where the time goes -----------------------------------------------------------------
def profiles(root: Path) -> None:
    """cProfile's top entries: the 1,000-hit gather, and 200 misses in part 1's store."""
    restart(root / "gather")
    profiled("the 1,000-hit gather, after a restart", step_gather)

    async def run() -> None:
        for i in range(200):
            await fetch_step(f"profiled:{i}", i)

    profiled("200 misses in turn, in the store of part 1", run)


def profiled(what: str, make: Callable[[], Awaitable[Any]]) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    timed(make)
    profiler.disable()
    print(f"\n--- cProfile, {what}: top 30 by cumulative time")
    pstats.Stats(profiler, stream=sys.stdout).sort_stats("cumulative").print_stats(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="print cProfile's top entries")
    parser.add_argument("--hits-in", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.hits_in is not None:
        child(args.hits_in)
        return
    with tempfile.TemporaryDirectory() as root:
        try:
            hits(Path(root), args.repeat)
            misses(Path(root), args.repeat)
            if args.profile:
                profiles(Path(root))
        finally:
            awaitly_nb.configure(dir=None, workflow=None)


if __name__ == "__main__":
    main()
