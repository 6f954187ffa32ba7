"""Two server processes on one Redis act as one: delivery, presence, crashes, lost connections.

Each test starts two `wirehall run` processes of tests/backplane/_room_app.py on free
ports with WIREHALL_BACKPLANE set to the test's Redis URL, and drives them with real
WebSocket clients (the `websockets` library).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
import redis
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect

from tests._servers import stop_process, wait_until_serving
from tests.backplane._private_redis import PrivateRedis, running_private_redis
from tests.conftest import free_port

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parents[2]
HEARTBEAT_TTL = 1.5  # seconds a killed process stays in presence at most (plus one beat)
HEARTBEAT_INTERVAL = 0.4


def _without_query(url: str) -> str:
    return urlsplit(url)._replace(query="").geturl()


@pytest.fixture
def backplane_url(redis_url: str) -> Iterator[str]:
    """The test's Redis URL with a short heartbeat expiry; its keys are deleted afterwards."""
    yield f"{redis_url}&heartbeat_ttl={HEARTBEAT_TTL}&connect_timeout=1&command_timeout=1"
    prefix = dict(parse_qsl(urlsplit(redis_url).query))["prefix"]
    with redis.Redis.from_url(_without_query(redis_url), socket_timeout=5) as client:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A redis-server of this test's own, which it may kill and restart."""
    yield from running_private_redis()


class Server:
    """One `wirehall run` process of the room app."""

    def __init__(self, backplane_url: str, log_path: Path, ws: str) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.node = ""
        env = {
            **os.environ,
            "WIREHALL_BACKPLANE": backplane_url,
            "ROOM_APP_HEARTBEAT": str(HEARTBEAT_INTERVAL),
            "PYTHONUNBUFFERED": "1",
        }
        command = [sys.executable, "-m", "wirehall.cli", "run", "tests.backplane._room_app:app"]
        command += ["--port", str(self.port), "--no-access-log", "--log-level", "info", "--ws", ws]
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws(self, room: str, user: str) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/{room}?user={user}"

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def is_running(self) -> bool:
        return self.process.poll() is None

    async def wait_ready(self, timeout: float = 30) -> None:
        response = await asyncio.to_thread(
            wait_until_serving, self.process, f"{self.http}/healthz", timeout=timeout, log=lambda: self.log
        )
        assert response.status_code == 200, self.log
        self.node = response.json()["node"]

    async def presence(self, room: str) -> dict[str, str]:
        async with httpx.AsyncClient(timeout=5, trust_env=False) as client:
            response = await client.get(f"{self.http}/presence/{room}")
            response.raise_for_status()
            members: dict[str, str] = response.json()["members"]
            return members

    def stop(self) -> None:
        stop_process(self.process)

    def kill(self) -> None:
        stop_process(self.process, signal.SIGKILL)


@pytest.fixture
async def servers(backplane_url: str, tmp_path: Path, server_ws: str) -> AsyncIterator[list[Server]]:
    started = [Server(backplane_url, tmp_path / f"server-{i}.log", server_ws) for i in range(2)]
    try:
        await asyncio.gather(*(server.wait_ready() for server in started))
        yield started
    finally:
        for server in started:
            server.stop()


class Client:
    """A WebSocket client that records every frame it receives."""

    def __init__(self, connection: ClientConnection, name: str) -> None:
        self.connection = connection
        self.name = name
        self.frames: list[dict[str, Any]] = []
        self.closed = False
        self._changed = asyncio.Event()
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for frame in self.connection:
                self.frames.append(json.loads(frame))
                self._changed.set()
        finally:
            self.closed = True
            self._changed.set()

    async def wait_for(self, done: Callable[[Client], bool], timeout: float = 10) -> None:
        async with asyncio.timeout(timeout):
            while not done(self):
                if self.closed:
                    raise AssertionError(f"{self.name} was disconnected: {self.frames[-3:]}")
                self._changed.clear()
                await self._changed.wait()

    def texts(self) -> list[str]:
        return [frame["text"] for frame in self.frames if frame["type"] == "message"]

    def users(self) -> list[str] | None:
        lists = [frame["users"] for frame in self.frames if frame["type"] == "presence"]
        return lists[-1] if lists else None

    def sees(self, users: list[str]) -> Callable[[Client], bool]:
        return lambda client: client.users() == users


