"""Async steps against a service on 127.0.0.1, in real kernels (nbclient + ipykernel).

The service counts requests and how many run at once: a replay makes no
request; a kernel killed or interrupted (SIGINT, as Jupyter's stop button)
halfway through 50 keyed calls keeps every completed call, and the next run
requests exactly the missing ones.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from async_service import FakeService
from nbclient.exceptions import DeadKernelError
from test_edit_and_replay import SETUP, execute, plain

import awaitly_nb
from awaitly_nb.config import get_session

pytestmark = pytest.mark.timeout(300)

MAP = (
    "from awaitly_nb import step\n"
    'users = await step.map(fetch_user, range(50), key="user:{}", concurrency=8)\n'
    "print(len(users), users[-1])"
)


@pytest.fixture
def service() -> Iterator[FakeService]:
    running = FakeService()
    yield running
    running.close()


def saved_keys(store: Path) -> set[str]:
    """The keys saved in ``store``, read as another process would."""
    awaitly_nb.configure(dir=store, workflow="default")
    try:
        return {m.key for m in get_session().engine.steps()}
    finally:
        awaitly_nb.configure(dir=None, workflow=None)


def test_await_cells_and_gathers_request_once_and_replay_in_a_new_kernel(
    tmp_path: Path, service: FakeService
) -> None:
    cells = [
        SETUP,
        service.client,
        "uid = 3",
        "%%step key=user:{uid}\nuser = await fetch_user(uid)\nprint(user['name'])\nuser",
        "from awaitly_nb import step\n"
        "team = await asyncio.gather(\n"
        "    *(step(fetch_user, u, key=f'member:{u}') for u in range(10))\n"
        ")\n"
        "print([member['id'] for member in team])",
    ]
    store, log = tmp_path / "store", tmp_path / "ran.log"
    first, _ = execute(cells, tmp_path, store, log)
    assert sorted(service.requests) == sorted([3, *range(10)])

    service.reset()
    again, notes = execute(cells, tmp_path, store, log)
    assert service.requests == []  # everything restored
    assert any("restored 'user:3' (user)" in n for n in notes), notes

    service.reset()
    truth, _ = execute(plain(cells), tmp_path, tmp_path / "unused", log)
    assert again == first == truth
    assert first[3] == ["stdout: user 3\n", "execute_result: {'id': 3, 'name': 'user 3'}"]


def test_a_kernel_killed_halfway_keeps_completed_calls_and_the_next_run_makes_the_rest(
    tmp_path: Path, service: FakeService
) -> None:
    cells = [SETUP, service.client, MAP]
    store, log = tmp_path / "store", tmp_path / "ran.log"
    service.after(25, signal.SIGKILL)
    with pytest.raises(DeadKernelError):
        execute(cells, tmp_path, store, log)
    first = set(service.requests)
    assert service.most == 8  # the concurrency limit, counted on the server
    saved = {int(k.split(":")[1]) for k in saved_keys(store)}
    assert 0 < len(saved) < 50 and saved <= first

    service.reset()
    shown, _ = execute(cells, tmp_path, store, log)
    assert sorted(service.requests) == sorted(set(range(50)) - saved)  # exactly the missing
    assert shown[2][-1] == "stdout: 50 {'id': 49, 'name': 'user 49'}\n"
    assert saved_keys(store) == {f"user:{i}" for i in range(50)}


def test_ctrl_c_halfway_keeps_completed_calls_and_running_again_makes_the_rest(
    tmp_path: Path, service: FakeService
) -> None:
    hello = 'await get_json(f"/hello/{os.getpid()}")'
    cells = [SETUP, service.client, MAP, hello, MAP]
    store, log = tmp_path / "store", tmp_path / "ran.log"
    service.after(25, signal.SIGINT)
    shown, _ = execute(cells, tmp_path, store, log, errors=True)
    assert any(o.startswith("error:") for o in shown[2]), shown[2]  # interrupted
    _, boundary = service.hellos  # the client's hello, then the one between the maps
    interrupted, again = service.requests[:boundary], service.requests[boundary:]
    assert len(interrupted) < 50
    saved_by_then = set(range(50)) - set(again)
    assert saved_by_then <= set(interrupted)  # saved only what had completed
    assert len(again) == len(set(again))  # and each missing call once
    assert shown[4][-1] == "stdout: 50 {'id': 49, 'name': 'user 49'}\n"
    assert saved_keys(store) == {f"user:{i}" for i in range(50)}


CLIENT_MODULE = """import asyncio, json

