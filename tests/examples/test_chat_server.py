"""The chat example against its contract over the network: `wirehall run` in a subprocess.

Clients are the `websockets` library and httpx, as any outside client would be.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import signal
import socket
import string
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.conftest import free_port
from tests.examples.chat_server import ChatServer, running

TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00")
WAIT = 10.0  # seconds any single frame may take


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'chat.db'}"


@pytest.fixture
def chat_env(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Environment for the server: parametrize indirectly with a dict to set some."""
    for name, value in getattr(request, "param", {}).items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def server(
    tmp_path: Path, database_url: str, unused_port: int, chat_env: None, server_ws: str
) -> Iterator[ChatServer]:
    with running(ChatServer(unused_port, database_url, tmp_path / "server.log", ws=server_ws)) as chat:
        yield chat


@pytest.fixture
async def http(server: ChatServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.http_url, trust_env=False, timeout=WAIT) as client:
        yield client


@asynccontextmanager
async def socket_to(server: ChatServer, room: str, **query: Any) -> AsyncIterator[ClientConnection]:
    async with connect(server.ws_url(room, **query), proxy=None, open_timeout=WAIT, close_timeout=WAIT) as ws:
        yield ws


async def frame(ws: ClientConnection) -> dict[str, Any]:
    data = await asyncio.wait_for(ws.recv(), WAIT)
    assert isinstance(data, str), "the chat sends text frames only"
    return json.loads(data)  # type: ignore[no-any-return]


async def frame_of(ws: ClientConnection, kind: str, **fields: Any) -> dict[str, Any]:
    """The next frame of `kind` with those fields, skipping the welcome and presence updates."""
    while True:
        got = await frame(ws)
        if got["type"] == kind and all(got.get(k) == v for k, v in fields.items()):
            return got
        assert got["type"] in ("welcome", "presence"), f"expected {kind} {fields}, got {got}"


async def close_code(ws: ClientConnection) -> int:
    """Read until the server closes; the close code it sent."""
    with pytest.raises(ConnectionClosed) as closed:  # noqa: PT012  # reads until the close
        while True:
            await asyncio.wait_for(ws.recv(), WAIT)
    received = closed.value.rcvd
    assert received is not None, "the server dropped the connection without a close frame"
    return received.code


async def post(http: httpx.AsyncClient, room: str, user: str, text: str) -> dict[str, Any]:
    response = await http.post(f"/api/rooms/{room}/messages", json={"user": user, "text": text})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_serves_health_and_the_page(http: httpx.AsyncClient) -> None:
    health = await http.get("/healthz")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    page = await http.get("/")
    assert page.status_code == 200
    assert 'data-testid="messages"' in page.text
    assert (await http.get("/static/chat.js")).status_code == 200


async def test_a_conversation(server: ChatServer, http: httpx.AsyncClient) -> None:
    async with socket_to(server, "lobby", user="ann") as ann:
        assert await frame(ann) == {"type": "welcome", "room": "lobby", "user": "ann", "history": []}
        assert await frame(ann) == {"type": "presence", "room": "lobby", "users": ["ann"]}
        async with socket_to(server, "lobby", user="bob") as bob:
            assert (await frame(bob))["type"] == "welcome"
            await frame_of(bob, "presence", users=["ann", "bob"])
            await frame_of(ann, "presence", users=["ann", "bob"])
            await ann.send(json.dumps({"type": "message", "text": "hello bob"}))
            first = await frame_of(ann, "message")
            assert await frame_of(bob, "message") == first
            assert first["user"] == "ann"
            assert first["text"] == "hello bob"
            assert TS.fullmatch(first["ts"])
            second = await post(http, "lobby", "cid", "hello both")
            assert await frame_of(ann, "message") == second
            assert await frame_of(bob, "message") == second
            assert second["id"] > first["id"]
            await bob.send(json.dumps({"type": "ping"}))
            assert await frame(bob) == {"type": "pong"}
        await frame_of(ann, "presence", users=["ann"])
        rooms = (await http.get("/api/rooms")).json()
        assert rooms == {"rooms": [{"room": "lobby", "online": 1, "messages": 2}]}


@pytest.mark.parametrize(
    "query",
    [{}, {"user": ""}, {"user": " "}, {"user": "u" * 33}, {"user": "a\x07b"}, {"user": "ann", "since": "x"}],
)
async def test_bad_user_refuses_the_handshake_with_403(
    server: ChatServer, http: httpx.AsyncClient, query: dict[str, str]
) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with socket_to(server, "lobby", **query):
            pass
    assert refused.value.response.status_code == 403
    assert (await http.get("/api/rooms")).json() == {"rooms": []}


@pytest.mark.parametrize("room", ["has%20space", "dot.ted", "r" * 65, "%C3%BC"])
async def test_bad_room_refuses_the_handshake_with_403(server: ChatServer, room: str) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with socket_to(server, room, user="ann"):
            pass
    assert refused.value.response.status_code == 403


