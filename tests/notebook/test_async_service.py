"""Async steps against a service on 127.0.0.1, in real kernels (nbclient + ipykernel).

The service counts requests and how many run at once: a replay makes no
request; a kernel killed or interrupted (SIGINT, as Jupyter's stop button)
halfway through 50 keyed calls keeps every completed call, and the next run
requests exactly the missing ones.
"""

from __future__ import annotations

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
        "team = await asyncio.gather(*(step(fetch_user, u, key=f'member:{u}') for u in range(10)))\n"
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
