"""Two chat processes on one database (SQLite file or PostgreSQL) and one Redis: order and faults.

Each test starts two `wirehall run examples.chat:app` processes and drives them with real
clients (`websockets`, httpx). The order scenario uses the shared Redis (a key prefix of
its own); the fault tests start a redis-server of their own, which they stop, pause and
start again by its PID.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, closing, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.backplane._private_redis import PrivateRedis, running_private_redis
from tests.conftest import postgres_execute
from tests.examples.chat_server import ChatClient, ChatServer, chat_client, running_pair

pytestmark = pytest.mark.redis

WAIT = 10.0  # seconds a single request or frame may take
# Short Redis timeouts, so that a stalled or lost Redis is noticed within a couple of seconds.
FAULT_OPTIONS = "connect_timeout=1&command_timeout=1&ping_interval=1"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The database both processes share: one SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'chat.db'}"
    url: str = request.getfixturevalue("postgres_database_url")
    return url


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A redis-server of this test's own, which it may stop, pause and start again."""
    yield from running_private_redis()


@pytest.fixture
def shared_redis_pair(
    tmp_path: Path, database_url: str, redis_url: str, server_ws: str
) -> Iterator[tuple[ChatServer, ChatServer]]:
    with running_pair(database_url, redis_url, tmp_path, server_ws) as pair:
        yield pair


@pytest.fixture
def pair(
    tmp_path: Path, database_url: str, private_redis: PrivateRedis, server_ws: str
) -> Iterator[tuple[ChatServer, ChatServer]]:
    with running_pair(database_url, f"{private_redis.url}?{FAULT_OPTIONS}", tmp_path, server_ws) as servers:
        yield servers


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False, timeout=WAIT) as client:
        yield client


async def post(
    http: httpx.AsyncClient, server: ChatServer, room: str, user: str, text: str
) -> dict[str, Any]:
    response = await http.post(
        f"{server.http_url}/api/rooms/{room}/messages", json={"user": user, "text": text}
    )
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def stored_ids(http: httpx.AsyncClient, server: ChatServer, room: str) -> list[int]:
    """Every stored message id of `room`, oldest first (paging through the HTTP API)."""
    ids: list[int] = []
    while True:
        response = await http.get(
            f"{server.http_url}/api/rooms/{room}/messages",
            params={"since": ids[-1] if ids else 0, "limit": 500},
        )
        assert response.status_code == 200, response.text
        page = [m["id"] for m in response.json()["messages"]]
        if not page:
            return ids
        ids += page


def assert_has_exactly(client: ChatClient, stored: list[int]) -> None:
    """The client's ids are the stored ones from the first in its welcome on: in order, once each."""
    start = stored.index(client.history[0]["id"]) if client.history else 0
    expected = stored[start:]
    got = client.ids
    assert got == expected, (
        f"{client.name}: out of order, repeated or missing ids: "
        f"missing {sorted(set(expected) - set(got))}, unexpected {sorted(set(got) - set(expected))}, "
        f"repeated {sorted({i for i in got if got.count(i) > 1})}, "
        f"first wrong place {next((n for n, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b), None)}"
    )


def has_id(message_id: int) -> Any:
    return lambda client: message_id in client.ids


# ---- order: posters and joiners on both processes ---------------------------------------------------


async def test_joiners_get_every_message_once_in_order_while_both_processes_post(
    shared_redis_pair: tuple[ChatServer, ChatServer], http: httpx.AsyncClient
) -> None:
    servers = shared_redis_pair
    per_poster, joiners = 120, 24
    rng = random.Random(20261204)
    total = 2 * per_poster
    # Each joiner connects once this many messages were acknowledged: random moments, spread
    # over the whole posting, some before the first message and after the last.
    moments = sorted(rng.randrange(-5, total + 5) for _ in range(joiners))
    posted = 0
    progress = asyncio.Condition()
    clients: list[ChatClient] = []

    async def poster(name: str, offset: int) -> None:
        nonlocal posted
        for i in range(per_poster):
            await post(http, servers[(i + offset) % 2], "lobby", name, f"{name} {i}")
            async with progress:
                posted += 1
                progress.notify_all()

    async with AsyncExitStack() as stack:

        async def joiner(number: int, moment: int) -> None:
            async with progress:
                await progress.wait_for(lambda: posted >= moment)
            server = servers[number % 2]
            clients.append(await stack.enter_async_context(chat_client(server, "lobby", f"j{number}")))

        async with asyncio.timeout(40):
            await asyncio.gather(
                poster("p", 0), poster("q", 1), *(joiner(n, moment) for n, moment in enumerate(moments))
            )
            stored = await stored_ids(http, servers[0], "lobby")
            assert len(stored) == total
            assert await stored_ids(http, servers[1], "lobby") == stored
            for client in clients:
                await client.wait(has_id(stored[-1]), WAIT, f"message {stored[-1]} did not arrive")
        assert len(clients) == joiners
        for client in clients:
            assert_has_exactly(client, stored)
            assert client.errors == []
            assert client.close_code is None


