"""A chat server whose PostgreSQL crashes and comes back: 503s meanwhile, then the same process recovers.

The test starts a PostgreSQL server of its own (tests/examples/_private_postgres.py) and one
`wirehall run examples.chat:app` process on it (memory backplane), and drives it with real
clients (`websockets`, httpx). It stops PostgreSQL as a crash would (`pg_ctl stop -m
immediate`, every pooled connection cut) and starts it again on the same port.

specs/chat.md's rules checked here: a database that is down gives a `503` with a JSON error,
never a `500` (HTTP API); bad WebSocket input gets an error frame and the connection stays
open, and a message is sent to clients only once it is stored; a `201` means the room's
clients get the message; a client that reconnects with `since` loses nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port
from tests.examples._private_postgres import PrivatePostgres, running_private_postgres
from tests.examples.chat_server import ChatClient, ChatServer, chat_client, running

pytestmark = pytest.mark.postgres

logger = logging.getLogger(__name__)

WAIT = 10.0  # seconds a frame may take to arrive in normal operation
BOUND = 5.0  # seconds any answer may take while the database is down: longer is a hang
RECOVERY = 15.0  # seconds the server may take to store messages again once the database is back


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A PostgreSQL server of this test's own, which it may crash and start again."""
    yield from running_private_postgres()


@pytest.fixture
def server(tmp_path: Path, private_postgres: PrivatePostgres, server_ws: str) -> Iterator[ChatServer]:
    """One chat process on the private PostgreSQL, memory backplane, stopped (by PID) afterwards."""
    with running(
        ChatServer(free_port(), private_postgres.database_url, tmp_path / "chat.log", ws=server_ws)
    ) as chat:
        yield chat


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    # A request that outlives BOUND fails the test as a hang, not as a slow success.
    async with httpx.AsyncClient(trust_env=False, timeout=BOUND) as client:
        yield client


async def post(http: httpx.AsyncClient, server: ChatServer, user: str, text: str) -> httpx.Response:
    return await http.post(f"{server.http_url}/api/rooms/lobby/messages", json={"user": user, "text": text})