@pytest.fixture
async def clients() -> AsyncIterator[Callable[[str, str], Any]]:
    made: list[Client] = []

    async def open_client(url: str, name: str) -> Client:
        client = Client(await connect(url, open_timeout=10), name)
        made.append(client)
        await client.wait_for(lambda c: any(f["type"] == "welcome" for f in c.frames))
        return client

    yield open_client
    for client in made:
        await client.connection.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.task, timeout=5)


async def _kill_connections(redis_url: str, nodes: list[str], *, subscriber_only: bool) -> int:
    """CLIENT KILL the Redis connections of these nodes (found by their CLIENT SETNAME)."""
    names = {f"wirehall-sub-{node}" for node in nodes}
    if not subscriber_only:
        names |= {f"wirehall-{node}" for node in nodes}
    async with aioredis.Redis.from_url(_without_query(redis_url), socket_timeout=5) as admin:
        ids = [c["id"] for c in await admin.client_list() if c["name"] in names]
        for client_id in ids:
            await admin.client_kill_filter(_id=client_id)
    return len(ids)


def _assert_healthy(servers: list[Server]) -> None:
    for server in servers:
        assert server.is_running, server.log
        assert "Traceback" not in server.log, server.log


async def test_every_member_gets_every_message_once_in_one_order_and_presence_is_the_union(
    servers: list[Server], clients: Callable[[str, str], Any]
) -> None:
    one, two = servers
    members = [
        await clients(one.ws("lobby", "ann"), "ann@1"),
        await clients(one.ws("lobby", "bob"), "bob@1"),
        await clients(two.ws("lobby", "cyd"), "cyd@2"),
        await clients(two.ws("lobby", "dan"), "dan@2"),
    ]
    everyone = ["ann", "bob", "cyd", "dan"]
    for member in members:
        await member.wait_for(member.sees(everyone))
    union = await one.presence("lobby")
    assert sorted(union.values()) == everyone
    assert await two.presence("lobby") == union
    assert {member_id.partition(".")[0] for member_id in union} == {one.node, two.node}

    per_sender = 60
    await asyncio.gather(
        *(member.connection.send(f"{member.name}:{i}") for i in range(per_sender) for member in members)
    )
    total = per_sender * len(members)
    for member in members:
        await member.wait_for(lambda c: len(c.texts()) >= total, timeout=20)
    await members[0].connection.send("the end")  # in the room's one order, after any copy
    for member in members:
        await member.wait_for(lambda c: "the end" in c.texts())
    order = members[0].texts()
    assert order.pop() == "the end"
    assert len(order) == total
    assert len(set(order)) == total  # once each
    for member in members:
        assert member.texts() == [*order, "the end"]  # one order, on both processes
    for sender in members:
        sent = [text for text in order if text.startswith(f"{sender.name}:")]
        assert sent == [f"{sender.name}:{i}" for i in range(per_sender)]
    _assert_healthy(servers)


async def test_a_killed_process_leaves_presence_within_the_heartbeat_expiry(
    servers: list[Server], clients: Callable[[str, str], Any]
) -> None:
    one, two = servers
    ann = await clients(one.ws("lobby", "ann"), "ann@1")
    await clients(two.ws("lobby", "zed"), "zed@2")
    await ann.wait_for(ann.sees(["ann", "zed"]))

    two.kill()  # SIGKILL: no goodbye, its presence stays in Redis until it expires
    killed_at = time.monotonic()
    await ann.wait_for(ann.sees(["ann"]), timeout=HEARTBEAT_TTL + 10)
    # The expiry plus one heartbeat, and slack for a busy machine.
    assert time.monotonic() - killed_at < HEARTBEAT_TTL + HEARTBEAT_INTERVAL + 3
    assert sorted((await one.presence("lobby")).values()) == ["ann"]
    await ann.connection.send("still here")
    await ann.wait_for(lambda c: "still here" in c.texts())
    _assert_healthy([one])