# ---- Redis stopped, paused; the database unwritable ----------------------------------------------------


async def test_messages_posted_while_redis_is_down_reach_the_other_process_once_it_is_back(
    pair: tuple[ChatServer, ChatServer], private_redis: PrivateRedis, http: httpx.AsyncClient
) -> None:
    one, two = pair
    async with chat_client(one, "lobby", "ann") as ann, chat_client(two, "lobby", "bob") as bob:
        first = await post(http, two, "lobby", "cid", "before")
        await ann.wait(has_id(first["id"]), WAIT, "the first message did not arrive")
        private_redis.kill()
        during = [(await post(http, two, "lobby", "cid", f"while down {i}"))["id"] for i in range(5)]
        await bob.wait(has_id(during[-1]), WAIT, "the posting process's client missed messages")
        private_redis.start()  # same port: the servers reconnect by themselves
        # No later post: the other process catches its clients up when Redis is back.
        await ann.wait(has_id(during[-1]), WAIT + 5, "messages stored while Redis was down did not arrive")
        stored = await stored_ids(http, one, "lobby")
        assert stored == [first["id"], *during]
        for client in (ann, bob):
            assert_has_exactly(client, stored)
            assert client.close_code is None
        after = await post(http, one, "lobby", "cid", "after")
        for client in (ann, bob):
            await client.wait(has_id(after["id"]), WAIT, "a message after the outage did not arrive")
            assert_has_exactly(client, [*stored, after["id"]])


async def test_a_process_catches_up_from_the_database_when_the_poster_is_gone_before_redis_is_back(
    pair: tuple[ChatServer, ChatServer], private_redis: PrivateRedis, http: httpx.AsyncClient
) -> None:
    # The posting process stops while Redis is down, so it cannot publish its messages again:
    # the other process must fetch them from the database once Redis is back.
    one, two = pair
    async with chat_client(one, "lobby", "ann") as ann:
        first = await post(http, two, "lobby", "cid", "before")
        await ann.wait(has_id(first["id"]), WAIT, "the first message did not arrive")
        private_redis.kill()
        during = [(await post(http, two, "lobby", "cid", f"while down {i}"))["id"] for i in range(3)]
        await asyncio.to_thread(two.stop)
        private_redis.start()
        await ann.wait(has_id(during[-1]), WAIT + 5, "messages stored while Redis was down did not arrive")
        assert_has_exactly(ann, [first["id"], *during])
        assert ann.close_code is None


async def test_a_paused_redis_stalls_neither_posts_nor_the_database(
    pair: tuple[ChatServer, ChatServer], private_redis: PrivateRedis, http: httpx.AsyncClient
) -> None:
    one, two = pair
    pause = 4.0  # longer than the servers' Redis timeouts (1 s): they notice
    bound = 1.5  # what a post may take meanwhile
    async with (
        chat_client(one, "lobby", "ann") as ann,
        chat_client(two, "lobby", "bob") as bob,
        chat_client(two, "other", "cid") as cid,
    ):
        await ann.wait(lambda c: c.users == ["ann", "bob"], WAIT, "presence did not show bob")
        private_redis.pause()
        paused_at = time.monotonic()
        slowest = 0.0
        number = 0
        try:
            # Posts through both processes, to the room with members on both and to another.
            while time.monotonic() - paused_at < pause:
                for server, room in ((one, "lobby"), (two, "lobby"), (two, "other")):
                    started = time.monotonic()
                    await asyncio.wait_for(post(http, server, room, "dan", f"paused {number}"), bound)
                    slowest = max(slowest, time.monotonic() - started)
                    number += 1
                await asyncio.sleep(0.1)  # pacing: about 20 posts a second, not a synchronisation
        finally:
            private_redis.resume()
        assert slowest < bound
        lobby = await stored_ids(http, one, "lobby")
        other = await stored_ids(http, two, "other")
        assert len(lobby) + len(other) == number
        for client, stored in ((ann, lobby), (bob, lobby), (cid, other)):
            await client.wait(has_id(stored[-1]), WAIT + 5, "messages posted during the pause did not arrive")
            assert_has_exactly(client, stored)


