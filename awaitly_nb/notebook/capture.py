"""Record what a step shows while it runs, and show it again on a restore.

Recording does not swallow anything: stdout and stderr are teed (progress
bars and logs stream live) and the shell's display publisher is wrapped, so
rich outputs (HTML tables, images, matplotlib figures) reach the front end as
usual while a copy is kept. Works without IPython too (streams only).
"""

from __future__ import annotations

import contextlib
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from types import TracebackType

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    Output = dict[str, Any]

__all__ = [
    "LIVE_WIDGET_HINT",
    "WIDGET_MIME",
    "OutputRecorder",
    "flush_inline_figures",
    "replay_outputs",
]

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
LIVE_WIDGET_HINT = "(a live widget in the original run: run the cell to use it)"


class _Tee:
    """A text stream that writes through to ``target`` and hands what it wrote to the
    recorders of the code writing it (see :func:`_recorders`)."""

    def __init__(self, target: Any, name: str, *, records: bool = True) -> None:
        self._target = target
        self._name = name
        self._records = records  # False: the target records its own writes (_Hub._hook)
        self.stands_for = name
        """Which of ``sys.stdout``/``sys.stderr`` this is (a log handler made while a step
        ran holds it: :mod:`awaitly_nb.core.process` replays it as that stream)."""

    def write(self, text: str) -> int:
        written = self._target.write(text)
        for recorder in _recorders() if self._records else ():
            recorder._stream(self._name, text)
        return int(written) if isinstance(written, int) else len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self._target.flush()
        for recorder in _recorders() if self._records else ():
            recorder._flushed(self._name)  # Jupyter sends the text now (a tqdm bar does this)

    def __getattr__(self, attr: str) -> Any:  # encoding, fileno, isatty, ...
        return getattr(self._target, attr)


def _collapse_carriage_returns(text: str) -> str:
    r"""Keep what a terminal would show: ``"10%\r50%\r100%\n"`` becomes ``"100%\n"``."""
    if "\r" not in text:
        return text
    lines = text.split("\n")
    out = []
    for line in lines:
        parts = line.split("\r")
        shown = next((p for p in reversed(parts) if p), "")
        out.append(shown)
    return "\n".join(out)


_RECORDING: ContextVar[tuple[OutputRecorder, ...]] = ContextVar("awaitly_nb_recording", default=())
"""The recorders of the steps running in this context (tasks a step starts inherit them)."""


_ACTIVE: list[OutputRecorder] = []
"""Every recorder entered and not yet left, in this process."""


def _recorders() -> list[OutputRecorder]:
    """The recorders that output written here belongs to.

    Those of the steps running in this context: the step's own code and the
    asyncio tasks it started (they inherit the context). An asyncio task the
    step did not start (a background task printing while an ``await`` step
    runs) belongs to the cell that started it: no recorder. A thread (threads
    do not inherit contexts) belongs to every step running.
    """
    mine = _RECORDING.get()
    if mine:
        return [r for r in mine if r.active]
    asyncio = sys.modules.get("asyncio")  # not imported: no task can be running
    try:
        if asyncio is not None and asyncio.current_task() is not None:
            return []
    except RuntimeError:  # no event loop running in this thread
        pass
    return list(_ACTIVE)


