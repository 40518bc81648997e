"""What is known about values no code has touched since: so big inputs are not hashed again.

Fingerprinting an input costs a pass over its bytes (about 8 GB/s here).
Between two ``%%step`` cells where no code of the user's ran (every cell in
between was a ``%%step`` cell that was restored, not run), a value bound in
the notebook is provably the same object with the same contents. The
:class:`ValueMemo` remembers, per name, the object, its digest once computed,
and where it came from (``origin``: the saved step whose value it is). Then:

- a value read by several steps is hashed once, not once per step;
- a value restored from a saved step, read by a step whose saved entry says
  it read exactly that step's saved value (its ``sources``), is not hashed
  at all: its digest is the one saved.

The memo is emptied whenever code of the user's may run: before every cell
that is not a ``%%step`` cell (an IPython ``pre_run_cell`` hook) and when a
step's body starts. Only the ``%%step`` front end uses it (its lookup is the
first thing its cell does), and only while the hook is installed
(:attr:`ValueMemo.enabled`). Functions, classes and containers are never
memoised: their digests follow other globals that a restore may rebind.
"""

from __future__ import annotations

from collections.abc import Mapping

from awaitly_nb.core.digest import namespace_free

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Known", "ValueMemo"]


class Known:
    """A value as last seen: the object, its digest and summary (once computed), its origin."""

    __slots__ = ("digest", "origin", "summary", "value")

    def __init__(
        self,
        value: Any,
        digest: str | None = None,
        summary: str | None = None,
        origin: str | None = None,
    ) -> None:
        self.value = value
        self.digest = digest
        self.summary = summary
        self.origin = origin


class ValueMemo:
    """Per name, what is known about the value bound to it while no user code runs.

    >>> import numpy as np
    >>> memo = ValueMemo()
    >>> memo.enabled = True
    >>> a = np.zeros(3)
    >>> memo.bound({"a": a}, origin="wf/make@1.0")
    >>> memo.get("a", a).origin
    'wf/make@1.0'
    >>> memo.get("a", np.zeros(3)) is None  # another object under the name
    True
    >>> memo.clear()
    >>> memo.get("a", a) is None
    True
    """

    def __init__(self) -> None:
        self.enabled = False
        """True while something empties the memo before user code runs (the IPython hook)."""
        self._known: dict[str, Known] = {}

    def clear(self) -> None:
        """User code may run: forget everything."""
        self._known.clear()

    def get(self, name: str, value: Any) -> Known | None:
        """What is known about ``value`` bound to ``name``; None if it is another object."""
        if not self.enabled:
            return None
        known = self._known.get(name)
        return known if known is not None and known.value is value else None

    def bound(self, values: Mapping[str, Any], *, origin: str) -> None:
        """``values`` were just bound from (or saved as) the step value ``origin``."""
        if not self.enabled:
            return
        for name, value in values.items():
            if namespace_free(value):
                self._known[name] = Known(value, origin=origin)
            else:
                self._known.pop(name, None)

    def digested(self, name: str, value: Any, digest: str, summary: str) -> None:
        """The digest of ``value`` (bound to ``name``) was computed."""
        if not self.enabled or not namespace_free(value):
            return
        known = self.get(name, value)
        if known is None:
            self._known[name] = Known(value, digest, summary)
        else:
            known.digest, known.summary = digest, summary
