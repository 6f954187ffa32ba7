"""A real chat server in a subprocess (`wirehall run examples.chat:app`), for the tests."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests._servers import stop_process, wait_until_serving
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
WIREHALL = Path(sys.executable).with_name("wirehall")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0


class ChatServer:
    """`wirehall run examples.chat:app` on 127.0.0.1:`port`, with its own database and log."""

    def __init__(
        self,
        port: int,
        database_url: str,
        log_path: Path,
        *,
        backplane: str | None = None,
        ws: str | None = None,
    ) -> None:
        self.port = port
        self.ws = ws  # `--ws`: the WebSocket path (tests/conftest.py's server_ws); None: the default
        self.database_url = database_url
        self.log_path = log_path
        self.backplane = backplane
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, room: str, **query: str | int) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/{room}" + (f"?{urlencode(query)}" if query else "")

    def start(self) -> None:
        """Start the server and wait until `/healthz` answers."""
        env = dict(os.environ)
        env["CHAT_DATABASE_URL"] = self.database_url
        env.pop("WIREHALL_BACKPLANE", None)
        if self.backplane is not None:
            env["WIREHALL_BACKPLANE"] = self.backplane
        env["PYTHONUNBUFFERED"] = "1"
        command = [
            str(WIREHALL),
            "run",
            "examples.chat:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--log-level",
            "info",
            *(["--ws", self.ws] if self.ws else []),
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = self.http_url + "/healthz"
            wait_until_serving(self.process, url, timeout=START_TIMEOUT, log=self.log).raise_for_status()
        except BaseException:
            self.stop()
            raise

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int | None:
        """Stop the server by its PID and wait for it; returns its exit code."""
        process, self.process = self.process, None
        if process is None:
            return None
        return stop_process(process, sig, STOP_TIMEOUT)

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return "(no log)"


@contextmanager
def running(server: ChatServer) -> Iterator[ChatServer]:
    """`server` started, and stopped (by PID) afterwards."""
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def running_pair(
    database_url: str, backplane: str, directory: Path, ws: str | None = None
) -> Iterator[tuple[ChatServer, ChatServer]]:
    """Two chat servers on one database and one backplane, stopped (by PID) afterwards."""
    one = ChatServer(free_port(), database_url, directory / "one.log", backplane=backplane, ws=ws)
    two = ChatServer(free_port(), database_url, directory / "two.log", backplane=backplane, ws=ws)
    one.start()
    try:
        two.start()
        yield one, two
    finally:
        two.stop()
        one.stop()


class ChatClient:
    """A WebSocket client in a room that reads every frame in the background, for waiting on.

    `history` holds the welcome's messages, `live` the message frames after it, `errors`
    the error frames; `close_code` is set once the server closed the connection.
    """

    def __init__(self, ws: ClientConnection, name: str) -> None:
        self.ws = ws
        self.name = name
        self.history: list[dict[str, Any]] | None = None
        self.live: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self.users: list[str] = []
        self.close_code: int | None = None
        self._changed = asyncio.Condition()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @property
    def ids(self) -> list[int]:
        """Ids of every message received: the welcome's history, then the live ones."""
        return [m["id"] for m in (self.history or []) + self.live]

    @property
    def live_ids(self) -> list[int]:
        return [m["id"] for m in self.live]

    async def _read(self) -> None:
        try:
            async for data in self.ws:
                got = json.loads(data)
                kind = got["type"]
                if kind == "welcome":
                    assert self.history is None, f"{self.name}: a second welcome {got}"
                    self.history = got["history"]
                elif kind == "message":
                    self.live.append(got)
                elif kind == "presence":
                    self.users = got["users"]
                elif kind == "error":
                    self.errors.append(got)
                async with self._changed:
                    self._changed.notify_all()
        except ConnectionClosed:
            pass
        received = self.ws.close_code
        self.close_code = 1006 if received is None else received
        async with self._changed:
            self._changed.notify_all()

    async def wait(self, predicate: Callable[[ChatClient], bool], timeout: float, what: str) -> None:
        """Wait until `predicate(self)` holds; fails the test, saying `what`, after `timeout` s."""
        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(lambda: predicate(self))
        except TimeoutError:
            pytest.fail(
                f"{self.name}: {what} within {timeout} s; received ids {self.ids}, "
                f"errors {self.errors}, close code {self.close_code}"
            )

    async def close(self) -> None:
        await self.ws.close()
        await self._reader


@asynccontextmanager
async def chat_client(
    server: ChatServer,
    room: str,
    user: str,
    *,
    timeout: float = 10.0,
    welcome: bool = True,
    **query: str | int,
) -> AsyncIterator[ChatClient]:
    """A `ChatClient` of `server` in `room` as `user`, closed afterwards.

    With `welcome` (the default), once its welcome arrived; else as soon as it is connected.
    """
    ws = await connect(server.ws_url(room, user=user, **query), proxy=None, open_timeout=timeout)
    client = ChatClient(ws, f"{user}@{server.port}")
    try:
        if welcome:
            await client.wait(lambda c: c.history is not None, timeout, "no welcome")
        yield client
    finally:
        await client.close()
