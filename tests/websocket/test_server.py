"""The WebSocket stack against a real uvicorn server, with real clients over loopback.

The server (tests/websocket/_server_app.py) runs in a subprocess on a free port and is
killed by its PID; clients are the `websockets` library, or raw sockets where a client
must misbehave (stop reading, vanish without a close frame).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests._servers import stop_process, wait_until_serving
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
MAX_QUEUE = 16


class Server:
    """One uvicorn process serving the test app."""

    def __init__(self, log_path: Path, ws: str) -> None:
        self.port = free_port()
        self.log_path = log_path
        env = {**os.environ, "WH_TEST_MAX_QUEUE": str(MAX_QUEUE), "PYTHONUNBUFFERED": "1"}
        env.pop("WIREHALL_BACKPLANE", None)
        command = [sys.executable, "-m", "uvicorn", "tests.websocket._server_app:app"]
        command += ["--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"]
        command += ["--no-access-log", "--timeout-graceful-shutdown", "5", "--ws", ws]
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    def url(self, room: str) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/{room}"

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self) -> None:
        url = f"http://127.0.0.1:{self.port}/healthz"
        wait_until_serving(self.process, url, log=lambda: self.log).raise_for_status()

    def stop(self) -> None:
        stop_process(self.process)


@pytest.fixture
def server(tmp_path: Path, server_ws: str) -> Iterator[Server]:
    server = Server(tmp_path / "server.log", server_ws)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
    log = server.log
    assert "Traceback" not in log, log
    assert "never retrieved" not in log, log


async def join(server: Server, room: str, **options: Any) -> ClientConnection:
    ws = await connect(server.url(room), open_timeout=20, **options)
    joined = json.loads(await asyncio.wait_for(ws.recv(), 20))
    assert joined["type"] == "joined"
    return ws


async def burst(server: Server, room: str, count: int, size: int = 0) -> None:
    """Ask the server to broadcast `count` messages to `room` (from a connection in another room)."""
    async with await join(server, "control") as control:
        await control.send(json.dumps({"type": "burst", "room": room, "count": count, "size": size}))
        assert json.loads(await asyncio.wait_for(control.recv(), 60)) == {"type": "burst-done"}


async def close_code(ws: ClientConnection, timeout: float = 10.0) -> int:
    """Read until the server closes; the code it closed with."""
    with contextlib.suppress(ConnectionClosed):
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    assert ws.close_code is not None
    return ws.close_code


class RawClient:
    """A client on a plain socket: it can stop reading, or vanish without a close frame."""

    def __init__(self, port: int, room: str, receive_buffer: int = 4096) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.settimeout(20)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET /ws/{room} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._recv()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        opcode, payload = self.frame()
        assert opcode == 1
        assert json.loads(payload)["type"] == "joined"

    def _recv(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the TCP connection")
        return data

    def _take(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self.buffer += self._recv()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def frame(self) -> tuple[int, bytes]:
        """The next (unmasked, unfragmented) server frame: (opcode, payload)."""
        first, second = self._take(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self._take(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", self._take(8))
        return first & 0x0F, self._take(length)

    def read_until_close(self) -> tuple[list[bytes], int]:
        """Every text frame up to the close frame, and the close code."""
        texts: list[bytes] = []
        while True:
            opcode, payload = self.frame()
            if opcode == 8:
                return texts, struct.unpack("!H", payload[:2])[0]
            if opcode == 1:
                texts.append(payload)

    def vanish(self) -> None:
        """Reset the connection: no close frame, pending data discarded."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


@pytest.fixture
async def raw_clients() -> AsyncIterator[list[RawClient]]:
    made: list[RawClient] = []
    yield made
    for client in made:
        with contextlib.suppress(OSError):
            client.sock.close()


async def test_a_thousand_clients_each_get_every_broadcast_once_in_order(server: Server) -> None:
    clients: list[ClientConnection] = []
    try:
        for start in range(0, 1000, 100):
            clients += await asyncio.gather(*(join(server, "big") for _ in range(start, start + 100)))
        count = 50
        await burst(server, "big", count)

        async def receive_all(ws: ClientConnection) -> list[int]:
            return [json.loads(await ws.recv())["seq"] for _ in range(count)]

        async with asyncio.timeout(90):
            results = await asyncio.gather(*(receive_all(ws) for ws in clients))
        assert all(seqs == list(range(count)) for seqs in results)
        for ws in clients[:20]:  # and nothing more (no duplicates behind the last)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(ws.recv(), 0.05)
    finally:
        await asyncio.gather(*(ws.close() for ws in clients), return_exceptions=True)


