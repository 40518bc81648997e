"""The awaitly_nb demo: a slow pipeline whose steps resume in a new process.

Run it twice::

    python examples/resume_demo.py --fresh   # computes every step (a few seconds)
    python examples/resume_demo.py           # a new process: every step is restored

Each step of the pipeline (load data, clean, fit model, evaluate) is keyed
and saved to a file cache (``create_file_cache``, in ``--dir``) as it
completes. An ``on_event`` handler prints one line per step: ``computed``
with its duration, or ``restored`` with how long it took originally and when
it was saved. Change ``--seed`` and the keys change, so the steps run again.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from datetime import datetime

from awaitly_nb import Event, create_file_cache, create_workflow

SLOW = 0.6  # seconds each step pretends to wait for a warehouse or a GPU


def load_data(seed: int, rows: int = 20_000) -> list[tuple[float, float]]:
    """Noisy points on y = 2.5 x + 1, with a few wild outliers."""
    time.sleep(SLOW)
    rng = random.Random(seed)
    data = []
    for _ in range(rows):
        x = rng.uniform(0, 10)
        y = 2.5 * x + 1 + rng.gauss(0, 0.5)
        if rng.random() < 0.01:
            y *= rng.choice([-20, 20])
        data.append((x, y))
    return data


def clean(data: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Drop the points far from the median trend (the outliers)."""
    time.sleep(SLOW)
    slope = statistics.median(y / x for x, y in data if x > 1)
    return [(x, y) for x, y in data if abs(y - slope * x) <= 5]


def fit_model(data: list[tuple[float, float]]) -> dict[str, float]:
    """Ordinary least squares for y = slope * x + intercept."""
    time.sleep(SLOW)
    slope, intercept = statistics.linear_regression([x for x, _ in data], [y for _, y in data])
    return {"slope": slope, "intercept": intercept}


def evaluate(model: dict[str, float], data: list[tuple[float, float]]) -> dict[str, float]:
    """R² and RMSE of the model on the clean data."""
    time.sleep(SLOW)
    mean_y = statistics.fmean(y for _, y in data)
    ss_res = sum((y - model["slope"] * x - model["intercept"]) ** 2 for x, y in data)
    ss_tot = sum((y - mean_y) ** 2 for _, y in data)
    return {"r2": 1 - ss_res / ss_tot, "rmse": (ss_res / len(data)) ** 0.5}


def pipeline(seed: int):
    def body(step):
        data = step(lambda: load_data(seed), key=f"load_data:seed={seed}", name="load data")
        tidy = step(lambda: clean(data), key=f"clean:seed={seed}", name="clean")
        model = step(lambda: fit_model(tidy), key=f"fit_model:seed={seed}", name="fit model")
        scores = step(lambda: evaluate(model, tidy), key=f"evaluate:seed={seed}", name="evaluate")
        return {"rows": len(data), "kept": len(tidy), **model, **scores}

    return body


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", default=".awaitly/demo-cache", help="the cache directory")
    parser.add_argument("--fresh", action="store_true", help="clear the cache first")
    parser.add_argument("--seed", type=int, default=42, help="the data set to generate")
    args = parser.parse_args(argv)

    counts = {"computed": 0, "restored": 0}

    def report(event: Event) -> None:
        if event.type == "step_complete":
            counts["computed"] += 1
            print(f"computed  {event.name:<10}  in {event.duration_ms / 1000:.2f} s", flush=True)
        elif event.type == "step_cache_hit":
            counts["restored"] += 1
            saved = datetime.fromtimestamp(event.meta.saved_at).strftime("%Y-%m-%d %H:%M:%S")
            took = event.meta.duration_ms / 1000
            print(f"restored  {event.name:<10}  (took {took:.2f} s, saved {saved})", flush=True)

    started = time.perf_counter()
    with create_file_cache(args.dir) as cache:
        if args.fresh:
            cache.clear()
        print(f"cache: {args.dir}{' (cleared)' if args.fresh else ''}")
        workflow = create_workflow(cache=cache, on_event=report, workflow_id="resume-demo")
        result = workflow(pipeline(args.seed))

    print(
        f"model: y = {result['slope']:.3f} x + {result['intercept']:.3f}"
        f"  (R² {result['r2']:.4f}, RMSE {result['rmse']:.3f}, "
        f"{result['kept']:,} of {result['rows']:,} rows kept)"
    )
    print(
        f"total: {time.perf_counter() - started:.2f} s "
        f"({counts['computed']} computed, {counts['restored']} restored)"
    )


if __name__ == "__main__":
    main()