async def get_json(path):
    reader, writer = await asyncio.open_connection("127.0.0.1", {port})
    writer.write(f"GET {{path}} HTTP/1.0\\r\\n\\r\\n".encode())
    await writer.drain()
    raw = await reader.read()
    writer.close()
    return json.loads(raw.partition(b"\\r\\n\\r\\n")[2])

async def fetch_user(uid):
    return await get_json(f"/user/{{uid}}")
"""

NIGHTLY = """import asyncio
import awaitly_nb
from awaitly_nb import create_workflow, step, step_cache
from client import fetch_user

awaitly_nb.configure(workflow="analysis.ipynb")  # the notebook's workflow

# The call form: the notebook's identical call restores it (code and inputs compared).
users = asyncio.run(step.map(fetch_user, range(10), key="user:{}"))

# awaitly's workflow API: keys alone identify its steps.
workflow = create_workflow(cache=step_cache())

async def main(s):
    return [await s(lambda u=u: fetch_user(u), key=f"profile:{u}") for u in range(5)]

print(len(users), len(asyncio.run(workflow(main))))
"""


def test_a_script_and_a_notebook_share_keyed_results_through_the_store(
    tmp_path: Path, service: FakeService, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess
    import sys

    (tmp_path / "client.py").write_text(CLIENT_MODULE.format(port=service.port))
    (tmp_path / "nightly.py").write_text(NIGHTLY)
    store = tmp_path / "store"
    env = {**os.environ, "AWAITLY_NB_DIR": str(store)}
    done = subprocess.run(
        [sys.executable, "nightly.py"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "10 5\n"
    assert sorted(service.requests) == sorted([*range(10), *range(5)])

    service.reset()
    monkeypatch.setenv("JPY_SESSION_NAME", "analysis.ipynb")  # as Jupyter tells its kernels
    cells = [
        SETUP,
        "import asyncio\nfrom awaitly_nb import step\nfrom client import fetch_user",
        'users = await step.map(fetch_user, range(10), key="user:{}")\nprint(users[-1])',
        "profiles = await asyncio.gather(\n"
        '    *(step(fetch_user, u, key=f"profile:{u}", pin=True) for u in range(5))\n)\n'
        "print(profiles[-1])",
    ]
    shown, _ = execute(cells, tmp_path, store, tmp_path / "ran.log")
    assert service.requests == []  # everything came from the script's run
    assert shown[2][-1] == "stdout: {'id': 9, 'name': 'user 9'}\n"
    assert shown[3] == ["stdout: {'id': 4, 'name': 'user 4'}\n"]


def test_a_background_task_running_during_an_await_step_is_not_replayed_as_its_output(
    tmp_path: Path,
) -> None:
    cells = [
        SETUP,
        "import asyncio\n"
        "async def ticker():\n    for i in range(4):\n        await asyncio.sleep(0.1)\n"
        "        print('tick', i)\n"
        "background = asyncio.create_task(ticker())",
        "%%step key=mine\nawait asyncio.sleep(0.25)\nprint('mine')",
        "await background",
    ]
    store, log = tmp_path / "store", tmp_path / "ran.log"
    first, _ = execute(cells, tmp_path, store, log)
    again, notes = execute(cells, tmp_path, store, log)
    truth, _ = execute(plain(cells), tmp_path, tmp_path / "unused", log)
    assert any("restored 'mine'" in n for n in notes), notes
    assert first[2] == again[2] == truth[2] == ["stdout: mine\n"]