async def posted(http: httpx.AsyncClient, server: ChatServer, user: str, text: str) -> dict[str, Any]:
    """Post to the lobby, which must answer 201; the stored message."""
    response = await post(http, server, user, text)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def assert_unavailable(response: httpx.Response) -> None:
    """The spec's answer for a database that is down: 503 with a JSON error."""
    assert response.status_code == 503, (response.request.url, response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    assert isinstance(response.json().get("error"), str), response.text


async def stored_messages(http: httpx.AsyncClient, server: ChatServer) -> list[dict[str, Any]]:
    """Every stored message of the lobby, oldest first, paging through the HTTP API in small pages."""
    found: list[dict[str, Any]] = []
    while True:
        response = await http.get(
            f"{server.http_url}/api/rooms/lobby/messages",
            params={"since": found[-1]["id"] if found else 0, "limit": 3},
        )
        assert response.status_code == 200, response.text
        page: list[dict[str, Any]] = response.json()["messages"]
        if not page:
            return found
        found += page


async def sent_over_websocket(client: ChatClient, text: str) -> dict[str, Any]:
    """Send `text` over the client's socket; the stored message, once it came back to the sender."""
    await client.ws.send(json.dumps({"type": "message", "text": text}))
    await client.wait(lambda c: any(m["text"] == text for m in c.live), WAIT, f"{text!r} did not come back")
    return next(m for m in client.live if m["text"] == text)


async def test_a_crashed_database_gives_503s_and_the_same_process_recovers_when_it_is_back(
    server: ChatServer, private_postgres: PrivatePostgres, http: httpx.AsyncClient
) -> None:
    acknowledged: list[dict[str, Any]] = []  # every message that answered 201 (or came back on the socket)
    async with chat_client(server, "lobby", "ann") as ann, chat_client(server, "lobby", "bob") as bob:
        async with chat_client(server, "lobby", "cid") as cid:
            for i in range(3):
                acknowledged.append(await posted(http, server, "dan", f"before {i}"))
            acknowledged.append(await sent_over_websocket(ann, "before, from ann"))
            for client in (bob, cid):
                await client.wait(
                    lambda c: c.live_ids == [m["id"] for m in acknowledged], WAIT, "messages did not arrive"
                )
            cid_last = cid.ids[-1]
        # cid is gone before the crash: it comes back with `since` once the database is.

        await asyncio.to_thread(private_postgres.crash)  # in a thread: the clients read meanwhile
        failed_texts = [f"while down {i}" for i in range(3)]
        for text in failed_texts:
            started = time.monotonic()
            assert_unavailable(await post(http, server, "dan", text))
            assert time.monotonic() - started < BOUND
        # A post over the socket gets an error frame; the socket stays open.
        await ann.ws.send(json.dumps({"type": "message", "text": "while down, from ann"}))
        await ann.wait(lambda c: len(c.errors) == 1, BOUND, "no error frame for a message not stored")
        assert ann.close_code is None
        for path in (
            "/api/rooms/lobby/messages",
            f"/api/rooms/lobby/messages?since={cid_last}",
            "/api/rooms",
        ):
            assert_unavailable(await http.get(server.http_url + path))
        # A join that needs the database (its history since an id) is told to come back
        # later (1013, as for a backplane that is down), not left waiting for its welcome.
        async with chat_client(server, "lobby", "eve", welcome=False, since=cid_last) as eve:
            await eve.wait(lambda c: c.close_code is not None, BOUND, "the join was not closed")
            assert eve.close_code == 1013
            assert eve.history is None
        assert (await http.get(server.http_url + "/healthz")).status_code == 200
        assert server.process is not None
        assert server.process.poll() is None

        # Same port and data: the server's pool must find it again by itself.
        await asyncio.to_thread(private_postgres.start)
        started = time.monotonic()
        statuses: list[int] = []
        while True:
            response = await post(http, server, "dan", f"after restart, attempt {len(statuses)}")
            statuses.append(response.status_code)
            if response.status_code == 201:
                acknowledged.append(response.json())
                break
            # Until it recovers, a post fails as during the outage: a 503, nothing stored.
            assert_unavailable(response)
            assert time.monotonic() - started < RECOVERY, (
                f"no post stored again within {RECOVERY} s: {statuses}"
            )
            await asyncio.sleep(0.2)  # pacing of the poll, not a synchronisation
        # How long the pool took to find the database again, for whoever reads the log.
        logger.info("posts stored again after %.2f s, answers %s", time.monotonic() - started, statuses)
        acknowledged.append(await sent_over_websocket(ann, "after, from ann"))
        for i in range(3):
            acknowledged.append(await posted(http, server, "dan", f"after {i}"))

        ids = [m["id"] for m in acknowledged]
        for client in (ann, bob):
            await client.wait(lambda c: ids[-1] in c.ids, WAIT, "messages after the restart did not arrive")
            # Nothing that failed was broadcast, nothing twice, in order; no socket closed.
            assert client.live_ids == ids
            assert client.close_code is None
        assert len(ann.errors) == 1
        assert bob.errors == []
        # The history is exactly what was acknowledged, in order: no failed post stored, no duplicate.
        stored = await stored_messages(http, server)
        assert [(m["id"], m["text"]) for m in stored] == [(m["id"], m["text"]) for m in acknowledged]

        # cid, back with the last id it saw, gets exactly what it missed, then live messages again.
        async with chat_client(server, "lobby", "cid", since=cid_last) as cid:
            assert cid.history is not None
            assert [m["id"] for m in cid.history] == [i for i in ids if i > cid_last]
            last = await posted(http, server, "dan", "welcome back")
            for client in (ann, bob, cid):
                await client.wait(lambda c: last["id"] in c.ids, WAIT, "the last message did not arrive")
            assert cid.live_ids == [last["id"]]


async def test_posts_in_flight_when_the_database_crashes_answer_201_or_503_and_each_201_is_delivered_once(
    server: ChatServer, private_postgres: PrivatePostgres, http: httpx.AsyncClient
) -> None:
    # Three posters post one after another without a pause while the database crashes and
    # comes back, so that some posts are in flight at the crash, on pooled connections it cuts.
    answers: list[tuple[str, int, float]] = []  # (text, status, seconds taken), in answer order
    acknowledged: dict[str, int] = {}  # text -> id, for each post that answered 201
    back = asyncio.Event()  # set once the database has been started again
    after_restart: set[str] = set()  # posters that had a 201 since

    async def poster(name: str) -> None:
        number = 0
        while name not in after_restart:
            text = f"{name} {number}"
            number += 1
            started = time.monotonic()
            response = await post(http, server, name, text)
            answers.append((text, response.status_code, time.monotonic() - started))
            if response.status_code == 201:
                acknowledged[text] = response.json()["id"]
                if back.is_set():
                    after_restart.add(name)
            else:
                assert_unavailable(response)
                await asyncio.sleep(0.05)  # pacing while it is down, not a synchronisation

    async with chat_client(server, "lobby", "ann") as ann, chat_client(server, "lobby", "bob") as bob:
        async with asyncio.timeout(RECOVERY + 2 * WAIT):
            posters = asyncio.gather(*(poster(name) for name in ("p", "q", "r")))
            await asyncio.sleep(0.5)
            await asyncio.to_thread(private_postgres.crash)
            await asyncio.sleep(1.0)
            await asyncio.to_thread(private_postgres.start)
            back.set()
            await posters
        logger.info(
            "%d posts: %d answered 201, %d answered 503; the slowest took %.2f s",
            len(answers),
            len(acknowledged),
            len(answers) - len(acknowledged),
            max(seconds for _, _, seconds in answers),
        )
        statuses = {status for _, status, _ in answers}
        assert statuses == {201, 503}, answers
        assert max(seconds for _, _, seconds in answers) < BOUND, answers
        ids = sorted(acknowledged.values())
        assert len(set(ids)) == len(ids)
        for client in (ann, bob):
            await client.wait(
                lambda c: ids[-1] in c.ids, WAIT, "the last acknowledged message did not arrive"
            )
            assert client.live_ids == ids, (client.name, set(client.live_ids) ^ set(ids), answers)
            assert client.close_code is None
        stored = await stored_messages(http, server)
        assert [(m["id"], m["text"]) for m in stored] == sorted(
            (message_id, text) for text, message_id in acknowledged.items()
        ), answers


async def test_a_restart_nobody_noticed_costs_no_post_and_no_read(
    server: ChatServer, private_postgres: PrivatePostgres, http: httpx.AsyncClient
) -> None:
    # The crash and the restart both happen between two posts: the server's pool still holds
    # connections the crash cut, and learns it only on using one. The store pings no
    # connection before use; a statement that fails on a cut connection is tried again once
    # on a fresh one (never a failed commit), so no request sees the restart at all.
    async with chat_client(server, "lobby", "ann") as ann:
        # Posts at once, so that the pool holds several connections, all cut by the crash.
        warm = await asyncio.gather(*(posted(http, server, "dan", f"before {i}") for i in range(8)))
        await asyncio.to_thread(private_postgres.crash)
        await asyncio.to_thread(private_postgres.start)
        statuses: list[int] = []
        after: list[dict[str, Any]] = []
        history = await http.get(f"{server.http_url}/api/rooms/lobby/messages")
        assert history.status_code == 200, history.text  # a read on a cut connection, read again
        await asyncio.to_thread(private_postgres.crash)
        await asyncio.to_thread(private_postgres.start)
        for i in range(4):
            response = await post(http, server, "dan", f"after {i}")
            statuses.append(response.status_code)
            if response.status_code == 201:
                after.append(response.json())
            else:
                assert_unavailable(response)
        logger.info("posts after a restart nobody noticed answered %s", statuses)
        assert statuses == [201] * 4, statuses
        ids = sorted(m["id"] for m in warm) + [m["id"] for m in after]
        await ann.wait(lambda c: ids[-1] in c.ids, WAIT, "messages after the restart did not arrive")
        assert ann.live_ids == ids
        assert ann.errors == []
        assert [m["id"] for m in await stored_messages(http, server)] == ids