async def test_error_frames_keep_the_connection(server: ChatServer, http: httpx.AsyncClient) -> None:
    async with socket_to(server, "lobby", user="ann") as ws:
        await frame_of(ws, "presence", users=["ann"])
        for bad in ("{", "[]", '{"type": "nope"}', '{"type": "message"}', '{"type": "message", "text": " "}'):
            await ws.send(bad)
            error = await frame(ws)
            assert error["type"] == "error"
            assert isinstance(error["error"], str)
        await ws.send(json.dumps({"type": "ping"}))
        assert await frame(ws) == {"type": "pong"}
    assert (await http.get("/api/rooms/lobby/messages")).json()["messages"] == []


async def test_binary_frame_closes_with_1003(server: ChatServer) -> None:
    async with socket_to(server, "lobby", user="ann") as ws:
        await frame_of(ws, "presence", users=["ann"])
        await ws.send(b'{"type": "ping"}')
        assert await close_code(ws) == 1003


async def test_message_over_64_kib_closes_with_1009(server: ChatServer, http: httpx.AsyncClient) -> None:
    async with socket_to(server, "lobby", user="ann") as ws:
        await frame_of(ws, "presence", users=["ann"])
        await ws.send(json.dumps({"type": "message", "text": "x" * 65536}))
        assert await close_code(ws) == 1009
    assert (await http.get("/api/rooms/lobby/messages")).json()["messages"] == []


async def test_http_errors(http: httpx.AsyncClient) -> None:
    assert (await http.get("/nope")).status_code == 404
    not_allowed = await http.delete("/api/rooms/lobby/messages")
    assert not_allowed.status_code == 405
    assert {"GET", "POST"} <= {m.strip() for m in not_allowed.headers["allow"].split(",")}
    for query in ("limit=501", "limit=0", "since=abc"):
        bad = await http.get(f"/api/rooms/lobby/messages?{query}")
        assert bad.status_code == 400
        assert "error" in bad.json()
    bad_body = await http.post(
        "/api/rooms/lobby/messages", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert bad_body.status_code == 400
    assert "error" in bad_body.json()


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    path=st.text(alphabet=string.printable, max_size=40),
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
    body=st.binary(max_size=40),
)
async def test_no_raw_request_gives_a_500(server: ChatServer, path: str, method: str, body: bytes) -> None:
    # Raw bytes on a socket, so nothing in a client library tidies the request up first.
    target = "/" + "".join(c if c.isprintable() and c not in " #" else f"%{ord(c):02X}" for c in path)
    request = (
        f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
        "Content-Type: application/json\r\nConnection: close\r\n\r\n"
    ).encode() + body
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", server.port), WAIT)
    try:
        writer.write(request)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), WAIT)
    finally:
        writer.close()
    status = int(status_line.split()[1])
    assert status < 500, (target, status_line)


# ---- resume, restart and shutdown ------------------------------------------------------------


async def test_resume_across_a_server_restart_loses_nothing(server: ChatServer) -> None:
    async with httpx.AsyncClient(base_url=server.http_url, trust_env=False, timeout=WAIT) as http:
        before = [await post(http, "lobby", "bob", f"before {i}") for i in range(3)]
    async with socket_to(server, "lobby", user="ann") as ws:
        welcome = await frame(ws)
        assert welcome["history"] == before
        last_seen = welcome["history"][-1]["id"]
        await asyncio.to_thread(server.stop)
        assert await close_code(ws) in (1001, 1012)
    await asyncio.to_thread(server.start)
    async with httpx.AsyncClient(base_url=server.http_url, trust_env=False, timeout=WAIT) as http:
        missed = [await post(http, "lobby", "bob", f"while away {i}") for i in range(3)]
        assert (await http.get("/api/rooms/lobby/messages")).json()["messages"] == before + missed
    async with socket_to(server, "lobby", user="ann", since=last_seen) as ws:
        welcome = await frame(ws)
        assert welcome["history"] == missed
        assert missed[0]["id"] > before[-1]["id"]


async def test_sigterm_closes_every_socket_with_a_close_frame(server: ChatServer) -> None:
    async with (
        socket_to(server, "lobby", user="ann") as ann,
        socket_to(server, "lobby", user="bob") as bob,
        socket_to(server, "other", user="cid") as cid,
    ):
        for ws in (ann, bob, cid):
            assert (await frame(ws))["type"] == "welcome"
        await frame_of(ann, "presence", users=["ann", "bob"])
        stopping = asyncio.create_task(asyncio.to_thread(server.stop, signal.SIGTERM))
        codes = await asyncio.gather(close_code(ann), close_code(bob), close_code(cid))
        assert set(codes) <= {1001, 1012}, codes
        # uvicorn shuts down gracefully, then exits by the signal it caught
        assert await stopping in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in server.log()


# ---- slow consumers ----------------------------------------------------------------------------


