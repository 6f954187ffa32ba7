"""`wirehall run` under hostile clients: deflate bombs, slowloris, idle sockets, endless heads.

Each case runs against a real server in a subprocess, on loopback, bounded in time and count.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import free_port
from tests.hostile._server import RunningServer, wirehall_run

HEAD_TIMEOUT = 2.0
BOMBS = 30
BOMB_SIZE = 15 * 1024 * 1024
SLOW_CLIENTS = 200
IDLE_CLIENTS = 100
MIB = 1024


@pytest.fixture(scope="module", params=["httptools", "h11"])
def limited_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """A server with a short head timeout, on each HTTP implementation."""
    log = tmp_path_factory.mktemp(f"limits-{request.param}") / "server.log"
    with wirehall_run(
        free_port(), log, "--http", request.param, "--head-timeout", str(HEAD_TIMEOUT)
    ) as server:
        yield server


async def closed_after(reader: asyncio.StreamReader, limit: float) -> float:
    """Seconds until the server closes (EOF or reset), reading and dropping what it sends."""
    started = time.monotonic()
    try:
        while await asyncio.wait_for(reader.read(4096), limit):
            pass
    except ConnectionResetError:
        pass
    return time.monotonic() - started


@pytest.mark.parametrize("implementation", ["websockets-sansio", "websockets", "wirehall"])
async def test_deflate_bombs_are_refused_with_1009_before_they_are_inflated(
    tmp_path: Path, implementation: str
) -> None:
    with wirehall_run(free_port(), tmp_path / "server.log", "--ws", implementation) as server:
        async with connect(f"{server.ws_url}/ws/echo") as warm:  # load the WebSocket path once
            await warm.send("warm")
            assert await warm.recv() == "warm"
        idle_kib = server.rss_kib()
        bomb = "a" * BOMB_SIZE  # ~15 KB on the wire once deflated

        async def send_bomb() -> int | None:
            async with connect(f"{server.ws_url}/ws/echo", compression="deflate", max_size=None) as ws:
                try:
                    await ws.send(bomb)
                    await asyncio.wait_for(ws.recv(), 20)
                except ConnectionClosed:
                    pass
                await asyncio.wait_for(ws.wait_closed(), 20)
                return ws.close_code

        codes = await asyncio.gather(*(send_bomb() for _ in range(BOMBS)))
        peak_kib = server.peak_rss_kib()
    assert codes == [1009] * BOMBS
    assert peak_kib - idle_kib < 100 * MIB, f"peak {peak_kib} KiB, idle {idle_kib} KiB"


async def test_slowloris_connections_are_closed_when_the_head_timeout_is_up(
    limited_server: RunningServer,
) -> None:
    async def slow_client() -> float:
        reader, writer = await asyncio.open_connection("127.0.0.1", limited_server.port)
        started = time.monotonic()
        writer.write(b"GET /api/echo HTTP/1.1\r\nHost: localhost\r\n")

        async def trickle() -> None:
            for line in range(100):
                await asyncio.sleep(HEAD_TIMEOUT / 4)
                writer.write(b"X-Line-%d: x\r\n" % line)  # well within the size cap

        feeding = asyncio.create_task(trickle())
        try:
            await closed_after(reader, HEAD_TIMEOUT * 5)
        finally:
            feeding.cancel()
            writer.close()
        return time.monotonic() - started

    durations = await asyncio.gather(*(slow_client() for _ in range(SLOW_CLIENTS)))
    assert min(durations) >= HEAD_TIMEOUT * 0.8
    assert max(durations) < HEAD_TIMEOUT + 2.5, f"the slowest was closed after {max(durations):.1f}s"


async def test_idle_connections_are_closed_after_the_head_timeout(limited_server: RunningServer) -> None:
    async def idle_client() -> tuple[float, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", limited_server.port)
        started = time.monotonic()
        try:
            data = await asyncio.wait_for(reader.read(4096), HEAD_TIMEOUT * 5)
        finally:
            writer.close()
        return time.monotonic() - started, data

    results = await asyncio.gather(*(idle_client() for _ in range(IDLE_CLIENTS)))
    assert all(data == b"" for _, data in results)  # closed without an answer
    assert min(elapsed for elapsed, _ in results) >= HEAD_TIMEOUT * 0.8
    assert max(elapsed for elapsed, _ in results) < HEAD_TIMEOUT + 2.5


@pytest.mark.parametrize("part", ["url", "header"])
async def test_an_endless_head_is_refused_long_before_it_ends(
    limited_server: RunningServer, part: str
) -> None:
    before_kib = limited_server.peak_rss_kib()
    start = b"GET /" if part == "url" else b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Endless: "
    chunk = b"a" * 65536

    async def endless_client() -> tuple[bytes, int]:
        reader, writer = await asyncio.open_connection("127.0.0.1", limited_server.port)
        answer = asyncio.create_task(reader.read(4096))
        sent = 0
        try:
            writer.write(start)
            while sent < 100 * 1024 * 1024 and not answer.done():  # it would be 100 MiB
                writer.write(chunk)
                await writer.drain()
                sent += len(chunk)
                await asyncio.wait({answer}, timeout=0.02)  # a client that listens while it sends
            return await asyncio.wait_for(answer, HEAD_TIMEOUT * 2), sent
        except (ConnectionResetError, BrokenPipeError):
            return b"", sent  # refused while still sending: the kernel dropped the rest
        finally:
            answer.cancel()
            writer.close()

    results = await asyncio.gather(*(endless_client() for _ in range(10)))
    for answer, sent in results:
        assert answer == b"" or answer.startswith(b"HTTP/1.1 431 "), answer[:80]
        assert sent < 16 * 1024 * 1024, f"the server was still reading after {sent} bytes"
    assert any(answer.startswith(b"HTTP/1.1 431 ") for answer, _ in results)
    assert limited_server.peak_rss_kib() - before_kib < 20 * MIB


@pytest.fixture(scope="module", params=["httptools", "h11"])
def limited_ws_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, server_ws: str
) -> Iterator[RunningServer]:
    """`limited_server` on each WebSocket path too (kept apart so the HTTP tests run once)."""
    log = tmp_path_factory.mktemp(f"limits-ws-{request.param}") / "server.log"
    with wirehall_run(
        free_port(), log, "--http", request.param, "--head-timeout", str(HEAD_TIMEOUT), ws=server_ws
    ) as server:
        yield server


async def test_a_websocket_outlives_the_head_timeout(limited_ws_server: RunningServer) -> None:
    async with connect(f"{limited_ws_server.ws_url}/ws/echo") as ws:
        with pytest.raises(TimeoutError):  # nothing comes, and nothing closes it
            await asyncio.wait_for(ws.recv(), HEAD_TIMEOUT * 1.5)
        await ws.send("still here")
        assert await ws.recv() == "still here"
