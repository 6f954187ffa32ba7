"""The chat example against its contract (specs/chat.md), in-process through TestClient.

The same contract is checked against a real server in test_chat_server.py and in a
browser in test_chat_browser.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from examples.chat import create_app
from examples.chat.app import STATIC
from examples.chat.config import ChatSettings
from examples.chat.store import Store
from wirehall import BackplaneError, ConfigurationError, WebSocketDisconnectError
from wirehall.backplane import MemoryBackplane, MemoryHub
from wirehall.testing import HandshakeRejectedError, TestClient

pytestmark = pytest.mark.usefixtures("websocket_path")  # every test here runs on both WebSocket paths

TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00")
TEST_IDS = ("name", "room", "join", "text", "send", "messages", "users", "status")
FIXTURE_CHECKS = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'chat.db'}"


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[TestClient]:
    app = create_app(ChatSettings(database_url=database_url), backplane="memory://")
    async with TestClient(app) as client:
        yield client


async def store_of(client: TestClient) -> Store:
    return await client.app.container.get(Store)  # type: ignore[attr-defined,no-any-return]


@asynccontextmanager
async def joined(
    client: TestClient, room: str, user: str, since: int | None = None
) -> AsyncIterator[tuple[Any, dict[str, Any]]]:
    """Connect, check that the first frame is the welcome, and give (socket, welcome)."""
    query = f"?user={user}" + (f"&since={since}" if since is not None else "")
    async with client.websocket_connect(f"/ws/{room}{query}") as ws:
        welcome = await ws.receive_json()
        assert welcome["type"] == "welcome", welcome
        yield ws, welcome


async def next_frame(ws: Any, kind: str, predicate: Callable[[Any], bool] = lambda f: True) -> Any:
    """The next frame of `kind` that matches, skipping presence updates on the way."""
    while True:
        frame = await ws.receive_json()
        if frame["type"] == kind and predicate(frame):
            return frame
        assert frame["type"] == "presence", f"expected {kind}, got {frame}"


async def presence(ws: Any, users: list[str]) -> None:
    await next_frame(ws, "presence", lambda f: f["users"] == users)


async def post(client: TestClient, room: str, user: str, text: str) -> dict[str, Any]:
    response = await client.post(f"/api/rooms/{room}/messages", json={"user": user, "text": text})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def all_messages(client: TestClient, room: str) -> list[dict[str, Any]]:
    response = await client.get(f"/api/rooms/{room}/messages", params={"since": 0, "limit": 500})
    assert response.status_code == 200
    return response.json()["messages"]  # type: ignore[no-any-return]


def assert_message(frame: dict[str, Any], room: str, user: str, text: str) -> None:
    assert list(frame) == ["type", "id", "room", "user", "text", "ts"]
    assert frame["type"] == "message"
    assert isinstance(frame["id"], int)
    assert (frame["room"], frame["user"], frame["text"]) == (room, user, text)
    assert TS.fullmatch(frame["ts"]), frame["ts"]


# ---- starting, the page ------------------------------------------------------------------


async def test_healthz_answers_ok(client: TestClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_page_has_every_test_id_and_its_assets(client: TestClient) -> None:
    response = await client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    for test_id in TEST_IDS:
        assert f'data-testid="{test_id}"' in response.text, test_id
    for asset, kind in (("static/chat.js", "javascript"), ("static/chat.css", "text/css")):
        assert asset in response.text
        served = await client.get("/" + asset)
        assert served.status_code == 200
        assert kind in served.headers["content-type"]


def test_page_script_never_inserts_markup() -> None:
    script = (STATIC / "chat.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"):
        assert sink not in script, sink
    assert "textContent" in script


def test_configuration_defaults() -> None:
    assert ChatSettings.from_env({}).database_url == "sqlite+aiosqlite:///chat.db"
    custom = ChatSettings.from_env({"CHAT_DATABASE_URL": "sqlite+aiosqlite:///elsewhere.db"})
    assert custom.database_url == "sqlite+aiosqlite:///elsewhere.db"


# ---- WebSocket: welcome, history, resume -------------------------------------------------


async def test_welcome_is_first_and_presence_includes_the_joiner(client: TestClient) -> None:
    async with client.websocket_connect("/ws/lobby?user=ann") as ws:
        assert await ws.receive_json() == {
            "type": "welcome",
            "room": "lobby",
            "user": "ann",
            "history": [],
        }
        assert await ws.receive_json() == {"type": "presence", "room": "lobby", "users": ["ann"]}


async def test_user_name_is_trimmed_in_the_welcome(client: TestClient) -> None:
    async with joined(client, "lobby", "%20%20ann%20") as (_, welcome):
        assert welcome["user"] == "ann"


async def test_welcome_carries_the_last_50_messages_oldest_first(client: TestClient) -> None:
    posted = [await post(client, "lobby", "ann", f"m{i}") for i in range(60)]
    await post(client, "elsewhere", "bob", "not here")
    async with joined(client, "lobby", "bob") as (_, welcome):
        assert welcome["history"] == posted[-50:]


async def test_since_gives_what_came_after_oldest_first(client: TestClient) -> None:
    posted = [await post(client, "lobby", "ann", f"m{i}") for i in range(70)]
    async with joined(client, "lobby", "bob", since=posted[4]["id"]) as (_, welcome):
        assert welcome["history"] == posted[5:]
    async with joined(client, "lobby", "bob", since=posted[-1]["id"]) as (_, welcome):
        assert welcome["history"] == []
    async with joined(client, "lobby", "bob", since=0) as (_, welcome):
        assert welcome["history"] == posted


async def test_since_gives_at_most_1000_and_the_rest_pages_over_http(client: TestClient) -> None:
    store = await store_of(client)
    ids = [(await store.add("busy", "ann", f"m{i}")).id for i in range(1100)]
    async with joined(client, "busy", "bob", since=0) as (_, welcome):
        assert [m["id"] for m in welcome["history"]] == ids[:1000]
    rest = await client.get("/api/rooms/busy/messages", params={"since": ids[999], "limit": 500})
    assert [m["id"] for m in rest.json()["messages"]] == ids[1000:]


async def test_a_reconnecting_client_loses_nothing(client: TestClient) -> None:
    seen: list[int] = []
    async with joined(client, "lobby", "ann") as (ws, _):
        for i in range(3):
            await ws.send_json({"type": "message", "text": f"before {i}"})
            seen.append((await next_frame(ws, "message"))["id"])
    missed = [await post(client, "lobby", "bob", f"while away {i}") for i in range(5)]
    async with joined(client, "lobby", "ann", since=seen[-1]) as (ws, welcome):
        assert welcome["history"] == missed
        later = await post(client, "lobby", "bob", "after the return")
        assert await next_frame(ws, "message") == later


async def test_messages_posted_while_people_join_are_never_lost(client: TestClient) -> None:
    # Posts race with joins: each joiner must find every message either in its welcome
    # or among the messages broadcast after it, exactly once and in id order.
    async def poster() -> list[int]:
        return [(await post(client, "race", "ann", f"m{i}"))["id"] for i in range(40)]

    async def joiner() -> list[int]:
        async with joined(client, "race", "bob") as (ws, welcome):
            got = [m["id"] for m in welcome["history"]]
            while len(got) < 40:
                got.append((await next_frame(ws, "message"))["id"])
            return got

    posting = asyncio.create_task(poster())
    joins = [asyncio.create_task(joiner()) for _ in range(4)]
    for _ in range(4):
        await asyncio.sleep(0.01)
    posted = await posting
    for got in await asyncio.gather(*joins):
        assert got == posted


async def test_joiners_share_the_last_page_until_a_newer_message_is_delivered(client: TestClient) -> None:
    # A crowd joining one room reads its latest page once: the next joiners reuse it while
    # nothing newer was delivered here, and read again once something was.
    store = await store_of(client)
    reads: list[str] = []
    history = store.history

    async def counted(room: str, since: int | None, limit: int) -> Any:
        reads.append(room)
        return await history(room, since, limit)

    store.history = counted  # type: ignore[method-assign]
    first = (await post(client, "crowd", "ann", "one"))["id"]
    async with (
        joined(client, "crowd", "bob") as (bob, welcome_bob),
        joined(client, "crowd", "cid") as (cid, welcome_cid),
    ):
        assert [m["id"] for m in welcome_bob["history"]] == [first]
        assert welcome_cid["history"] == welcome_bob["history"]
        assert reads == ["crowd"]  # cid got bob's page
        second = (await post(client, "crowd", "ann", "two"))["id"]
        for ws in (bob, cid):  # delivered live to those who joined before it
            assert (await next_frame(ws, "message"))["id"] == second
        async with joined(client, "crowd", "dan") as (_, welcome_dan):
            assert [m["id"] for m in welcome_dan["history"]] == [first, second]
        assert reads == ["crowd", "crowd"]  # a newer message was delivered: read again
        async with joined(client, "crowd", "eve") as (_, welcome_eve):
            assert welcome_eve["history"] == welcome_dan["history"]
        assert reads == ["crowd", "crowd"]


# ---- WebSocket: messages, ping, presence ---------------------------------------------------


async def test_messages_reach_everyone_in_the_room_in_the_order_stored(client: TestClient) -> None:
    async with (
        joined(client, "lobby", "ann") as (ann, _),
        joined(client, "lobby", "bob") as (bob, _),
        joined(client, "other", "cid") as (cid, _),
    ):
        await presence(ann, ["ann", "bob"])
        await presence(bob, ["ann", "bob"])
        for i in range(5):
            await ann.send_json({"type": "message", "text": f"  hello {i}  "})
        got_ann = [await next_frame(ann, "message") for _ in range(5)]
        got_bob = [await next_frame(bob, "message") for _ in range(5)]
        assert got_ann == got_bob
        for i, frame in enumerate(got_ann):
            assert_message(frame, "lobby", "ann", f"hello {i}")
        ids = [frame["id"] for frame in got_ann]
        assert ids == sorted(ids)
        assert len(set(ids)) == 5
        await presence(cid, ["cid"])
        await cid.send_json({"type": "ping"})
        assert await cid.receive_json() == {"type": "pong"}  # nothing from the lobby came first


async def test_ping_gets_pong(client: TestClient) -> None:
    async with joined(client, "lobby", "ann") as (ws, _):
        await presence(ws, ["ann"])
        await ws.send_json({"type": "ping"})
        assert await ws.receive_json() == {"type": "pong"}


async def test_presence_on_join_and_leave(client: TestClient) -> None:
    async with joined(client, "lobby", "ann") as (ann, _):
        await presence(ann, ["ann"])
        async with joined(client, "lobby", "bob") as (bob, _):
            await presence(bob, ["ann", "bob"])
            await presence(ann, ["ann", "bob"])
        await presence(ann, ["ann"])


async def test_a_name_stays_online_while_any_of_its_connections_is_open(client: TestClient) -> None:
    async with joined(client, "lobby", "bob") as (bob, _):
        await presence(bob, ["bob"])
        async with joined(client, "lobby", "ann") as (first, _):
            await presence(bob, ["ann", "bob"])
            async with joined(client, "lobby", "ann") as (second, _):
                await presence(second, ["ann", "bob"])  # distinct names
            await presence(bob, ["ann", "bob"])  # one "ann" left, the other is still here
            await first.send_json({"type": "ping"})
            await next_frame(first, "pong")
        await presence(bob, ["bob"])


async def test_rooms_list_counts_people_online_and_messages(client: TestClient) -> None:
    assert (await client.get("/api/rooms")).json() == {"rooms": []}
    await post(client, "quiet", "ann", "hi")
    await post(client, "quiet", "ann", "again")
    async with joined(client, "lobby", "ann") as (ann, _), joined(client, "lobby", "ann") as _:
        async with joined(client, "lobby", "bob") as (bob, _):
            await presence(bob, ["ann", "bob"])
            response = await client.get("/api/rooms")
            assert response.status_code == 200
            assert response.json() == {
                "rooms": [
                    {"room": "lobby", "online": 2, "messages": 0},
                    {"room": "quiet", "online": 0, "messages": 2},
                ]
            }
        await presence(ann, ["ann"])


# ---- WebSocket: bad input -------------------------------------------------------------------


BAD_FRAMES = [
    "not json",
    "",
    "[1, 2]",
    "42",
    "null",
    '"message"',
    "{}",
    '{"text": "hi"}',
    '{"type": "shout", "text": "hi"}',
    '{"type": 7}',
    '{"type": "message"}',
    '{"type": "message", "text": 5}',
    '{"type": "message", "text": null}',
    '{"type": "message", "text": ""}',
    '{"type": "message", "text": "   \\n\\t "}',
    json.dumps({"type": "message", "text": "x" * 2001}),
    '{"type": "message", "text": "hi"',
]


@pytest.mark.parametrize("frame", BAD_FRAMES)
async def test_bad_frames_get_an_error_frame_and_store_nothing(client: TestClient, frame: str) -> None:
    async with joined(client, "lobby", "ann") as (ws, _):
        await presence(ws, ["ann"])
        await ws.send_text(frame)
        error = await ws.receive_json()
        assert list(error) == ["type", "error"]
        assert error["type"] == "error"
        assert isinstance(error["error"], str)
        assert len(error["error"]) > 5
        await ws.send_json({"type": "ping"})  # the connection is still usable
        assert await ws.receive_json() == {"type": "pong"}
    assert await all_messages(client, "lobby") == []


async def test_error_frames_say_what_was_wrong(client: TestClient) -> None:
    async with joined(client, "lobby", "ann") as (ws, _):
        await presence(ws, ["ann"])
        expectations = {
            '{"type": "message", "text": "  "}': "empty",
            json.dumps({"type": "message", "text": "y" * 2001}): "2000",
            '{"type": "shout"}': "shout",
            '{"type": "message"}': "text",
            "nope": "JSON",
        }
        for frame, words in expectations.items():
            await ws.send_text(frame)
            assert words in (await ws.receive_json())["error"]


def _json_values() -> st.SearchStrategy[Any]:
    scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=10,
    )


def _bad_text() -> st.SearchStrategy[Any]:
    blank = st.text(alphabet=" \t\n\r\u00a0\u2003", max_size=10)
    too_long = st.integers(2001, 3000).map(lambda n: "z" * n)
    not_a_string = st.none() | st.booleans() | st.integers() | st.lists(st.text(max_size=3), max_size=2)
    return blank | too_long | not_a_string


_bad_frames = st.one_of(
    st.text(max_size=60).filter(lambda s: _not_json(s)),
    _json_values().filter(lambda v: not isinstance(v, dict)).map(json.dumps),
    st.dictionaries(st.text(max_size=8), _json_values(), max_size=4)
    .filter(lambda d: d.get("type") not in ("message", "ping"))
    .map(json.dumps),
    st.builds(lambda text: {"type": "message", "text": text}, _bad_text()).map(json.dumps),
    st.just(json.dumps({"type": "message", "extra": 1})),
)


def _not_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return True
    return False


@settings(max_examples=60, deadline=None, suppress_health_check=FIXTURE_CHECKS)
@given(frames=st.lists(_bad_frames, min_size=1, max_size=5))
async def test_generated_bad_frames_never_close_and_never_store(
    client: TestClient, frames: list[str]
) -> None:
    async with joined(client, "fuzz", "ann") as (ws, _):
        await presence(ws, ["ann"])
        for frame in frames:
            await ws.send_text(frame)
            answer = await ws.receive_json()
            assert answer["type"] == "error", (frame, answer)
        await ws.send_json({"type": "ping"})
        assert await ws.receive_json() == {"type": "pong"}
    assert await all_messages(client, "fuzz") == []


@settings(max_examples=40, deadline=None, suppress_health_check=FIXTURE_CHECKS)
@given(text=st.text(min_size=1, max_size=2100))
async def test_any_text_is_stored_trimmed_or_refused(client: TestClient, text: str) -> None:
    before = await all_messages(client, "texts")
    async with joined(client, "texts", "ann") as (ws, _):
        await presence(ws, ["ann"])
        await ws.send_json({"type": "message", "text": text})
        answer = await ws.receive_json()
    expected = text.strip()
    if 1 <= len(expected) <= 2000 and "\x00" not in expected:  # NUL: no database stores it everywhere
        assert_message(answer, "texts", "ann", expected)
        assert (await all_messages(client, "texts"))[-1] == answer
    else:
        assert answer["type"] == "error"
        assert await all_messages(client, "texts") == before


async def test_binary_frame_closes_with_1003(client: TestClient) -> None:
    async with joined(client, "lobby", "ann") as (ws, _):
        await presence(ws, ["ann"])
        await ws.send_bytes(b'{"type": "ping"}')
        assert await ws.receive_close() == 1003


async def test_message_over_64_kib_closes_with_1009(client: TestClient) -> None:
    async with joined(client, "lobby", "ann") as (ws, _):
        await presence(ws, ["ann"])
        await ws.send_text(json.dumps({"type": "message", "text": "x" * 65536}))
        assert await ws.receive_close() == 1009
    assert await all_messages(client, "lobby") == []


async def test_message_of_exactly_64_kib_is_read_and_refused_as_too_long(client: TestClient) -> None:
    frame = json.dumps({"type": "message", "text": ""})
    frame = frame.replace('""', '"' + "é" * ((65536 - len(frame)) // 2) + '"')
    frame = frame[:-2] + " " * (65536 - len(frame.encode())) + frame[-2:]
    assert len(frame.encode()) == 65536
    async with joined(client, "lobby", "ann") as (ws, _):
        await presence(ws, ["ann"])
        await ws.send_text(frame)
        assert "2000" in (await ws.receive_json())["error"]


@pytest.mark.parametrize(
    "path",
    [
        "/ws/lobby",  # no user
        "/ws/lobby?user=",
        "/ws/lobby?user=%20%20",
        "/ws/lobby?user=" + "u" * 33,
        "/ws/lobby?user=a%00b",
        "/ws/lobby?user=a%0Ab",
        "/ws/has%20space?user=ann",
        "/ws/dot.ted?user=ann",
        "/ws/" + "r" * 65 + "?user=ann",
        "/ws/%C3%BC?user=ann",
        "/ws/lobby?user=ann&since=abc",
        "/ws/lobby?user=ann&since=-1",
    ],
)
async def test_invalid_handshake_is_refused_with_403(client: TestClient, path: str) -> None:
    with pytest.raises(HandshakeRejectedError) as refused:
        async with client.websocket_connect(path):
            pass
    assert refused.value.status == 403
    assert "error" in refused.value.json()
    assert (await client.get("/api/rooms")).json() == {"rooms": []}


async def test_unknown_websocket_path_is_refused(client: TestClient) -> None:
    with pytest.raises(HandshakeRejectedError) as refused:
        async with client.websocket_connect("/ws/lobby/extra?user=ann"):
            pass
    assert refused.value.status in (403, 404)


# ---- HTTP API ---------------------------------------------------------------------------------


async def test_post_stores_and_reaches_websocket_clients(client: TestClient) -> None:
    async with joined(client, "lobby", "ann") as (ws, _):
        await presence(ws, ["ann"])
        response = await client.post("/api/rooms/lobby/messages", json={"user": " bob ", "text": " hi "})
        assert response.status_code == 201
        assert response.headers["content-type"].startswith("application/json")
        stored = response.json()
        assert_message(stored, "lobby", "bob", "hi")
        assert await ws.receive_json() == stored


async def test_get_messages_defaults_limits_and_pages(client: TestClient) -> None:
    posted = [await post(client, "lobby", "ann", f"m{i}") for i in range(120)]
    empty = await client.get("/api/rooms/nobody-here/messages")
    assert empty.status_code == 200
    assert empty.json() == {"room": "nobody-here", "messages": []}

    default = (await client.get("/api/rooms/lobby/messages")).json()
    assert default == {"room": "lobby", "messages": posted[-50:]}
    last_ten = (await client.get("/api/rooms/lobby/messages", params={"limit": 10})).json()
    assert last_ten["messages"] == posted[-10:]

    pages: list[dict[str, Any]] = []
    cursor = 0
    while True:
        page = (await client.get(f"/api/rooms/lobby/messages?since={cursor}&limit=25")).json()
        if not page["messages"]:
            break
        assert len(page["messages"]) <= 25
        pages.extend(page["messages"])
        cursor = page["messages"][-1]["id"]
    assert pages == posted
    most = await client.get("/api/rooms/lobby/messages", params={"since": 0, "limit": 500})
    assert most.json()["messages"] == posted


async def test_rooms_list_without_anybody_online(client: TestClient) -> None:
    await post(client, "b-room", "ann", "hi")
    await post(client, "a_room", "ann", "hi")
    await post(client, "a_room", "bob", "ho")
    assert (await client.get("/api/rooms")).json() == {
        "rooms": [
            {"room": "a_room", "online": 0, "messages": 2},
            {"room": "b-room", "online": 0, "messages": 1},
        ]
    }


@pytest.mark.parametrize(
    "query",
    [
        "since=abc",
        "since=",
        "since=-1",
        "since=1.5",
        "since=99999999999999999999999",
        "limit=0",
        "limit=501",
        "limit=-3",
        "limit=ten",
        "limit=",
        "limit=1e3",
    ],
)
async def test_bad_since_or_limit_is_400(client: TestClient, query: str) -> None:
    response = await client.get(f"/api/rooms/lobby/messages?{query}")
    assert response.status_code == 400
    assert query.split("=")[0] in response.json()["error"]


async def test_limit_above_500_is_refused_and_says_so(client: TestClient) -> None:
    response = await client.get("/api/rooms/lobby/messages?limit=501")
    assert response.status_code == 400
    assert "500" in response.json()["error"]


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("room", ["has%20space", "dot.ted", "r" * 65, "%C3%BC", "a%2Bb"])
async def test_invalid_room_is_400(client: TestClient, method: str, room: str) -> None:
    response = await client.request(method, f"/api/rooms/{room}/messages", json={"user": "ann", "text": "hi"})
    assert response.status_code == 400
    assert "room" in response.json()["error"]


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[1, 2]",
        b'"text"',
        b"{}",
        b'{"user": "ann"}',
        b'{"text": "hi"}',
        b'{"user": 5, "text": "hi"}',
        b'{"user": "ann", "text": ["hi"]}',
        b'{"user": "", "text": "hi"}',
        b'{"user": "ann", "text": "   "}',
        b'{"user": "a\\u0000b", "text": "hi"}',
        json.dumps({"user": "u" * 33, "text": "hi"}).encode(),
        json.dumps({"user": "ann", "text": "t" * 2001}).encode(),
        b'{"user": "ann", "text": "hi"',
    ],
)
async def test_bad_post_body_is_400_and_stores_nothing(client: TestClient, body: bytes) -> None:
    response = await client.post(
        "/api/rooms/lobby/messages", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code in (400, 422)
    assert isinstance(response.json()["error"], str)
    assert await all_messages(client, "lobby") == []


async def test_unknown_paths_are_404(client: TestClient) -> None:
    for path in ("/nope", "/api", "/api/rooms/lobby", "/api/rooms/lobby/messages/1", "/static/nope.js"):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert "error" in response.json()


async def test_wrong_method_is_405_with_allow(client: TestClient) -> None:
    cases = {
        ("DELETE", "/api/rooms/lobby/messages"): {"GET", "POST"},
        ("PUT", "/api/rooms/lobby/messages"): {"GET", "POST"},
        ("POST", "/api/rooms"): {"GET"},
        ("POST", "/healthz"): {"GET"},
        ("POST", "/"): {"GET"},
    }
    for (method, path), allowed in cases.items():
        response = await client.request(method, path)
        assert response.status_code == 405, (method, path)
        listed = {part.strip() for part in response.headers["allow"].split(",")}
        assert allowed <= listed, (method, path, listed)
        assert "error" in response.json()


_path_text = st.text(alphabet=st.characters(exclude_categories=["Cs"]), min_size=0, max_size=30)


@settings(max_examples=80, deadline=None, suppress_health_check=FIXTURE_CHECKS)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]),
    room=_path_text,
    tail=st.sampled_from(["/messages", "", "/messages/x", "/"]),
    query=st.dictionaries(st.sampled_from(["since", "limit", "user", "x"]), _path_text, max_size=3),
    body=st.one_of(
        st.binary(max_size=50),
        _json_values().map(lambda v: json.dumps(v).encode()),
        st.builds(
            lambda user, text: json.dumps({"user": user, "text": text}).encode(),
            _json_values(),
            _json_values(),
        ),
    ),
)
async def test_no_request_gives_a_500(
    client: TestClient, method: str, room: str, tail: str, query: dict[str, str], body: bytes
) -> None:
    response = await client.request(
        method, "/api/rooms/" + quote(room, safe="") + tail, params=query, content=body
    )
    assert response.status_code < 500, (response.status_code, response.text)
    if response.status_code >= 400 and method != "HEAD":
        assert isinstance(response.json()["error"], str)


# ---- several processes (two apps sharing a memory hub and one database) -------------------------


@contextlib.asynccontextmanager
async def two_nodes(database_url: str) -> AsyncIterator[tuple[TestClient, TestClient]]:
    """Two chat apps sharing a memory hub and one database, as two processes would."""
    hub = MemoryHub()
    settings = ChatSettings(database_url=database_url)
    one = create_app(settings, backplane=MemoryBackplane(hub))
    two = create_app(settings, backplane=MemoryBackplane(hub))
    async with TestClient(one) as first, TestClient(two) as second:
        yield first, second


async def test_two_nodes_act_as_one_chat(database_url: str) -> None:
    async with two_nodes(database_url) as (first, second):
        await _chat_across(first, second)


async def test_a_room_with_people_only_on_another_node_is_listed(database_url: str) -> None:
    async with two_nodes(database_url) as (first, second):
        assert (await second.get("/api/rooms")).json() == {"rooms": []}
        async with joined(first, "quiet", "ann") as (ann, _):
            await presence(ann, ["ann"])
            rooms = (await second.get("/api/rooms")).json()["rooms"]
            assert rooms == [{"room": "quiet", "online": 1, "messages": 0}]
        assert (await second.get("/api/rooms")).json() == {"rooms": []}


async def _chat_across(first: TestClient, second: TestClient) -> None:
    async with joined(first, "lobby", "ann") as (ann, _):
        await presence(ann, ["ann"])
        async with joined(second, "lobby", "bob") as (bob, _):
            await presence(bob, ["ann", "bob"])
            await presence(ann, ["ann", "bob"])
            await ann.send_json({"type": "message", "text": "from one"})
            from_one = await next_frame(bob, "message")
            assert from_one == await next_frame(ann, "message")
            stored = await post(second, "lobby", "cid", "from two")
            assert await next_frame(ann, "message") == stored
            assert await next_frame(bob, "message") == stored
            rooms = (await first.get("/api/rooms")).json()["rooms"]
            assert rooms == [{"room": "lobby", "online": 2, "messages": 2}]
            # each message arrived once: the next frame on each side is the pong
            for ws in (ann, bob):
                await ws.send_json({"type": "ping"})
                assert (await next_frame(ws, "pong")) == {"type": "pong"}
        await presence(ann, ["ann"])


async def test_joining_while_another_node_posts_loses_nothing(database_url: str) -> None:
    # The poster's node broadcasts each message before it commits it; a joiner on the other
    # node must still find every message once: in its welcome or broadcast after it.
    async with two_nodes(database_url) as (first, second):
        posted: list[int] = []
        done = asyncio.Event()

        async def poster() -> None:
            for i in range(150):
                posted.append((await post(first, "race", "ann", f"m{i}"))["id"])
            done.set()

        async def joiner(delay: float) -> list[int]:
            await asyncio.sleep(delay)
            async with joined(second, "race", "bob") as (ws, welcome):
                got = [m["id"] for m in welcome["history"]]
                async with asyncio.timeout(30):
                    while not (done.is_set() and got and got[-1] == posted[-1]):
                        try:
                            frame = await ws.receive_json(timeout=0.2)
                        except TimeoutError:
                            continue  # the last message may be ours already; check again
                        if frame["type"] == "message":
                            got.append(frame["id"])
                return got

        posting = asyncio.create_task(poster())
        results = await asyncio.gather(*(joiner(0.02 * n) for n in range(12)))
        await posting
        for got in results:
            assert got, "a joiner saw nothing"
            assert got == [i for i in posted if i >= got[0]]


class FlakyBackplane(MemoryBackplane):
    """A memory backplane whose publishing can be made to fail, as a lost Redis would."""

    failing = False

    async def publish(self, channel: str, payload: bytes) -> None:
        if self.failing and channel.startswith("room:"):
            raise BackplaneError("the backplane is gone (simulated)")
        await super().publish(channel, payload)


async def test_while_the_backplane_is_down_this_process_keeps_chatting(database_url: str) -> None:
    backplane = FlakyBackplane()
    app = create_app(ChatSettings(database_url=database_url), backplane=backplane)
    async with TestClient(app) as client, joined(client, "lobby", "ann") as (ws, _):
        await presence(ws, ["ann"])
        backplane.failing = True
        await ws.send_json({"type": "message", "text": "during the outage"})
        first = await next_frame(ws, "message")
        assert_message(first, "lobby", "ann", "during the outage")
        response = await client.post("/api/rooms/lobby/messages", json={"user": "bob", "text": "posted"})
        assert response.status_code == 201
        assert_message(await next_frame(ws, "message"), "lobby", "bob", "posted")
        stored = await all_messages(client, "lobby")
        assert [m["text"] for m in stored] == ["during the outage", "posted"]
        backplane.failing = False
        await ws.send_json({"type": "message", "text": "back"})
        assert_message(await next_frame(ws, "message"), "lobby", "ann", "back")


async def test_a_room_name_with_a_slash_or_empty_is_invalid_not_unknown(client: TestClient) -> None:
    for path in ("/api/rooms/a%2Fb/messages", "/api/rooms//messages"):
        response = await client.get(path)
        assert response.status_code == 400, path
        assert "error" in response.json()
    for path in ("/ws/a%2Fb?user=bob", "/ws/?user=bob"):
        with pytest.raises(HandshakeRejectedError) as info:
            async with client.websocket_connect(path):
                pass
        assert info.value.status == 403, path


async def test_a_post_body_that_is_not_utf8_is_a_400(client: TestClient) -> None:
    response = await client.post(
        "/api/rooms/utf/messages",
        content=b'{"user": "\xff", "text": "x"}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert "error" in response.json()


async def test_presence_frames_are_combined_to_at_most_4_a_second_and_the_last_is_current(
    client: TestClient,
) -> None:
    loop = asyncio.get_running_loop()
    async with joined(client, "busy", "ann") as (ann, _):
        await presence(ann, ["ann"])
        names = [f"u{n:02}" for n in range(12)]
        async with contextlib.AsyncExitStack() as stack:
            for name in names:  # each join's welcome arrives before the next one starts
                await stack.enter_async_context(joined(client, "busy", name))
            times: list[float] = []
            while True:
                frame = await ann.receive_json()
                assert frame["type"] == "presence", frame
                times.append(loop.time())
                if frame["users"] == ["ann", *names]:
                    break
        await presence(ann, ["ann"])  # everybody left at once: one list, the current one
        await ann.send_json({"type": "ping"})
        assert await ann.receive_json() == {"type": "pong"}  # and nothing more was sent
    assert len(times) < len(names)
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert all(gap > 0.2 for gap in gaps), gaps  # 0.25 s apart, less the receiver's jitter


# ---- names, same-site posts, rate limit, connections per address (specs/chat.md) --------

INVISIBLE_NAMES = [
    "%E2%80%8B",  # only a zero-width space
    "ann%E2%80%AE",  # right-to-left override
    "%EF%BB%BFann",  # byte-order mark
    "a%E2%80%A8b",  # line separator
    "ann%F3%A0%80%81",  # language tag
    "%EE%80%80",  # private use
    "%E3%85%A4",  # Hangul filler: shows nothing
    "%FF",  # not UTF-8
    "ann%C3",  # truncated UTF-8
]


@pytest.mark.parametrize("user", INVISIBLE_NAMES)
async def test_invisible_or_non_utf8_names_are_refused_at_the_handshake(
    client: TestClient, user: str
) -> None:
    with pytest.raises(HandshakeRejectedError) as refused:
        async with client.websocket_connect(f"/ws/lobby?user={user}"):
            pass
    assert refused.value.status == 403
    assert "user name" in refused.value.json()["error"] or "UTF-8" in refused.value.json()["error"]
    assert (await client.get("/api/rooms")).json() == {"rooms": []}


@pytest.mark.parametrize(
    "user", ["\u200b", "ann\u202e", "\ufeffann", "a\u2028b", "ann\U000e0001", "\ue000", "\u3164", "a\u0378"]
)
async def test_invisible_names_are_refused_on_post(client: TestClient, user: str) -> None:
    response = await client.post("/api/rooms/lobby/messages", json={"user": user, "text": "hi"})
    assert response.status_code == 400
    assert "user name" in response.json()["error"]
    assert await all_messages(client, "lobby") == []


async def test_a_visible_name_with_a_replacement_character_is_a_name(client: TestClient) -> None:
    async with joined(client, "lobby", quote("ann\ufffd")) as (_, welcome):
        assert welcome["user"] == "ann\ufffd"


@pytest.mark.parametrize(
    "headers",
    [
        {"content-type": "text/plain"},
        {"content-type": "application/x-www-form-urlencoded"},
        {"content-type": "multipart/form-data; boundary=x"},
        {},
    ],
)
async def test_a_post_that_is_not_json_is_415_and_stores_nothing(
    client: TestClient, headers: dict[str, str]
) -> None:
    body = json.dumps({"user": "ann", "text": "hi"}).encode()
    response = await client.post("/api/rooms/lobby/messages", content=body, headers=headers)
    assert response.status_code == 415
    assert "application/json" in response.json()["error"]
    assert await all_messages(client, "lobby") == []


async def test_a_cross_site_post_is_403_and_stores_nothing(client: TestClient) -> None:
    for origin in ("http://evil.example", "null"):
        for content_type in ("application/json", "text/plain"):
            response = await client.post(
                "/api/rooms/lobby/messages",
                content=json.dumps({"user": "ann", "text": "hi"}).encode(),
                headers={"origin": origin, "content-type": content_type},
            )
            assert response.status_code == 403, (origin, content_type)
            assert "error" in response.json()
    assert await all_messages(client, "lobby") == []


async def test_a_same_site_json_post_with_charset_is_stored(client: TestClient) -> None:
    response = await client.post(
        "/api/rooms/lobby/messages",
        content=json.dumps({"user": "ann", "text": "hi"}).encode(),
        headers={"origin": "http://testserver", "content-type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 201


def test_settings_read_the_rate_limit_and_the_connection_cap() -> None:
    default = ChatSettings.from_env({})
    assert (default.rate_limit, default.max_connections_per_address) == (10, 0)
    assert default.message_rate_limit is not None
    assert (default.message_rate_limit.per_second, default.message_rate_limit.burst) == (10, 30)
    custom = ChatSettings.from_env({"CHAT_RATE_LIMIT": "0", "CHAT_MAX_CONNECTIONS_PER_ADDRESS": "5"})
    assert custom.message_rate_limit is None
    assert custom.max_connections_per_address == 5
    for env, name in (
        ({"CHAT_RATE_LIMIT": "fast"}, "CHAT_RATE_LIMIT"),
        ({"CHAT_RATE_LIMIT": "-1"}, "CHAT_RATE_LIMIT"),
        ({"CHAT_MAX_CONNECTIONS_PER_ADDRESS": "2.5"}, "CHAT_MAX_CONNECTIONS_PER_ADDRESS"),
        ({"CHAT_MAX_CONNECTIONS_PER_ADDRESS": "-1"}, "CHAT_MAX_CONNECTIONS_PER_ADDRESS"),
    ):
        with pytest.raises(ConfigurationError, match=name):
            ChatSettings.from_env(env)


async def test_messages_over_the_rate_limit_get_error_frames_then_a_1008_close(database_url: str) -> None:
    app = create_app(ChatSettings(database_url=database_url, rate_limit=2))  # bursts of 6
    frames: list[dict[str, Any]] = []
    async with TestClient(app) as client:
        async with joined(client, "lobby", "ann") as (ann, _):
            for i in range(40):
                await ann.send_json({"type": "message", "text": f"m{i}"})
            with contextlib.suppress(WebSocketDisconnectError):
                while True:
                    frames.append(await ann.receive_json())
            assert ann.close_code == 1008
        stored = [frame for frame in frames if frame["type"] == "message"]
        errors = [frame for frame in frames if frame["type"] == "error"]
        assert 6 <= len(stored) <= 8  # the burst, and whatever refilled meanwhile
        assert errors
        assert all("rate limit" in frame["error"] for frame in errors)
        assert len(await all_messages(client, "lobby")) == len(stored)


async def test_each_app_has_the_rate_limit_of_its_settings(database_url: str) -> None:
    app = create_app(ChatSettings(database_url=database_url, rate_limit=0))
    async with TestClient(app) as client, joined(client, "lobby", "ann") as (ann, _):
        for i in range(50):
            await ann.send_json({"type": "message", "text": f"m{i}"})
        texts = [(await next_frame(ann, "message"))["text"] for _ in range(50)]
    assert texts == [f"m{i}" for i in range(50)]


async def test_connections_past_the_cap_per_address_are_429(database_url: str) -> None:
    app = create_app(ChatSettings(database_url=database_url, max_connections_per_address=2))
    async with TestClient(app) as client:
        async with joined(client, "lobby", "ann"), joined(client, "lobby", "bob"):
            with pytest.raises(HandshakeRejectedError) as refused:
                async with client.websocket_connect("/ws/lobby?user=cat"):
                    pass
            assert refused.value.status == 429
            assert "too many connections" in refused.value.json()["error"]
        async with joined(client, "lobby", "cat") as (_, welcome):  # places are given back
            assert welcome["user"] == "cat"