@pytest.mark.parametrize("chat_env", [{"CHAT_RATE_LIMIT": "0"}], indirect=True)  # the fast client floods
async def test_a_slow_reader_is_dropped_and_the_room_goes_on(server: ChatServer) -> None:
    # A client that stops reading, with a small receive buffer and no compression (so the
    # server's buffers fill), while a fast client keeps posting and reading.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port)), WAIT)
    slow = await connect(
        server.ws_url("lobby", user="slow"),
        sock=sock,
        proxy=None,
        max_queue=1,
        compression=None,
        ping_interval=None,
        open_timeout=WAIT,
    )
    try:
        async with socket_to(server, "lobby", user="fast") as fast:
            await frame_of(fast, "presence", users=["fast", "slow"])
            rng = random.Random(7)
            sent = 0
            dropped = False
            ids: list[int] = []
            while not dropped and sent < 12000:
                text = "".join(rng.choices(string.ascii_letters + string.digits, k=2000))
                await fast.send(json.dumps({"type": "message", "text": text}))
                sent += 1
                while len(ids) < sent:  # the fast client reads each message as it comes
                    got = await frame(fast)
                    if got["type"] == "message":
                        ids.append(got["id"])
                    elif got["type"] == "presence" and got["users"] == ["fast"]:
                        dropped = True
            assert dropped, f"the slow client was not dropped after {sent} messages"
            assert ids == sorted(ids)
        code = await close_code(slow)
        assert code in (1013, 1008)
    finally:
        await slow.close()
    assert "slow" in server.log()  # the server says why it dropped the client


# ---- several processes on Redis ------------------------------------------------------------------


@pytest.fixture
def redis_pair(
    tmp_path: Path, database_url: str, redis_url: str, server_ws: str
) -> Iterator[tuple[ChatServer, ChatServer]]:
    one = ChatServer(free_port(), database_url, tmp_path / "one.log", backplane=redis_url, ws=server_ws)
    two = ChatServer(free_port(), database_url, tmp_path / "two.log", backplane=redis_url, ws=server_ws)
    one.start()
    try:
        two.start()
        yield one, two
    finally:
        two.stop()
        one.stop()


@pytest.mark.redis
async def test_two_processes_on_redis_are_one_chat(redis_pair: tuple[ChatServer, ChatServer]) -> None:
    one, two = redis_pair
    async with (
        socket_to(one, "lobby", user="ann") as ann,
        socket_to(two, "lobby", user="bob") as bob,
        httpx.AsyncClient(trust_env=False, timeout=WAIT) as http,
    ):
        await frame_of(ann, "presence", users=["ann", "bob"])
        await frame_of(bob, "presence", users=["ann", "bob"])
        await ann.send(json.dumps({"type": "message", "text": "from one"}))
        first = await frame_of(bob, "message")
        assert await frame_of(ann, "message") == first
        response = await http.post(
            two.http_url + "/api/rooms/lobby/messages", json={"user": "cid", "text": "from two"}
        )
        second = response.json()
        assert await frame_of(ann, "message") == second
        assert await frame_of(bob, "message") == second
        assert second["id"] > first["id"]
        for server in (one, two):
            rooms = (await http.get(server.http_url + "/api/rooms")).json()["rooms"]
            assert rooms == [{"room": "lobby", "online": 2, "messages": 2}]
        for ws in (ann, bob):  # each message came once: a pong is next
            await ws.send(json.dumps({"type": "ping"}))
            assert await frame_of(ws, "pong") == {"type": "pong"}


@pytest.mark.redis
async def test_people_on_a_process_that_died_leave_the_presence(
    redis_pair: tuple[ChatServer, ChatServer],
) -> None:
    one, two = redis_pair
    async with socket_to(one, "lobby", user="ann") as ann:
        bob = await connect(two.ws_url("lobby", user="bob"), proxy=None, open_timeout=WAIT)
        try:
            await frame_of(ann, "presence", users=["ann", "bob"])
            await asyncio.to_thread(two.stop, signal.SIGKILL)  # no goodbye from its node
            # The dead node's liveness key expires (15 s) and a heartbeat (5 s) purges it.
            async with asyncio.timeout(45):
                while True:
                    got = json.loads(await ann.recv())
                    if got["type"] == "presence" and got["users"] == ["ann"]:
                        break
        finally:
            await bob.close()


@pytest.mark.redis
async def test_concurrent_posts_through_two_processes_arrive_in_id_order(
    redis_pair: tuple[ChatServer, ChatServer],
) -> None:
    one, two = redis_pair
    per_process = 60
    async with (
        socket_to(one, "lobby", user="ann") as ann,
        socket_to(two, "lobby", user="bob") as bob,
        httpx.AsyncClient(trust_env=False, timeout=WAIT) as http,
    ):
        await frame_of(ann, "presence", users=["ann", "bob"])
        await frame_of(bob, "presence", users=["ann", "bob"])

        async def poster(server: ChatServer, who: str) -> None:
            for i in range(per_process):
                response = await http.post(
                    server.http_url + "/api/rooms/lobby/messages", json={"user": who, "text": str(i)}
                )
                assert response.status_code == 201

        await asyncio.gather(*(poster(s, w) for s in (one, two) for w in ("p", "q")))
        for ws in (ann, bob):
            ids = [(await frame_of(ws, "message"))["id"] for _ in range(4 * per_process)]
            assert ids == sorted(ids), "messages arrived out of the order they were stored"
            assert len(set(ids)) == len(ids)
