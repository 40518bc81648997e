"""Restoring a big step from a shared S3 store, against s3fs reading the same bytes.

Starts moto's S3 server on 127.0.0.1 (``moto[server]``), saves one step holding
a float64 array to a signed shared store there, then measures, in the same run
(median of --repeat):

- **s3fs cat**: s3fs reading the stored parts of the blob with its own parallel
  ``cat`` (bytes in memory, nothing checked or written): the baseline;
- **cold restore**: ``SharedStore.load`` with an empty local blob cache: download
  (parallel parts), check xxh3 and SHA-256, write the local copy, map it;
- **warm restore**: the same with the blob already in the local cache;
- **local store**: ``LocalStore.load`` of the same value (page cache warm).

Each figure is also printed as a ratio to its baseline (cold restore / s3fs cat,
warm restore / local store). The targets: cold within 1.5x; warm about 1x, apart
from reading the step's record from S3 (one GET, done at every lookup so that a
teammate's newer result is seen).
Usage::

    python benchmarks/shared_restore.py              # 200 MB, 5 repeats
    python benchmarks/shared_restore.py --mb 50 --repeat 3
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import s3fs

from awaitly_nb import progress as awaitly_progress

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from awaitly_servers import moto_server

from awaitly_nb.storage.local import LocalStore
from awaitly_nb.storage.shared import open_shared_store

MB = 1024 * 1024
KEY = b"benchmark-team-key"


def timed(
    fn: Callable[[], Any], repeat: int, before: Callable[[], None] = lambda: None
) -> list[float]:
    times = []
    for _ in range(repeat):
        before()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def touch(value: Any) -> None:
    """Read every page of an array (a mapped restore reads lazily)."""
    if isinstance(value, np.ndarray):
        float(value.sum())


def show(name: str, times: list[float], base: list[float] | None = None) -> None:
    median = statistics.median(times)
    spread = f"{min(times):.3f}-{max(times):.3f}"
    ratio = f"  {median / statistics.median(base):.2f}x" if base else ""
    print(f"  {name:<44} {median:8.3f} s  (spread {spread}){ratio}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=int, default=200, help="size of the array (MB)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--progress", action="store_true", help="draw the transfer bars")
    args = parser.parse_args()
    if not args.progress:
        awaitly_progress.PROGRESS_MIN_BYTES = sys.maxsize

    value = np.random.default_rng(0).random(args.mb * MB // 8)
    work = Path(tempfile.mkdtemp(prefix="awaitly-bench-"))
    with moto_server() as endpoint:
        os.environ.update(
            AWS_ENDPOINT_URL=endpoint,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION="us-east-1",
        )
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}, use_listings_cache=False)
        fs.mkdir(bucket)
        url = f"s3://{bucket}/awaitly"

        writer = open_shared_store(url, work / "writer", key=KEY)
        start = time.perf_counter()
        writer.save("bench", "big", {}, value)
        print(f"{args.mb} MB array, {args.repeat} runs each, moto S3 on 127.0.0.1")
        print(f"  {'save (upload, first time)':<44} {time.perf_counter() - start:8.3f} s")
        parts = sorted(
            p for p in fs.ls(f"{bucket}/awaitly") if p.rsplit("/", 1)[-1].startswith("k-")
        )
        blob_parts = [p for p in parts if fs.size(p) > 1 * MB]

        base = timed(lambda: fs.cat(blob_parts), args.repeat)
        show(f"s3fs cat of the blob's {len(blob_parts)} parts (baseline)", base)

        cache = work / "reader"
        reader = open_shared_store(url, cache, key=KEY)

        def cold() -> None:
            touch(reader.load("bench", "big"))

        cold_times = timed(cold, args.repeat, before=lambda: shutil.rmtree(cache / "blobs", True))
        show("cold restore (download, check, cache, map)", cold_times, base)

        local = LocalStore(work / "local")
        local.save("bench", "big", {}, value)
        local_times = timed(lambda: touch(local.load("bench", "big")), args.repeat)
        show("local store restore (baseline)", local_times)
        warm = timed(cold, args.repeat)
        show("warm restore (blob in the local cache)", warm, local_times)
        record = timed(lambda: reader.read("bench", "big"), args.repeat)
        show("  of which: the step's record, read from S3", record)
        data = [w - statistics.median(record) for w in warm]
        show("  the rest: blob from the local cache", data, local_times)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
