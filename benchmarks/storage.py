"""Save and load speed of awaitly_nb's store against the usual ways, in one run.

For each workload it prints save time, load time (median of --repeat runs)
and bytes on disk for: awaitly_nb's LocalStore, pickle to a file, cloudpickle
into diskcache (the naive design), joblib dump/load, and raw os.write/read
of the same bytes; each also as a ratio to the raw figure. All figures come
from the page cache (warm files), as in a notebook that restores what it
saved a moment ago. Usage::

    python benchmarks/storage.py            # everything (needs ~6 GB of RAM, a few minutes)
    python benchmarks/storage.py --quick    # skip the 1 GB array
"""

from __future__ import annotations

import argparse
import os
import pickle
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cloudpickle
import diskcache
import joblib
import numpy as np
import pandas as pd

import awaitly_nb
from awaitly_nb import create_file_cache, create_workflow
from awaitly_nb.storage.local import LocalStore

MB = 1024 * 1024


# --- workloads -------------------------------------------------------------------------------
def array(nbytes: int) -> np.ndarray:
    return np.random.default_rng(0).random(nbytes // 8)


def dataframe(rows: int = 4_000_000) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.DataFrame(
        {
            "price": rng.random(rows),
            "weight": rng.random(rows),
            "count": rng.integers(0, 1_000_000, rows),
            "small": rng.integers(0, 1000, rows).astype("int32"),
            "region": pd.Categorical(rng.choice(["north", "south", "east", "west"], rows)),
            "sku": pd.Series(rng.integers(0, 10**8, rows)).map("sku{:08d}".format),
        }
    )


def small_dicts(n: int = 100_000) -> list[dict[str, Any]]:
    return [{"id": i, "name": f"user {i}", "score": i * 0.5, "tags": ["a", "b"]} for i in range(n)]


def ten_small_variables() -> dict[str, Any]:
    return {
        "user_id": 7,
        "name": "Ada",
        "ratio": 0.25,
        "flags": [True, False, True],
        "config": {"lr": 0.01, "epochs": 10},
        "labels": ("a", "b", "c"),
        "counts": {"a": 1, "b": 2},
        "vector": np.arange(16.0),
        "note": "x" * 200,
        "ids": list(range(50)),
    }


# --- methods: each returns (save, load, nbytes_on_disk); load returns the object ----------------
def _du(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _raw_bytes(obj: Any) -> memoryview:
    """The bytes a raw write would write: the array's buffer, else the pickle."""
    if isinstance(obj, np.ndarray):
        return memoryview(obj).cast("B")
    return memoryview(pickle.dumps(obj, protocol=5))


class Method:
    name = ""

    def __init__(self, root: Path) -> None:
        self.root = root / self.name.replace(" ", "_").replace("+", "_").replace("/", "_")
        self.root.mkdir(parents=True, exist_ok=True)

    def reset(self) -> None:
        """Delete what the last save wrote (not timed): every save writes new files."""
        for path in self.root.iterdir():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        self.open()

    def open(self) -> None: ...
    def save(self, obj: Any) -> None: ...
    def load(self) -> Any: ...
    def disk(self) -> int:
        return _du(self.root)


class Raw(Method):
    name = "raw os.write/read"

    def save(self, obj: Any) -> None:
        data = _raw_bytes(obj)
        self.size = len(data)
        fd = os.open(self.root / "raw.bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            while data:
                data = data[os.write(fd, data) :]
        finally:
            os.close(fd)

    def load(self) -> Any:
        buffer = np.empty(self.size, dtype=np.uint8)
        with open(self.root / "raw.bin", "rb", buffering=0) as f:
            f.readinto(memoryview(buffer))
        return buffer


class PickleFile(Method):
    name = "pickle file"

    def save(self, obj: Any) -> None:
        with open(self.root / "obj.pkl", "wb") as f:
            pickle.dump(obj, f, protocol=5)

    def load(self) -> Any:
        with open(self.root / "obj.pkl", "rb") as f:
            return pickle.load(f)


class NaiveDiskcache(Method):
    name = "cloudpickle+diskcache"

    def open(self) -> None:
        self.cache = diskcache.Cache(str(self.root), size_limit=2**40)

    def save(self, obj: Any) -> None:
        self.cache.set("k", cloudpickle.dumps(obj))

    def load(self) -> Any:
        return cloudpickle.loads(self.cache.get("k"))


class Joblib(Method):
    name = "joblib"

    def save(self, obj: Any) -> None:
        joblib.dump(obj, self.root / "obj.joblib")

    def load(self) -> Any:
        return joblib.load(self.root / "obj.joblib")


class Awaitly(Method):
    name = "awaitly_nb"

    def open(self) -> None:
        self.store = LocalStore(self.root)

    def save(self, obj: Any) -> None:
        self.store.save("bench", "k", {}, obj)

    def load(self) -> Any:
        return self.store.load("bench", "k")


METHODS: list[type[Method]] = [Awaitly, PickleFile, NaiveDiskcache, Joblib, Raw]


def touch(obj: Any) -> None:
    """Read every byte of an array (or of a DataFrame's columns)."""
    if isinstance(obj, np.ndarray):
        flat = obj.reshape(-1).view(np.uint8)
        np.bitwise_or.reduce(flat[: flat.size - flat.size % 8].view(np.uint64))
    elif isinstance(obj, pd.DataFrame):
        for column in obj.columns:
            if obj[column].dtype.kind in "biuf":  # numeric blocks; others are not mapped
                touch(np.ascontiguousarray(obj[column].to_numpy()))


def median_seconds(
    fn: Callable[[], Any], repeat: int, before: Callable[[], Any] | None = None
) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        result = None
        if before is not None:
            before()
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def bench(label: str, obj: Any, root: Path, repeat: int, methods: list[type[Method]]) -> None:
    print(f"\n## {label}\n")
    print(f"{'method':<24}{'save':>10}{'x raw':>8}{'load':>11}{'x raw':>8}{'on disk':>11}")
    rows = {}
    for cls in methods:
        method = cls(root)
        save, _ = median_seconds(lambda method=method: method.save(obj), repeat, method.reset)
        load, loaded = median_seconds(method.load, repeat)
        rows[cls.name] = (save, load, method.disk())
        del loaded
        if cls is Awaitly and isinstance(obj, (np.ndarray, pd.DataFrame)):
            rows["awaitly_nb, load+read all"] = (
                save,
                median_seconds(lambda method=method: touch(method.load()), repeat)[0],
                method.disk(),
            )
        shutil.rmtree(method.root, ignore_errors=True)
    raw_save, raw_load, _ = rows[Raw.name]
    for name, (save, load, disk) in rows.items():
        print(
            f"{name:<24}{save * 1000:>8.1f}ms{save / raw_save:>7.2f}x"
            f"{load * 1000:>9.2f}ms{load / raw_load:>7.2f}x{disk / MB:>9.1f}MB"
        )
    a_load, p_load = rows["awaitly_nb"][1], rows["pickle file"][1]
    a_save, p_save = rows["awaitly_nb"][0], rows["pickle file"][0]
    print(
        f"awaitly_nb vs pickle: save {a_save / p_save:.2f}x, load {a_load / p_load:.4f}x "
        f"(pickle.load is {p_load / a_load:.0f}x slower)"
    )


def peak_memory_of_1gb_save(root: Path) -> None:
    """In a fresh process: RSS with a 1 GB array, then peak RSS while saving it."""
    # VmHWM (peak RSS of this process image), not ru_maxrss: Linux carries the
    # parent's ru_maxrss across fork and exec.
    code = f"""
import numpy as np
from awaitly_nb.storage.local import LocalStore
def peak_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
a = np.ones(1024**3 // 8)
before = peak_mb()
LocalStore({str(root / "peak")!r}).save("bench", "k", {{}}, a)
print(before, peak_mb())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, after = (float(x) for x in out.stdout.split())
    print(
        f"\npeak memory saving a 1 GB array: {after:.0f} MB "
        f"(the array alone: {before:.0f} MB; extra while saving: {after - before:.0f} MB)"
    )


def tiny_values(root: Path, n: int = 2000) -> None:
    """Per-step cost of a tiny value through the Python API."""
    print(f"\n## a tiny value through the Python API (mean of {n} steps)\n")
    cache = create_file_cache(root / "tiny-cache")

    def run_all() -> None:
        def body(step: Any) -> None:
            for i in range(n):
                step(lambda i=i: i, key=f"tiny:{i}")

        workflow(body)

    workflow = create_workflow(cache=cache)
    save, _ = median_seconds(lambda: (cache.clear(), run_all()), 1)
    hit, _ = median_seconds(run_all, 3)
    print(
        f"create_workflow + create_file_cache: save {save / n * 1e6:6.1f} us/step, "
        f"hit {hit / n * 1e6:6.1f} us/step"
    )

    awaitly_nb.configure(dir=root / "tiny-store", workflow="bench")
    started = time.perf_counter()
    for i in range(n):
        awaitly_nb.step(lambda i=i: i, key=f"tiny:{i}")
    save = time.perf_counter() - started
    started = time.perf_counter()
    for i in range(n):
        awaitly_nb.step(lambda i=i: i, key=f"tiny:{i}")
    hit = time.perf_counter() - started
    print(
        f"step(fn, key=...) (notebook store):  save {save / n * 1e6:6.1f} us/step, "
        f"hit {hit / n * 1e6:6.1f} us/step"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="skip the 1 GB array")
    parser.add_argument(
        "--dir", type=Path, default=None, help="where to write (default: a temp dir)"
    )
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="awaitly-bench-", dir=args.dir))
    try:
        print(
            f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}, numpy {np.__version__}, pandas {pd.__version__}; "
            f"files in {root}"
        )
        print(
            f"awaitly_nb {awaitly_nb.__version__}; median of {args.repeat} runs; ratios are "
            "to raw os.write / readinto of the same bytes (the pickle bytes for non-arrays)"
        )
        bench("100 MB float64 array", array(100 * MB), root, args.repeat, METHODS)
        if not args.quick:
            bench("1 GB float64 array", array(1024 * MB), root, args.repeat, METHODS)
        bench("DataFrame, 4M rows, mixed columns", dataframe(), root, args.repeat, METHODS)
        bench("100k small dicts", small_dicts(), root, args.repeat, METHODS)
        bench("dict of 10 small variables", ten_small_variables(), root, args.repeat, METHODS)
        tiny_values(root)
        if not args.quick:
            peak_memory_of_1gb_save(root)
        print(
            f"\n(max RSS of this process: "
            f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
