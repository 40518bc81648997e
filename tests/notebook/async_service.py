"""A fake HTTP service on 127.0.0.1 for async steps: counts requests and how many run
at once, and can interrupt (SIGINT, as Jupyter's stop button) or kill (SIGKILL) the
kernel that calls it once it has seen a given number of requests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import threading
from typing import Any

CLIENT = """import asyncio, json

async def get_json(path):
    reader, writer = await asyncio.open_connection("127.0.0.1", {port})
    writer.write(f"GET {{path}} HTTP/1.0\\r\\nHost: 127.0.0.1\\r\\n\\r\\n".encode())
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\\r\\n\\r\\n")
    if not head.startswith(b"HTTP/1.0 200"):
        raise ConnectionError(head.split(b"\\r\\n")[0].decode())
    return json.loads(body)

async def fetch_user(uid):
    return await get_json(f"/user/{{uid}}")

await get_json(f"/hello/{{os.getpid()}}")"""
"""The notebook's client (needs ``import os``): ``await fetch_user(uid)``."""


class FakeService:
    """``GET /user/<id>`` answers ``{"id": id, "name": "user <id>"}`` after ``delay`` s."""

    def __init__(self, delay: float = 0.02) -> None:
        self.delay = delay
        self.requests: list[int] = []
        self.running = 0
        self.most = 0
        self.kernel_pid: int | None = None
        self.hellos: list[int] = []
        """How many requests had arrived at each ``/hello`` (where each cell began)."""
        self.signal_at: tuple[int, signal.Signals] | None = None
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0)
        )
        self.port: int = self._server.sockets[0].getsockname()[1]
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    @property
    def client(self) -> str:
        return CLIENT.format(port=self.port)

    def reset(self) -> None:
        """Forget the requests seen (a new run)."""
        with self._lock:
            self.requests.clear()
            self.hellos.clear()
            self.most = 0
            self.signal_at = None

    def after(self, count: int, signum: signal.Signals) -> None:
        """Send ``signum`` to the calling kernel when request number ``count`` arrives."""
        self.signal_at = (count, signum)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readline()
        while (await reader.readline()).strip():
            pass  # headers
        path = request.split()[1].decode()
        body: Any = {}
        if path.startswith("/hello/"):
            self.kernel_pid = int(path.rsplit("/", 1)[1])
            with self._lock:
                self.hellos.append(len(self.requests))
        elif path.startswith("/user/"):
            uid = int(path.rsplit("/", 1)[1])
            with self._lock:
                self.requests.append(uid)
                self.running += 1
                self.most = max(self.most, self.running)
                count = len(self.requests)
            if self.signal_at and count == self.signal_at[0] and self.kernel_pid:
                os.kill(self.kernel_pid, self.signal_at[1])
            try:
                await asyncio.sleep(self.delay)
            finally:
                with self._lock:
                    self.running -= 1
            body = {"id": uid, "name": f"user {uid}"}
        payload = json.dumps(body).encode()
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n" + payload)
        with contextlib.suppress(ConnectionError):  # the kernel may be gone
            await writer.drain()
        writer.close()

    def close(self) -> None:
        async def stop() -> None:
            self._server.close()
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
