"""``%%step`` cells with top-level ``await`` (IPython's autoawait), in process.

The real-kernel side (ipykernel's event loop, a service on 127.0.0.1, Ctrl-C
and a killed kernel) is in ``test_async_service.py``.
"""

from __future__ import annotations

from typing import Any

import pytest
from IPython.core.error import UsageError

from awaitly_nb.notebook.magics import AwaitingStepCells, needs_await

SERVICE = """
import asyncio
async def get_user(uid):
    mark("request")
    await asyncio.sleep(0)
    return {"id": uid, "name": f"user {uid}"}
"""

CELL = """%%step key=user:{uid}
user = await get_user(uid)
print("fetched", user["name"])
user["id"] * 10"""


@pytest.fixture
def service(ip: Any, run: Any, marks: Any) -> Any:
    assert run(SERVICE).error is None
    return marks


def test_a_cell_with_top_level_await_saves_and_replays(
    ip: Any, run: Any, service: Any, restart: Any
) -> None:
    ip.user_ns["uid"] = 7
    first = run(CELL)
    assert first.error is None, first.error
    assert first.stdout.startswith("fetched user 7\n") and first.result.result == 70
    assert service.count("request") == 1

    restart()
    run(SERVICE)
    ip.user_ns["uid"] = 7
    again = run(CELL)
    assert again.error is None, again.error
    assert service.count("request") == 1  # restored: no request
    assert again.stdout == first.stdout and again.result.result == 70
    assert ip.user_ns["user"] == {"id": 7, "name": "user 7"}
    assert any("restored 'user:7' (user)" in n for n in again.notes), again.notes

    ip.user_ns["uid"] = 8  # another key: a real request
    assert run(CELL).stdout.startswith("fetched user 8\n")
    assert service.count("request") == 2


def test_a_failing_await_cell_is_not_saved_and_shows_its_own_lines(
    ip: Any, run: Any, service: Any, saved: Any
) -> None:
    cell = "%%step key=boom\nuser = await get_user(1)\nuser['missing']"
    failed = run(cell)
    assert isinstance(failed.error, KeyError)
    assert "----> 2 user['missing']" in failed.stdout  # the traceback shows the cell's line
    assert run(cell).error is not None
    assert service.count("request") == 2  # nothing was saved: it ran again
    assert "boom" not in saved()


def test_await_cells_bind_loop_and_with_targets_like_plain_code(
    ip: Any, run: Any, service: Any
) -> None:
    cell = """%%step key=many
names = []
async for uid in numbers(3):
    names.append((await get_user(uid))["name"])
async with lock:
    count = len(names)
[n.upper() for n in names]"""
    run("async def numbers(n):\n    for i in range(n):\n        yield i\nlock = asyncio.Lock()")
    first = run(cell)
    assert first.error is None, first.error
    assert first.result.result == ["USER 0", "USER 1", "USER 2"]
    again = run(cell)  # same kernel: uid and n are the cell's own, not inputs
    assert any("restored 'many'" in n for n in again.notes), again.notes
    assert service.count("request") == 3


def test_a_silenced_await_cell_shows_no_value(ip: Any, run: Any, service: Any) -> None:
    ip.user_ns["uid"] = 1
    assert run(CELL + ";").result.result is None
    assert run(CELL + ";").result.result is None  # restored, still silent
    assert service.count("request") == 1


def test_only_step_cells_that_await_at_top_level_are_rewritten(ip: Any) -> None:
    rewrite = AwaitingStepCells(ip)
    awaiting = ["%%step key=a\n", "x = await f()\n"]
    assert rewrite(awaiting) == [
        "await get_ipython().run_cell_magic('step', 'key=a', 'x = await f()\\n')\n"
    ]
    inner = ["%%step key=a\n", "async def g():\n", "    await f()\n"]
    assert rewrite(inner) == inner  # await inside a function: a plain step
    assert rewrite(["%%time\n", "await f()\n"]) == ["%%time\n", "await f()\n"]
    assert rewrite(["%%step?\n"]) == ["%%step?\n"]
    assert needs_await("async with lock:\n    pass") and not needs_await("await = 1")


def test_the_terminal_waits_for_the_blank_line_that_ends_an_await_cell(ip: Any) -> None:
    # IPython's check_complete decides when the terminal runs what was typed.
    manager = ip.input_transformer_manager
    assert manager.check_complete("%%step key=a\nx = await f()\n")[0] == "incomplete"
    assert manager.check_complete("%%step key=a\nx = await f()\n\n")[0] == "complete"


def test_without_the_extension_loaded_an_await_cell_says_how_to_fix_it(ip: Any, run: Any) -> None:
    cleanup = ip.input_transformers_cleanup
    saved = list(cleanup)
    cleanup[:] = [t for t in cleanup if not isinstance(t, AwaitingStepCells)]
    try:
        ran = run("%%step key=a\nimport asyncio\nawait asyncio.sleep(0)")
    finally:
        cleanup[:] = saved
    assert isinstance(ran.error, UsageError) and "%load_ext awaitly_nb" in str(ran.error)


def test_output_of_a_task_the_step_did_not_start_is_not_recorded() -> None:
    import asyncio

    from awaitly_nb.notebook.capture import OutputRecorder

    async def main() -> list[Any]:
        async def ticker() -> None:
            for i in range(3):
                await asyncio.sleep(0.005)
                print("tick", i)

        async def helper() -> None:
            print("helper")

        background = asyncio.create_task(ticker())  # started before the step
        with OutputRecorder() as recorded:
            await asyncio.sleep(0.05)
            await asyncio.gather(helper())  # a task the step starts: its own output
            print("mine")
        await background
        return recorded.outputs

    outputs = asyncio.run(main())
    assert [{k: o[k] for k in ("type", "name", "text")} for o in outputs] == [
        {"type": "stream", "name": "stdout", "text": "helper\nmine\n"}
    ]