@pytest.mark.parametrize("subscriber_only", [True, False], ids=["subscriber", "all-connections"])
async def test_client_kill_mid_run_resumes_delivery_and_servers_survive(
    servers: list[Server],
    clients: Callable[[str, str], Any],
    redis_url: str,
    subscriber_only: bool,
) -> None:
    one, two = servers
    ann = await clients(one.ws("lobby", "ann"), "ann@1")
    cyd = await clients(two.ws("lobby", "cyd"), "cyd@2")
    for member in (ann, cyd):
        await member.wait_for(member.sees(["ann", "cyd"]))
    stop = asyncio.Event()

    async def talk(member: Client) -> None:
        i = 0
        while not stop.is_set():
            await member.connection.send(f"{member.name}:{i}")
            i += 1
            await asyncio.sleep(0.01)

    talking = [asyncio.create_task(talk(member)) for member in (ann, cyd)]
    await cyd.wait_for(lambda c: len(c.texts()) >= 40)
    killed = await _kill_connections(redis_url, [one.node, two.node], subscriber_only=subscriber_only)
    assert killed >= 2
    seen = {member.name: len(member.texts()) for member in (ann, cyd)}
    # Delivery resumes in both directions, on both processes.
    for member in (ann, cyd):
        await member.wait_for(
            lambda c: (
                sum(t.startswith("ann@1:") for t in c.texts()[seen[c.name] :]) >= 20
                and sum(t.startswith("cyd@2:") for t in c.texts()[seen[c.name] :]) >= 20
            ),
            timeout=20,
        )
    stop.set()
    await asyncio.gather(*talking)
    await ann.connection.send("the end")
    for member in (ann, cyd):
        await member.wait_for(lambda c: "the end" in c.texts())
        for sender in ("ann@1", "cyd@2"):
            numbers = [int(t.split(":")[1]) for t in member.texts() if t.startswith(f"{sender}:")]
            assert numbers == sorted(set(numbers))  # in order and none twice; a few may be lost
        assert not member.closed
    assert sorted((await two.presence("lobby")).values()) == ["ann", "cyd"]
    _assert_healthy(servers)
    for server in servers:
        assert "lost the Redis subscriber connection" in server.log
        assert "reconnected to Redis" in server.log


async def test_a_redis_outage_is_survived_and_delivery_and_presence_come_back(
    private_redis: PrivateRedis, clients: Callable[[str, str], Any], tmp_path: Path, server_ws: str
) -> None:
    url = f"{private_redis.url}?heartbeat_ttl={HEARTBEAT_TTL}&connect_timeout=0.5&command_timeout=0.5"
    servers = [Server(url, tmp_path / f"server-{i}.log", server_ws) for i in range(2)]
    try:
        await asyncio.gather(*(server.wait_ready() for server in servers))
        one, two = servers
        ann = await clients(one.ws("lobby", "ann"), "ann@1")
        cyd = await clients(two.ws("lobby", "cyd"), "cyd@2")
        for member in (ann, cyd):
            await member.wait_for(member.sees(["ann", "cyd"]))

        private_redis.kill()  # no persistence: everything in it is gone
        await ann.connection.send("only here")
        # this process's members still get it; the other process cannot
        await ann.wait_for(lambda c: "only here" in c.texts())
        assert "only here" not in cyd.texts()
        async with asyncio.timeout(10):  # both survive failing heartbeats
            while True:
                if all("backplane heartbeat failed" in server.log for server in servers):
                    break
                await asyncio.sleep(0.05)
        _assert_healthy(servers)

        await asyncio.to_thread(private_redis.start)  # same port, empty
        # Each node resubscribes on its own schedule (backoff); until then its side misses
        # what is published (pub/sub keeps nothing), so probe both ways until both arrive.
        async with asyncio.timeout(20):
            while "back" not in cyd.texts() or "and forth" not in ann.texts():
                await ann.connection.send("back")
                await cyd.connection.send("and forth")
                await asyncio.sleep(0.2)
        # Both nodes wrote their presence back; the rooms were announced again.
        for server in servers:
            for _ in range(100):
                if sorted((await server.presence("lobby")).values()) == ["ann", "cyd"]:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"presence was not restored:\n{server.log}")
        for member in (ann, cyd):
            assert not member.closed
            assert member.users() == ["ann", "cyd"]
        _assert_healthy(servers)
        for server in servers:
            assert "reconnected to Redis" in server.log
    finally:
        for server in servers:
            server.stop()