async def test_a_stalled_client_is_closed_1013_without_delaying_the_others(
    server: Server, raw_clients: list[RawClient]
) -> None:
    stalled = await asyncio.to_thread(RawClient, server.port, "slow")
    raw_clients.append(stalled)
    fast = [await join(server, "slow", max_size=None) for _ in range(3)]
    try:
        # Far more than the kernel buffers and uvicorn's write buffer hold for a client that
        # reads nothing (its frames are not compressed: it did not offer permessage-deflate).
        count, size = 300, 65536
        started = time.monotonic()
        await burst(server, "slow", count, size)

        async def receive_all(ws: ClientConnection) -> list[int]:
            return [json.loads(await ws.recv())["seq"] for _ in range(count)]

        async with asyncio.timeout(30):
            results = await asyncio.gather(*(receive_all(ws) for ws in fast))
        elapsed = time.monotonic() - started
        assert all(seqs == list(range(count)) for seqs in results)
        # The stalled client has read nothing yet; now it reads what reached it, then the close.
        texts, code = await asyncio.to_thread(stalled.read_until_close)
        assert code == 1013
        seqs = [json.loads(text)["seq"] for text in texts]
        assert seqs == list(range(len(seqs)))  # a prefix, in order
        assert len(seqs) < count
        assert elapsed < 20
    finally:
        await asyncio.gather(*(ws.close() for ws in fast), return_exceptions=True)
    assert "closing slow consumer" in server.log


async def test_clients_vanishing_mid_broadcast_do_not_disturb_the_room(
    server: Server, raw_clients: list[RawClient]
) -> None:
    vanishing = [await asyncio.to_thread(RawClient, server.port, "flaky", 4096) for _ in range(10)]
    raw_clients.extend(vanishing)
    steady = [await join(server, "flaky", max_size=None) for _ in range(3)]
    try:
        count = 200
        control = await join(server, "control")
        await control.send(json.dumps({"type": "burst", "room": "flaky", "count": count, "size": 4096}))
        for client in vanishing:
            client.vanish()
        assert json.loads(await asyncio.wait_for(control.recv(), 60)) == {"type": "burst-done"}
        await control.close()

        async def receive_all(ws: ClientConnection) -> list[int]:
            return [json.loads(await ws.recv())["seq"] for _ in range(count)]

        async with asyncio.timeout(30):
            results = await asyncio.gather(*(receive_all(ws) for ws in steady))
        assert all(seqs == list(range(count)) for seqs in results)
        await burst(server, "flaky", 5)
        for ws in steady:
            assert [json.loads(await ws.recv())["seq"] for _ in range(5)] == list(range(5))
        async with httpx.AsyncClient() as http:
            health = (await http.get(f"http://127.0.0.1:{server.port}/healthz")).json()
        assert health["connections"] == 3
    finally:
        await asyncio.gather(*(ws.close() for ws in steady), return_exceptions=True)


async def test_limits_close_with_1009_and_1003_and_bad_json_gets_an_error_frame(server: Server) -> None:
    async with await join(server, "limits") as ws:
        await ws.send("not json")
        error = json.loads(await ws.recv())
        assert error["type"] == "error"
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await ws.recv()) == {"type": "pong"}
        await ws.send("x" * 65537)
        assert await close_code(ws) == 1009
    async with await join(server, "limits") as ws:
        await ws.send(b"binary")
        assert await close_code(ws) == 1003


async def test_shutdown_closes_every_client_with_a_going_away_code(server: Server) -> None:
    clients = [await join(server, "bye") for _ in range(5)]
    server.process.send_signal(signal.SIGTERM)
    codes = await asyncio.gather(*(close_code(ws, 20) for ws in clients))
    assert set(codes) <= {1001, 1012}
    await asyncio.to_thread(server.process.wait, 20)
    assert server.process.returncode in (0, -signal.SIGTERM)  # uvicorn re-raises the signal
