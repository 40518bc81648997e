"""Many keyed calls at once: ``await step.map(fetch_user, ids, key="user:{}")``.

awaitly's crash-recovery story in notebook form: every call is its own step,
keyed by its item. Saved calls return at once; the others run concurrently,
at most ``concurrency`` at a time, and each is saved the moment it completes.
If the cell is interrupted or a call raises, every completed call stays saved
and the next run makes only the calls that are missing. A progress line shows
done / restored / failed / running for more than a handful of calls.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Awaitable, Callable, Iterable

from awaitly_nb.errors import AwaitlyError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["StepMapError", "map_steps"]

_PROGRESS_FROM = 10
"""Calls at or above this count show a progress line."""


class StepMapError(AwaitlyError):
    """Some calls of :func:`map_steps` raised; the others are saved.

    Attributes:
        errors: the exception of each failed call, by key.
        results: every call's result, in order (None for a failed one).
    """

    def __init__(self, errors: dict[str, BaseException], results: list[Any]) -> None:
        names = ", ".join(f"{k!r} ({type(e).__name__}: {e})" for k, e in list(errors.items())[:5])
        more = f" and {len(errors) - 5} more" if len(errors) > 5 else ""
        super().__init__(
            f"{len(errors)} of {len(results)} calls failed and were not saved: {names}{more}; "
            "the others are saved, so running the cell again makes only the failed calls"
        )
        self.errors = errors
        self.results = results


def _key_for(key: str | Callable[[Any], str], item: Any) -> str:
    if callable(key):
        return str(key(item))
    if "{" not in key:
        raise TypeError(f'key= must say where the item goes, e.g. key="user:{{}}"; got {key!r}')
    try:
        return key.format(item)
    except (KeyError, IndexError, ValueError, AttributeError) as exc:
        raise ValueError(
            f"cannot fill key={key!r} with the item {item!r} ({type(exc).__name__}: {exc}): "
            'key= takes "{}" for the item, e.g. key="user:{}" or key="user:{.id}", '
            "or a function of the item"
        ) from None


async def map_steps(
    fn: Callable[[Any], Awaitable[Any]],
    items: Iterable[Any],
    *,
    key: str | Callable[[Any], str],
    concurrency: int = 8,
    progress: bool | None = None,
    force: bool = False,
    pin: bool = False,
) -> list[Any]:
    """``[await fn(item) for item in items]``, each call a step keyed by its item.

    Args:
        fn: an async function of one item (``async def fetch_user(uid)``).
        items: the items, one call each.
        key: ``"user:{}"`` (the item fills ``{}``) or a function of the item.
        concurrency: at most this many calls run at once.
        progress: show a progress line (default: for 10 calls or more).
        force, pin: as for :func:`~awaitly_nb.step`.

    Returns:
        The results, in the order of ``items``.

    Raises:
        StepMapError: some calls raised (after all others finished and were saved).

    >>> import asyncio, tempfile, awaitly_nb
    >>> _ = awaitly_nb.configure(dir=tempfile.mkdtemp(), workflow="doc-map")
    >>> async def double(n):
    ...     return 2 * n
    >>> asyncio.run(map_steps(double, [1, 2, 3], key="double:{}"))
    [2, 4, 6]
    >>> _ = awaitly_nb.configure(dir=None, workflow=None)
    """
    import asyncio  # not at import time: most sessions never map

    from awaitly_nb.notebook.block import call_step

    if not callable(fn):
        raise TypeError(f"step.map() takes an async function, got {type(fn).__name__}")
    if type(concurrency) is not int or concurrency < 1:
        raise ValueError(f"concurrency must be a whole number >= 1, got {concurrency!r}")
    items = list(items)
    keys = [_key_for(key, item) for item in items]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise ValueError(f"two items give the same key: {', '.join(map(repr, duplicates[:5]))}")
    gate = asyncio.Semaphore(concurrency)
    bar = _Progress(len(items), progress)
    results: list[Any] = [None] * len(items)
    errors: dict[str, BaseException] = {}

    async def one(index: int, item: Any, name: str) -> None:
        async with gate:
            bar.started()
            hit = True

            async def call(value: Any) -> Any:
                nonlocal hit
                hit = False
                result = fn(value)
                if not inspect.isawaitable(result):
                    raise TypeError(
                        f"step.map() needs an async function (async def, or one returning "
                        f"a coroutine); {getattr(fn, '__qualname__', fn)!r} returned "
                        f"{type(result).__name__}: for a plain function use "
                        "step(fn, item, key=...) in a loop"
                    )
                return await result

            try:
                results[index] = await call_step(
                    call, name, args=(item,), force=force, pin=pin, like=fn, quiet=True
                )
            except Exception as exc:
                errors[name] = exc
                bar.finished("failed")
                return
            bar.finished("restored" if hit else "done")

    try:
        await asyncio.gather(
            *(one(i, item, k) for i, (item, k) in enumerate(zip(items, keys, strict=True)))
        )
    finally:
        bar.close()
    if errors:
        raise StepMapError(errors, results)
    return results


class _Progress:
    """done / restored / failed / running, as a tqdm line (notebook or terminal)."""

    def __init__(self, total: int, show: bool | None) -> None:
        self.counts = {"done": 0, "restored": 0, "failed": 0, "running": 0}
        self.bar: Any = None
        if show is None:
            show = total >= _PROGRESS_FROM
        if show:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc="steps", file=sys.stderr)

    def started(self) -> None:
        self.counts["running"] += 1
        self._show()

    def finished(self, how: str) -> None:
        self.counts["running"] -= 1
        self.counts[how] += 1
        self._show()
        if self.bar is not None:
            self.bar.update(1)  # draws the counts too

    def _show(self) -> None:
        if self.bar is not None:
            self.bar.set_postfix(self.counts, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.set_postfix(self.counts)
            self.bar.close()