class OutputRecorder:
    """Context manager that records streams and displays while passing them through.

    A stream's record keeps when it began (``t``, seconds into the step), so a
    replay sends the streams in the order Jupyter sent them (:func:`replay_outputs`).

    >>> with OutputRecorder() as rec:
    ...     print("hello")
    hello
    >>> [(o["type"], o["name"], o["text"]) for o in rec.outputs]
    [('stream', 'stdout', 'hello\\n')]
    """

    def __init__(self, shell: Any = None) -> None:
        self.shell = shell
        self.outputs: list[Output] = []
        self.active = False
        self._in_publish = 0
        self._started = time.monotonic()

    # --- recording ---------------------------------------------------------
    def _stream(self, name: str, text: str) -> None:
        if self._in_publish or not text:
            return  # a terminal display publisher prints what it shows: recorded as a display
        last = self.outputs[-1] if self.outputs else None
        if (
            last is not None
            and last["type"] == "stream"
            and last["name"] == name
            and not last.get("flushed")
        ):
            last["text"] += text
        else:
            began = round(time.monotonic() - self._started, 3)
            self.outputs.append({"type": "stream", "name": name, "text": text, "t": began})

    def _flushed(self, name: str) -> None:
        """The code flushed stream ``name``: its text so far was sent at once."""
        for item in reversed(self.outputs):
            if item["type"] == "stream" and item["name"] == name:
                item["flushed"] = True
                return

    def _display(
        self,
        data: dict[str, Any],
        metadata: dict[str, Any] | None,
        transient: dict[str, Any] | None,
        update: bool,
    ) -> None:
        data = dict(data or {})
        widget = None
        if WIDGET_MIME in data:
            # A live widget cannot be shown again without its kernel-side model: its
            # text is kept, and brought up to date when the step ends (_settle_widgets).
            view = data[WIDGET_MIME]
            widget = view.get("model_id") if isinstance(view, dict) else None
            data = {k: v for k, v in data.items() if k == "text/plain"}
            if not data and widget is None:
                return
        display_id = (transient or {}).get("display_id")
        if update and display_id is not None:
            for item in self.outputs:
                if item.get("display_id") == display_id:
                    item["data"], item["metadata"] = data, dict(metadata or {})
            return
        shown: Output = {"type": "display", "data": data, "metadata": dict(metadata or {})}
        if display_id is not None:
            shown["display_id"] = display_id
        if widget is not None:
            shown["widget"] = widget
        self.outputs.append(shown)

    def _settle_widgets(self) -> None:
        """Widgets shown by the step, as they are when it ends: a finished progress bar
        says 100%, other widgets keep their text and say they were live."""
        for item in self.outputs:
            model_id = item.pop("widget", None)
            if model_id is None:
                continue
            live = _live_widget(model_id)
            text = item["data"].get("text/plain", "")
            if live is not None:
                text = _widget_text(live) or text
            if type(live).__name__ != "TqdmHBox":  # a progress bar's final text says it all
                text = f"{text}\n{LIVE_WIDGET_HINT}"
            item["data"] = {"text/plain": text.strip()}

    def _clear(self) -> None:
        self.outputs.clear()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Nothing shown inside is recorded (the cell's value, shown by IPython's hook)."""
        self._in_publish += 1
        try:
            yield
        finally:
            self._in_publish -= 1

    # --- installing --------------------------------------------------------
    def __enter__(self) -> OutputRecorder:
        self._started = time.monotonic()
        self._outer = _RECORDING.get()
        _RECORDING.set((*self._outer, self))
        self.active = True
        _HUB.attach(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.active = False
        if _RECORDING.get()[-1:] == (self,):
            _RECORDING.set(self._outer)
        _HUB.detach(self)
        self._settle_widgets()
        for item in self.outputs:
            if item["type"] == "stream":
                item["text"] = _collapse_carriage_returns(item["text"])


class _Hub:
    """One tee of stdout and stderr and one wrapper of the shell's display publisher,
    installed while any recorder is active (steps may run concurrently: each entering
    and leaving its own tee would tangle them)."""

    def __init__(self) -> None:
        self._saved: list[tuple[Any, str, Any]] = []
        self._streams: tuple[Any, Any] | None = None

    def attach(self, recorder: OutputRecorder) -> None:
        if not _ACTIVE:
            self._install(recorder.shell)
        _ACTIVE.append(recorder)

    def detach(self, recorder: OutputRecorder) -> None:
        if recorder in _ACTIVE:
            _ACTIVE.remove(recorder)
        if not _ACTIVE:
            self._uninstall()

    def _patch(self, obj: Any, attr: str, value: Any) -> None:
        self._saved.append((obj, attr, obj.__dict__.get(attr, _ABSENT)))
        setattr(obj, attr, value)

    def _hook(self, stream: Any, name: str) -> bool:
        """Record what is written to ``stream`` itself, also by code that held it before
        the step began (a log handler ``basicConfig`` made, ``print(file=OUT)``); False
        when the stream takes no attributes (a script's ``sys.stdout``)."""
        if not isinstance(getattr(stream, "__dict__", None), dict):
            return False
        write, flush = stream.write, stream.flush

        def recording_write(text: str) -> Any:
            written = write(text)
            for recorder in _recorders():
                recorder._stream(name, text)
            return written

        def recording_flush() -> Any:
            flushed = flush()
            for recorder in _recorders():
                recorder._flushed(name)
            return flushed

        try:
            self._patch(stream, "write", recording_write)
            self._patch(stream, "flush", recording_flush)
        except (AttributeError, TypeError):
            return False
        return True

    def _install(self, shell: Any) -> None:
        stdout, stderr = sys.stdout, sys.stderr
        self._streams = (stdout, stderr)
        sys.stdout = _Tee(stdout, "stdout", records=not self._hook(stdout, "stdout"))
        hooked = stderr is not stdout and self._hook(stderr, "stderr")  # one object: once
        sys.stderr = _Tee(stderr, "stderr", records=not hooked)
        pub = getattr(shell, "display_pub", None)
        if pub is None:
            return
        original_publish, original_clear = pub.publish, pub.clear_output

        def publish(
            data: dict[str, Any],
            metadata: dict[str, Any] | None = None,
            *args: Any,
            transient: dict[str, Any] | None = None,
            update: bool = False,
            **kwargs: Any,
        ) -> Any:
            targets = _recorders()
            for recorder in targets:
                recorder._in_publish += 1
            try:
                return original_publish(
                    data, metadata, *args, transient=transient, update=update, **kwargs
                )
            finally:
                for recorder in targets:
                    recorder._in_publish -= 1
                    recorder._display(data, metadata, transient, update)

        def clear_output(*args: Any, **kwargs: Any) -> Any:
            for recorder in _recorders():
                recorder._clear()
            return original_clear(*args, **kwargs)

        self._patch(pub, "publish", publish)
        self._patch(pub, "clear_output", clear_output)

    def _uninstall(self) -> None:
        if self._streams is not None:
            stdout, stderr = self._streams
            if isinstance(sys.stdout, _Tee):  # unless the user's code replaced it since
                sys.stdout = stdout
            if isinstance(sys.stderr, _Tee):
                sys.stderr = stderr
            self._streams = None
        for obj, attr, old in reversed(self._saved):
            if old is _ABSENT:
                obj.__dict__.pop(attr, None)
            else:
                setattr(obj, attr, old)
        self._saved.clear()


_HUB = _Hub()
_ABSENT = object()


def _widget_text(widget: Any) -> str:
    """A widget's text now; a tqdm bar whose loop is gone, from its three parts."""
    with contextlib.suppress(Exception):
        return repr(widget)
    with contextlib.suppress(Exception):
        left, bar, right = widget.children
        done = int(10 * bar.value / bar.max) if bar.max else 10
        return (
            f"{_plain(left.value)}|{'█' * done}{' ' * (10 - done)}| {_plain(right.value)}"
        ).strip()
    return ""


def _plain(markup: str) -> str:
    import html

    return html.unescape(re.sub(r"<[^>]*>", "", str(markup))).replace("\xa0", " ")


def _live_widget(model_id: str) -> Any:
    """The ipywidgets widget with this model id in this kernel, if it is still alive."""
    module = sys.modules.get("ipywidgets.widgets.widget")
    if module is None:
        return None
    instances = getattr(module, "_instances", None)  # ipywidgets 8
    if instances is None:
        instances = getattr(getattr(module, "Widget", None), "widgets", {})  # ipywidgets 7
    return instances.get(model_id) if isinstance(instances, dict) else None


def flush_inline_figures() -> None:
    """Draw pending matplotlib-inline figures now (as its post-execute hook would, later).

    Called while a step is still recording, so figures drawn only at the end
    of the cell are part of what is saved.
    """
    backend = sys.modules.get("matplotlib_inline.backend_inline")
    plt = sys.modules.get("matplotlib.pyplot")
    if backend is None or plt is None:
        return
    try:
        if "inline" not in str(plt.get_backend()).lower():
            return
    except Exception:
        return
    backend.flush_figures()


_FLUSH_INTERVAL = 0.2
"""ipykernel's ``OutStream.flush_interval``: how long a stream's text waits to be sent."""
_STREAMS = ("stdout", "stderr")  # the order ipykernel flushes them in at a cell's end


def replay_outputs(
    outputs: list[Output], shell: Any = None, result: Callable[[], None] | None = None
) -> None:
    """Show recorded outputs again, in order, with their MIME bundles; ``result`` shows
    the cell's value where it was shown.

    Jupyter sends a stream's text in batches: 0.2 s after the first text not yet
    sent, before any display, and stdout then stderr when the cell ends. A
    replay flushes the streams at those moments of the recorded run, so a fast
    cell that warned and then printed shows the print first, as it did.
    """
    pub = getattr(shell, "display_pub", None)
    pending: dict[str, float] = {}  # stream -> when its unsent text began (recorded time)

    def flush(due: float | None = None) -> None:
        names = sorted(pending, key=pending.__getitem__) if due is not None else _STREAMS
        for name in names:
            if name in pending and (due is None or pending[name] + _FLUSH_INTERVAL <= due):
                getattr(sys, name).flush()
                del pending[name]

    for item in outputs:
        if item["type"] != "stream":
            flush()  # Jupyter sends both streams before a display or the cell's value
        if item["type"] == "result":
            if result is not None:
                result()
            continue
        if item["type"] == "stream":
            name = "stderr" if item["name"] == "stderr" else "stdout"
            began = item.get("t")
            if not isinstance(began, (int, float)):  # saved before times were kept
                flush()
                getattr(sys, name).write(item["text"])
                getattr(sys, name).flush()
                continue
            flush(began)
            getattr(sys, name).write(item["text"])
            if item.get("flushed"):  # the code flushed it when it ran: sent at once
                getattr(sys, name).flush()
                pending.pop(name, None)
            else:
                pending.setdefault(name, began)
        elif item["type"] == "display":
            if pub is not None:
                display_id = item.get("display_id")  # so a restored handle updates it
                pub.publish(
                    data=item["data"],
                    metadata=item.get("metadata") or {},
                    **({"transient": {"display_id": display_id}} if display_id else {}),
                )
            else:
                text = item["data"].get("text/plain")
                if text is not None:
                    print(text)
    flush()