async def test_posts_to_a_database_that_cannot_be_written_answer_503_and_broadcast_nothing(
    database_url: str, tmp_path: Path, redis_url: str, http: httpx.AsyncClient, server_ws: str
) -> None:
    with running_pair(database_url, redis_url, tmp_path, server_ws) as (one, two):
        async with chat_client(one, "lobby", "ann") as ann, chat_client(two, "lobby", "bob") as bob:
            first = await post(http, one, "lobby", "cid", "stored")
            await bob.wait(has_id(first["id"]), WAIT, "the first message did not arrive")
            with refusing_writes(database_url):
                for server in (one, two, one):
                    response = await http.post(
                        f"{server.http_url}/api/rooms/lobby/messages", json={"user": "cid", "text": "lost"}
                    )
                    assert response.status_code == 503, response.text
                    assert "error" in response.json()
                await ann.ws.send('{"type": "message", "text": "lost too"}')
                await ann.wait(lambda c: bool(c.errors), WAIT, "no error frame for a message not stored")
            later = await post(http, two, "lobby", "cid", "stored again")
            for client in (ann, bob):
                await client.wait(has_id(later["id"]), WAIT, "the message after recovery did not arrive")
                assert client.live_ids == [first["id"], later["id"]]  # nothing from the failed posts
            assert later["id"] > first["id"]
            assert await stored_ids(http, one, "lobby") == [first["id"], later["id"]]
            assert ann.close_code is None


REFUSE_SQLITE = """
CREATE TRIGGER refuse_writes BEFORE UPDATE OF last_id ON rooms
BEGIN SELECT RAISE(ABORT, 'the disk is full (a test refuses writes)'); END;
"""
REFUSE_POSTGRES = [
    """CREATE FUNCTION refuse_writes() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN RAISE EXCEPTION 'the disk is full (a test refuses writes)'; END $$""",
    """CREATE CONSTRAINT TRIGGER refuse_writes AFTER INSERT ON messages
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_writes()""",
]


@contextmanager
def refusing_writes(database_url: str) -> Iterator[None]:
    """Make the chat's database fail every message write while the block runs, from outside.

    SQLite fails the transaction's last statement (after the insert and the room's seq bump);
    PostgreSQL fails the commit itself. Either way the servers must roll back, send nothing
    and not give the ids away.
    """
    if database_url.startswith("sqlite"):
        path = database_url.split(":///", 1)[1]
        with closing(sqlite3.connect(path, timeout=10)) as db:
            db.executescript(REFUSE_SQLITE)
        try:
            yield
        finally:
            with closing(sqlite3.connect(path, timeout=10)) as db:
                db.executescript("DROP TRIGGER refuse_writes;")
        return
    url = database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    postgres_execute(url, *REFUSE_POSTGRES)
    try:
        yield
    finally:
        postgres_execute(url, "DROP TRIGGER refuse_writes ON messages", "DROP FUNCTION refuse_writes()")


async def test_the_api_answers_503_not_500_while_redis_is_down(
    pair: tuple[ChatServer, ChatServer], private_redis: PrivateRedis, http: httpx.AsyncClient
) -> None:
    one, _ = pair
    await post(http, one, "lobby", "ann", "hi")
    private_redis.kill()
    for method, path in (
        ("GET", "/api/rooms"),
        ("GET", "/api/rooms?limit=5"),
        ("GET", "/api/rooms/lobby/messages"),
        ("POST", "/api/rooms/lobby/messages"),
        ("GET", "/healthz"),
    ):
        response = await http.request(
            method, one.http_url + path, json={"user": "ann", "text": "x"} if method == "POST" else None
        )
        assert response.status_code < 500 or response.status_code == 503, (path, response.text)
        if response.status_code == 503:
            assert "error" in response.json()
    assert (await http.get(one.http_url + "/api/rooms")).status_code == 503
    # A join cannot be announced without Redis: the client is told to come back (1013).
    async with chat_client(one, "other", "bob", welcome=False) as bob:
        await bob.wait(lambda c: c.close_code is not None, WAIT, "the join was not closed")
        assert bob.close_code == 1013
