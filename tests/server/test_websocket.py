"""The native WebSocket protocol driven directly: an in-memory transport, frames read back by a
sans-I/O client. What the real-server tests (test_websocket_protocol.py) cannot see from outside:
no task for an idle controller connection, one frame shared by a broadcast, the close code an
ASGI app's failure gets."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState
from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from wirehall import WebSocketController, WebSocketService, Wirehall
from wirehall.server.websocket import WebSocketProtocol
from wirehall.types import Receive, Scope, Send
from wirehall.websocket import _frames as frames_module


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closing = False
        self.writes = 0
        self.protocol: WebSocketProtocol | None = None
        self.pause_after: int | None = (
            None  # pause the protocol's writing (as uvloop does) after so many writes
        )

    def write(self, data: Any) -> None:
        self.writes += 1
        self.written += data
        if self.pause_after is not None and self.writes >= self.pause_after and self.protocol is not None:
            self.pause_after = None
            self.protocol.pause_writing()  # from inside the write, as uvloop and asyncio do

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(name, default)


class _Peer:
    """One client connection to the protocol."""

    def __init__(self, app: Any, path: str = "/ws") -> None:
        config = Config(app=app, ws_max_size=1 << 20, ws_ping_interval=None, lifespan="off")
        config.load()
        self.protocol = WebSocketProtocol(config, ServerState(), {})
        self.transport = _Transport()
        self.transport.protocol = self.protocol
        self.client = ClientProtocol(parse_uri(f"ws://127.0.0.1:8000{path}"))
        self.protocol.connection_made(self.transport)
        self.client.send_request(self.client.connect())
        self.protocol.data_received(b"".join(self.client.data_to_send()))
        self.read = 0

    def events(self) -> list[Any]:
        data = bytes(self.transport.written[self.read :])
        self.read = len(self.transport.written)
        self.client.receive_data(data)
        return list(self.client.events_received())

    def send_text(self, text: str) -> None:
        self.client.send_text(text.encode())
        self.protocol.data_received(b"".join(self.client.data_to_send()))


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_an_asgi_app_that_fails_after_accept_is_closed_with_1011() -> None:
    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        raise ZeroDivisionError("app bug after accept")

    peer = _Peer(failing)
    await _settle()
    events = peer.events()
    assert isinstance(events[0], Response)
    assert events[0].status_code == 101
    closes = [
        Close.parse(event.data)
        for event in events[1:]
        if isinstance(event, Frame) and event.opcode is Opcode.CLOSE
    ]
    assert [close.code for close in closes] == [1011]


def _room_app() -> tuple[Wirehall, list[str]]:
    service = WebSocketService(heartbeat_interval=0)
    app = Wirehall(websockets=service)
    seen: list[str] = []

    @app.websocket("/ws")
    class Room(WebSocketController):
        async def on_connect(self) -> None:
            await self.accept()
            await self.join("room")

        async def on_message(self, message: str) -> None:
            seen.append(message)
            await self.service.broadcast("room", message)

    return app, seen


async def test_an_idle_controller_connection_holds_no_task_and_a_message_starts_one_that_ends() -> None:
    app, seen = _room_app()
    async with _lifespan(app):
        peer = _Peer(app)
        await _settle()
        assert isinstance(peer.events()[0], Response)
        baseline = {task for task in asyncio.all_tasks() if not task.done()}
        # the connection's ASGI task has returned: nothing of it is running
        assert not any("_run_asgi" in repr(task.get_coro()) for task in baseline)
        peer.send_text("hello")
        await _settle()
        assert seen == ["hello"]
        assert {task for task in asyncio.all_tasks() if not task.done()} <= baseline  # it ended
        texts = [
            event.data for event in peer.events() if isinstance(event, Frame) and event.opcode is Opcode.TEXT
        ]
        assert texts == [b"hello"]


async def test_a_broadcast_builds_its_frame_once_for_every_member(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[bytes] = []
    build = frames_module._build

    def counting_build(message: Any, window_bits: int) -> bytes:
        built.append(build(message, window_bits))
        return built[-1]

    monkeypatch.setattr(frames_module, "_build", counting_build)
    app, _ = _room_app()
    async with _lifespan(app):
        peers = [_Peer(app) for _ in range(5)]
        await _settle()
        for peer in peers:
            peer.events()
        built.clear()
        await app.websockets.broadcast("room", "x" * 300)
        await _settle()
        assert len(built) == 1  # one frame for the five members (nobody negotiated compression)
        for peer in peers:
            assert bytes(peer.transport.written[peer.read :]) == built[0]  # the very same bytes


def _texts(peer: _Peer) -> list[str]:
    return [
        bytes(event.data).decode()
        for event in peer.events()
        if isinstance(event, Frame) and event.opcode is Opcode.TEXT
    ]


def _opcodes_after(peer: _Peer) -> list[Opcode]:
    return [event.opcode for event in peer.events() if isinstance(event, Frame)]


async def test_a_transport_that_pauses_under_a_broadcast_gets_the_rest_in_order_when_it_resumes() -> None:
    app, _ = _room_app()
    async with _lifespan(app):
        slow, other = _Peer(app), _Peer(app)
        await _settle()
        slow.events(), other.events()
        await app.websockets.broadcast("room", "one")  # both now take frames directly
        await _settle()
        assert _texts(slow) == _texts(other) == ["one"]
        slow.transport.pause_after = slow.transport.writes + 1
        for text in ("two", "three", "four"):
            await app.websockets.broadcast("room", text)
        await _settle()
        assert _texts(other) == ["two", "three", "four"]
        assert _texts(slow) == ["two"]  # the write that paused it went out; the rest wait
        slow.protocol.resume_writing()
        await _settle()
        assert _texts(slow) == ["three", "four"]
        await app.websockets.broadcast("room", "five")
        await _settle()
        assert _texts(slow) == _texts(other) == ["five"]


@pytest.mark.parametrize("closer", ["server", "peer", "lost"])
async def test_no_broadcast_frame_follows_the_close(closer: str) -> None:
    app, _ = _room_app()
    async with _lifespan(app):
        leaving, staying = _Peer(app), _Peer(app)
        await _settle()
        leaving.events(), staying.events()
        await app.websockets.broadcast("room", "before")  # direct writes for both
        await _settle()
        assert _texts(leaving) == ["before"]
        _texts(staying)
        written = len(leaving.transport.written)
        if closer == "server":
            leaving.protocol.send_close(1001, "going away")
        elif closer == "peer":
            leaving.client.send_close(1000)
            leaving.protocol.data_received(b"".join(leaving.client.data_to_send()))
        else:
            leaving.protocol.connection_lost(ConnectionResetError())
        after_close = len(leaving.transport.written)
        await app.websockets.broadcast("room", "after")  # before the service learnt of the close
        await _settle()
        await app.websockets.broadcast("room", "later")
        await _settle()
        assert _texts(staying) == ["after", "later"]
        assert len(leaving.transport.written) == after_close
        if closer != "lost":
            assert after_close > written
            assert _opcodes_after(leaving) == [Opcode.CLOSE]


class _lifespan:  # noqa: N801  # used as a context manager, like a function
    def __init__(self, app: Wirehall) -> None:
        self.app = app
        self.sent: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> None:
        self.received.put_nowait({"type": "lifespan.startup"})

        async def send(message: Any) -> None:
            self.sent.put_nowait(message)

        self.task = asyncio.create_task(
            self.app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, self.received.get, send)
        )
        assert (await asyncio.wait_for(self.sent.get(), 5))["type"] == "lifespan.startup.complete"

    async def __aexit__(self, *exc: object) -> None:
        self.received.put_nowait({"type": "lifespan.shutdown"})
        await asyncio.wait_for(self.sent.get(), 5)
        assert self.task is not None
        await asyncio.wait_for(self.task, 5)


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
