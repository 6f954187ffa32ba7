"""RFC 6455 conformance of both WebSocket paths `wirehall run` can serve: uvicorn's and wirehall's own.

One `wirehall run` process per path serves tests/server/_ws_protocol_app.py for the whole
module. Well-behaved clients are the `websockets` library's asyncio client; clients that
must break the protocol (unmasked frames, reserved bits, bad opcodes, split UTF-8...)
are `RawClient`, frames built by hand on a plain socket.

What RFC 6455 requires is asserted on both paths; where uvicorn's path does not do it,
its parameter is an expected failure (`uvicorn_deviates`) saying what it does instead.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib
import json
import os
import random
import socket
import struct
import subprocess
import sys
import uuid
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.utils import apply_mask

from tests._servers import stop_process, wait_until_serving
from tests.conftest import free_port
from tests.server._ws_protocol_app import ECHO_MAX, ROOM_MAX

ROOT = Path(__file__).resolve().parents[2]
WS_MAX_SIZE = ROOM_MAX  # the server's frame / message limit (--ws-max-size)
TIMEOUT = 5.0  # seconds any one exchange may take

UVICORN = "websockets-sansio"
NATIVE = "wirehall.server.websocket:WebSocketProtocol"

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
RSV1, RSV2, RSV3 = 0x40, 0x20, 0x10

NORMAL, PROTOCOL_ERROR, UNSUPPORTED_DATA, INVALID_PAYLOAD, TOO_BIG = 1000, 1002, 1003, 1007, 1009


def _native_missing() -> bool:
    try:
        importlib.import_module("wirehall.server.websocket")
    except ImportError:
        return True
    return False


PATHS = [
    pytest.param(UVICORN, id="uvicorn"),
    pytest.param(
        NATIVE,
        id="native",
        marks=pytest.mark.skipif(_native_missing(), reason="native protocol not landed"),
    ),
]


# the server ---------------------------------------------------------------------------


class Server:
    """One `wirehall run` process of the protocol app, on the WebSocket path `ws`."""

    def __init__(self, ws: str, log_path: Path) -> None:
        self.ws = ws
        self.port = free_port()
        self.log_path = log_path
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("WIREHALL_BACKPLANE", None)
        command = [sys.executable, "-m", "wirehall.cli", "run", "tests.server._ws_protocol_app:app"]
        command += ["--port", str(self.port), "--ws", ws, "--ws-max-size", str(WS_MAX_SIZE)]
        command += ["--no-access-log", "--log-level", "info"]
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def disconnect_code(self, tag: str) -> int:
        """The close code the app's on_disconnect saw for the connection tagged `tag` (polled)."""
        async with httpx.AsyncClient(trust_env=False, timeout=TIMEOUT) as client:
            async with asyncio.timeout(TIMEOUT):
                while True:
                    response = await client.get(f"http://127.0.0.1:{self.port}/disconnects/{tag}")
                    code: int | None = response.json()["code"]
                    if code is not None:
                        return code
                    await asyncio.sleep(0.02)


@pytest.fixture(scope="module", params=PATHS)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    ws: str = request.param
    started = Server(ws, tmp_path_factory.mktemp("ws-protocol") / "server.log")
    try:
        response = wait_until_serving(
            started.process, f"http://127.0.0.1:{started.port}/healthz", log=lambda: started.log
        )
        assert response.status_code == 200, started.log
        yield started
    finally:
        stop_process(started.process)
    log = started.log
    assert "Exception in ASGI application" not in log, log
    assert "never retrieved" not in log, log
    if ws != UVICORN:  # uvicorn's logs a traceback for a client's invalid UTF-8 (see below)
        assert "Traceback" not in log, log


def uvicorn_deviates(request: pytest.FixtureRequest, server: Server, reason: str) -> None:
    """Expect this test to fail on uvicorn's path (strictly), for `reason`."""
    if server.ws == UVICORN:
        request.node.add_marker(pytest.mark.xfail(strict=True, reason=f"uvicorn's path: {reason}"))


def new_tag() -> str:
    return uuid.uuid4().hex[:12]


# a client that can break the protocol ------------------------------------------------


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0, masked: bool = True) -> bytes:
    """One client frame on the wire, masked unless `masked=False`; `rsv`: RSV1/RSV2/RSV3 bits."""
    first = (0x80 if fin else 0) | rsv | opcode
    mask_bit = 0x80 if masked else 0
    size = len(payload)
    if size < 126:
        head = bytes([first, mask_bit | size])
    elif size < 1 << 16:
        head = bytes([first, mask_bit | 126]) + struct.pack("!H", size)
    else:
        head = bytes([first, mask_bit | 127]) + struct.pack("!Q", size)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + apply_mask(payload, key)


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


def fragments(opcode: int, parts: list[bytes]) -> bytes:
    """A message in `len(parts)` frames: `opcode` first, continuations after."""
    frames = []
    for i, part in enumerate(parts):
        frames.append(frame(opcode if i == 0 else CONT, part, fin=i == len(parts) - 1))
    return b"".join(frames)


@dataclass(frozen=True)
class Frame:
    fin: bool
    rsv: int
    opcode: int
    payload: bytes

    @property
    def close_code(self) -> int | None:
        assert self.opcode == CLOSE
        return struct.unpack("!H", self.payload[:2])[0] if self.payload else None

    @property
    def close_reason(self) -> bytes:
        return self.payload[2:]


class RawClient:
    """A WebSocket client on a plain socket, writing whatever frames a test gives it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.response_head = b""

    @classmethod
    async def open(cls, server: Server, path: str = "/ws/echo", *, headers: str = "") -> RawClient:
        async with asyncio.timeout(TIMEOUT):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            client = cls(reader, writer)
            key = base64.b64encode(os.urandom(16)).decode()
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                f"{headers}\r\n".encode()
            )
            client.response_head = await reader.readuntil(b"\r\n\r\n")
        assert client.response_head.startswith(b"HTTP/1.1 101 "), client.response_head
        return client

    async def send(self, *frames: bytes) -> None:
        """Write `frames` in one write; a server that already hung up is not an error here."""
        self.writer.write(b"".join(frames))
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()

    async def next_frame(self, *, skip_pings: bool = True) -> Frame | None:
        """The server's next frame (None when it closed the TCP connection).

        Server pings (its keepalive) are skipped unless `skip_pings=False`.
        """
        async with asyncio.timeout(TIMEOUT):
            while True:
                try:
                    head = await self.reader.readexactly(2)
                except asyncio.IncompleteReadError as exc:
                    partial = exc.partial
                    if partial:
                        raise AssertionError(
                            f"the server hung up inside a frame header: {partial!r}"
                        ) from exc
                    return None
                except ConnectionError:
                    return None
                assert not head[1] & 0x80, "the server masked a frame (RFC 6455 5.1 forbids it)"
                size = head[1] & 0x7F
                if size == 126:
                    size = struct.unpack("!H", await self.reader.readexactly(2))[0]
                elif size == 127:
                    size = struct.unpack("!Q", await self.reader.readexactly(8))[0]
                payload = await self.reader.readexactly(size)
                got = Frame(bool(head[0] & 0x80), head[0] & 0x70, head[0] & 0x0F, payload)
                if got.opcode == PING and skip_pings:
                    continue
                return got

    async def next_message(self) -> tuple[int, bytes]:
        """The server's next data message, reassembled: (TEXT or BINARY, its payload)."""
        first = await self.next_frame()
        assert first is not None, "the server closed the connection"
        assert first.opcode in (TEXT, BINARY), first
        assert first.rsv == 0, first
        parts = [first.payload]
        last = first
        while not last.fin:
            following = await self.next_frame()
            assert following is not None, "the server closed the connection inside a message"
            assert following.opcode == CONT, following
            parts.append(following.payload)
            last = following
        return first.opcode, b"".join(parts)

    async def closed_with(self) -> Frame:
        """Read to the server's close frame (skipping data), then see the server hang up; the frame.

        RFC 6455 7.1.1: the server closes the TCP connection first, after the close frames.
        """
        while True:
            got = await self.next_frame()
            assert got is not None, "the server hung up without a close frame"
            if got.opcode == CLOSE:
                break
        assert len(got.payload) != 1, got
        assert len(got.payload) <= 125, got
        if got.payload:
            got.close_reason.decode()  # valid UTF-8, or this raises
        # answer the close, as a client does, and see the server end the TCP connection
        await self.send(frame(CLOSE, got.payload[:2]))
        assert await self.next_frame() is None, "the server sent more after its close frame"
        return got

    async def reply_to_close(self) -> Frame:
        """The server's next frame, which must be a close frame (the answer to ours)."""
        got = await self.next_frame()
        assert got is not None, "the server hung up without answering the close frame"
        assert got.opcode == CLOSE, got
        return got

    async def close_code(self) -> int | None:
        return (await self.closed_with()).close_code

    async def aclose(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


@pytest.fixture
async def raw(server: Server) -> AsyncIterator[RawClient]:
    """A raw client connected to `/ws/echo`."""
    client = await RawClient.open(server)
    yield client
    await client.aclose()


async def raw_http(server: Server, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send one raw HTTP request; the response's status, headers (lower-case names) and body."""
    async with asyncio.timeout(TIMEOUT):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            writer.write(request)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            status_line, *lines = head.decode("latin-1").split("\r\n")
            headers = {}
            for line in lines:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            body = await reader.readexactly(length)
            return int(status_line.split()[1]), headers, body
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


@contextlib.asynccontextmanager
async def client(server: Server, path: str, **options: object) -> AsyncIterator[ClientConnection]:
    """A `websockets` client (compression offered unless `compression=None`)."""
    async with connect(server.url(path), open_timeout=TIMEOUT, close_timeout=TIMEOUT, **options) as ws:  # type: ignore[arg-type]  # options are connect()'s keywords
        yield ws


async def server_close_code(ws: ClientConnection) -> int | None:
    """Read until the server closes; the code of its close frame."""
    with contextlib.suppress(ConnectionClosed):
        async with asyncio.timeout(TIMEOUT):
            while True:
                await ws.recv()
    assert ws.protocol.close_rcvd is not None, "no close frame from the server"
    return ws.protocol.close_rcvd.code


def compressed(ws: ClientConnection) -> bool:
    return any(ext.name == "permessage-deflate" for ext in ws.protocol.extensions)


# fragmentation ----------------------------------------------------------------------

ECHO_ROUTES = ["/ws/echo", "/ws/fn"]


@pytest.mark.parametrize("path", ECHO_ROUTES)
@pytest.mark.parametrize("opcode", [TEXT, BINARY], ids=["text", "binary"])
async def test_a_fragmented_message_is_reassembled(server: Server, path: str, opcode: int) -> None:
    parts = [b"Hello", b"", b", ", b"fragmented ", b"world" * 100, b"", b"!"]
    raw = await RawClient.open(server, path)
    try:
        await raw.send(fragments(opcode, parts))
        assert await raw.next_message() == (opcode, b"".join(parts))
        # and once more, so the reassembly starts afresh
        await raw.send(fragments(opcode, [b"a", b"b"]))
        assert await raw.next_message() == (opcode, b"ab")
    finally:
        await raw.aclose()


async def test_text_split_inside_utf8_characters_is_reassembled(server: Server, raw: RawClient) -> None:
    text = "κόσμε € 😀 ünïcødé"
    data = text.encode()
    await raw.send(fragments(TEXT, [data[i : i + 1] for i in range(len(data))]))  # a byte per frame
    assert await raw.next_message() == (TEXT, data)


@pytest.mark.parametrize("path", ECHO_ROUTES)
async def test_the_websockets_client_fragmenting_is_reassembled(server: Server, path: str) -> None:
    async with client(server, path, compression=None) as ws:
        await ws.send(["Hello", ", ", "wörld", "!"])
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "Hello, wörld!"
        await ws.send([b"\x00\x01", b"", b"\xff"])
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == b"\x00\x01\xff"


async def test_a_ping_inside_a_fragmented_message_is_answered_before_it_ends(
    server: Server, raw: RawClient
) -> None:
    await raw.send(frame(TEXT, b"one ", fin=False), frame(PING, b"first"))
    assert await raw.next_frame() == Frame(True, 0, PONG, b"first")
    await raw.send(frame(CONT, b"two ", fin=False), frame(PING, b"second"))
    assert await raw.next_frame() == Frame(True, 0, PONG, b"second")
    await raw.send(frame(CONT, b"three", fin=True))
    assert await raw.next_message() == (TEXT, b"one two three")


async def test_pings_between_fragments_in_one_write_are_all_answered(server: Server, raw: RawClient) -> None:
    await raw.send(
        frame(BINARY, b"\x01", fin=False),
        frame(PING, b"a"),
        frame(CONT, b"\x02", fin=False),
        frame(PING, b""),
        frame(PING, b"c" * 125),
        frame(CONT, b"\x03", fin=True),
    )
    got = [await raw.next_frame() for _ in range(4)]
    pongs = [f for f in got if f is not None and f.opcode == PONG]
    assert [p.payload for p in pongs] == [b"a", b"", b"c" * 125]
    message = next(f for f in got if f is not None and f.opcode != PONG)
    assert (message.opcode, message.payload) == (BINARY, b"\x01\x02\x03")
    # the pongs come as soon as their pings are read: never after the message they interrupted
    assert got[-1] == message


async def test_frames_trickling_in_a_byte_at_a_time_are_parsed(server: Server, raw: RawClient) -> None:
    sock = raw.writer.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    wire = b"".join(
        [
            frame(TEXT, b"slow", fin=False),
            frame(PING, b"p"),
            frame(CONT, " and ünïcode".encode()),
            frame(BINARY, b"\x00" * 300),  # a 16-bit length
        ]
    )
    for i in range(len(wire)):
        await raw.send(wire[i : i + 1])
        await asyncio.sleep(0.0005)  # pacing, so that the server reads partial frames (not a wait)
    assert await raw.next_frame() == Frame(True, 0, PONG, b"p")
    assert await raw.next_message() == (TEXT, "slow and ünïcode".encode())
    assert await raw.next_message() == (BINARY, b"\x00" * 300)


async def test_many_messages_in_one_write_are_echoed_in_order(server: Server, raw: RawClient) -> None:
    messages = [f"message {i}".encode() for i in range(300)]
    await raw.send(*(frame(TEXT if i % 2 else BINARY, m) for i, m in enumerate(messages)))
    got = [await raw.next_message() for _ in messages]
    assert got == [(TEXT if i % 2 else BINARY, m) for i, m in enumerate(messages)]


@pytest.mark.parametrize("path", ECHO_ROUTES)
async def test_empty_messages_are_echoed(server: Server, path: str) -> None:
    raw = await RawClient.open(server, path)
    try:
        await raw.send(frame(TEXT), frame(BINARY), fragments(TEXT, [b"", b"", b""]))
        assert [await raw.next_message() for _ in range(3)] == [(TEXT, b""), (BINARY, b""), (TEXT, b"")]
    finally:
        await raw.aclose()


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 300_000])
@pytest.mark.parametrize("compression", ["deflate", None])
async def test_messages_from_the_server_of_every_length_encoding_arrive_whole(
    server: Server, size: int, compression: str | None
) -> None:
    async with client(server, "/ws/big", compression=compression, max_size=None) as ws:
        await ws.send(str(size))
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "t" * size
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == bytes(range(256)) * (size // 256) + bytes(
            size % 256
        )


# the close handshake -------------------------------------------------------------------


@pytest.mark.parametrize("path", ECHO_ROUTES)
@pytest.mark.parametrize("code", [1000, 1001, 3000, 4999])
async def test_a_client_close_is_answered_and_on_disconnect_sees_its_code(
    server: Server, path: str, code: int
) -> None:
    tag = new_tag()
    raw = await RawClient.open(server, f"{path}?tag={tag}")
    try:
        await raw.send(frame(TEXT, b"before"))
        assert await raw.next_message() == (TEXT, b"before")
        await raw.send(frame(CLOSE, close_payload(code, "au revoir, ça va".encode())))
        reply = await raw.reply_to_close()
        assert reply.close_code == code  # echoed (RFC 6455 5.5.1)
        assert await raw.next_frame() is None  # then the server hangs up
    finally:
        await raw.aclose()
    assert await server.disconnect_code(tag) == code


async def test_a_close_without_a_code_is_answered_and_reported_as_1005(server: Server) -> None:
    tag = new_tag()
    raw = await RawClient.open(server, f"/ws/echo?tag={tag}")
    try:
        await raw.send(frame(CLOSE))
        reply = await raw.reply_to_close()
        assert reply.close_code in (None, NORMAL)
        assert await raw.next_frame() is None
    finally:
        await raw.aclose()
    assert await server.disconnect_code(tag) == 1005


async def test_the_websockets_client_closing_completes_the_handshake(server: Server) -> None:
    tag = new_tag()
    async with client(server, f"/ws/echo?tag={tag}") as ws:
        await ws.send("x")
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "x"
        await ws.close(NORMAL, "bye")
        assert ws.protocol.close_rcvd is not None
        assert ws.protocol.close_rcvd.code == NORMAL
    assert await server.disconnect_code(tag) == NORMAL


@pytest.mark.parametrize(("code", "reason"), [(1000, "done"), (1008, "policy"), (4001, "app's own")])
async def test_a_server_close_reaches_the_client_with_its_code(
    server: Server, code: int, reason: str
) -> None:
    async with client(server, "/ws/closer") as ws:
        await ws.send(json.dumps({"code": code, "reason": reason}))
        assert await server_close_code(ws) == code
        assert ws.protocol.close_rcvd is not None
        assert ws.protocol.close_rcvd.reason == reason
        assert ws.protocol.close_sent is not None  # the client answered; the handshake completed


async def test_after_its_close_the_server_ignores_data_until_the_clients_close(server: Server) -> None:
    raw = await RawClient.open(server, "/ws/closer")
    try:
        await raw.send(frame(TEXT, json.dumps({"code": 4004}).encode()))
        closing = await raw.next_frame()
        assert closing is not None
        assert closing.opcode == CLOSE
        assert closing.close_code == 4004
        # still sending, as a client may that has not read the close yet; then answering it
        await raw.send(
            frame(TEXT, b"in flight"), frame(PING, b"in flight"), frame(CLOSE, close_payload(4004))
        )
        # no data frame after a close (RFC 6455 5.5.1; a pong may still come), then the server hangs up
        while (got := await raw.next_frame()) is not None:
            assert got.opcode == PONG, got
    finally:
        await raw.aclose()


@pytest.mark.parametrize("path", ECHO_ROUTES)
async def test_a_client_that_vanishes_without_a_close_is_reported_as_1006(
    request: pytest.FixtureRequest, server: Server, path: str
) -> None:
    uvicorn_deviates(
        request,
        server,
        "a connection lost without a close frame is reported as 1005 (the ASGI spec's "
        "default when no code was received), where RFC 6455 7.1.5 says 1006",
    )
    tag = new_tag()
    raw = await RawClient.open(server, f"{path}?tag={tag}")
    try:
        await raw.send(frame(TEXT, b"hello"))
        assert await raw.next_message() == (TEXT, b"hello")
        raw.writer.write_eof()  # a FIN, no close frame
        assert await raw.next_frame() is None
    finally:
        await raw.aclose()
    assert await server.disconnect_code(tag) == 1006  # RFC 6455 7.1.5


async def test_a_server_close_reason_never_exceeds_123_bytes(server: Server) -> None:
    reason = "é" * 100  # 200 bytes of UTF-8
    raw = await RawClient.open(server, "/ws/closer")
    try:
        await raw.send(frame(TEXT, json.dumps({"code": 4002, "reason": reason}).encode()))
        closing = await raw.closed_with()
    finally:
        await raw.aclose()
    assert closing.close_code == 4002
    assert len(closing.close_reason) <= 123
    assert reason.startswith(closing.close_reason.decode())  # cut at a character, not inside one


async def test_a_close_reason_too_long_from_a_plain_asgi_app_is_cut_to_fit(
    request: pytest.FixtureRequest, server: Server
) -> None:
    uvicorn_deviates(
        request,
        server,
        "the app's websocket.close raises ProtocolError('control frame too long') and the "
        "connection drops without a close frame",
    )
    reason = "é" * 100  # 200 bytes of UTF-8: no handler stands between this and the server
    raw = await RawClient.open(server, "/raw/close")
    try:
        await raw.send(frame(TEXT, json.dumps({"code": 4003, "reason": reason}).encode()))
        closing = await raw.closed_with()  # a close frame of at most 125 bytes, its reason UTF-8
    finally:
        await raw.aclose()
    assert closing.close_code == 4003
    assert reason.startswith(closing.close_reason.decode())


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535])
async def test_a_close_with_an_invalid_code_fails_with_1002(
    server: Server, raw: RawClient, code: int
) -> None:
    await raw.send(frame(CLOSE, close_payload(code, b"bad")))
    assert await raw.close_code() == PROTOCOL_ERROR


async def test_a_close_payload_of_one_byte_fails_with_1002(server: Server, raw: RawClient) -> None:
    await raw.send(frame(CLOSE, b"\x03"))
    assert await raw.close_code() == PROTOCOL_ERROR


async def test_a_close_reason_of_invalid_utf8_fails_with_1007(server: Server, raw: RawClient) -> None:
    await raw.send(
        frame(CLOSE, close_payload(NORMAL, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80"))
    )
    assert await raw.close_code() == INVALID_PAYLOAD


async def test_a_close_inside_a_fragmented_message_is_answered(server: Server, raw: RawClient) -> None:
    await raw.send(frame(TEXT, b"never finished", fin=False), frame(CLOSE, close_payload(NORMAL)))
    # RFC 6455 5.5.1 asks for a close frame in reply, "typically" echoing the code: websockets
    # answers 1002 (the message was left unfinished), which the RFC allows too
    assert (await raw.reply_to_close()).close_code in (NORMAL, PROTOCOL_ERROR)
    assert await raw.next_frame() is None


async def test_data_after_the_client_close_is_ignored(server: Server, raw: RawClient) -> None:
    await raw.send(frame(CLOSE, close_payload(NORMAL)), frame(TEXT, b"too late"), frame(PING, b"late"))
    assert (await raw.reply_to_close()).close_code == NORMAL
    assert await raw.next_frame() is None


# sizes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("opcode", [TEXT, BINARY], ids=["text", "binary"])
async def test_a_message_of_max_message_size_passes_and_one_byte_more_closes_1009(
    server: Server, opcode: int
) -> None:
    tag = new_tag()
    raw = await RawClient.open(server, f"/ws/echo?tag={tag}")
    try:
        await raw.send(frame(opcode, b"x" * ECHO_MAX))
        assert await raw.next_message() == (opcode, b"x" * ECHO_MAX)
        await raw.send(frame(opcode, b"x" * (ECHO_MAX + 1)))
        assert await raw.close_code() == TOO_BIG
    finally:
        await raw.aclose()
    assert await server.disconnect_code(tag) == TOO_BIG


async def test_a_fragmented_message_over_max_message_size_closes_1009(server: Server, raw: RawClient) -> None:
    await raw.send(fragments(TEXT, [b"y" * 1000] * 5))  # each frame small, the message too big
    assert await raw.close_code() == TOO_BIG


async def test_a_compressed_message_over_max_message_size_closes_1009(server: Server) -> None:
    async with client(server, "/ws/echo") as ws:
        assert compressed(ws)
        await ws.send("z" * (ECHO_MAX + 1))  # a few bytes on the wire
        assert await server_close_code(ws) == TOO_BIG


async def test_a_frame_over_the_servers_limit_closes_1009(server: Server) -> None:
    tag = new_tag()
    raw = await RawClient.open(server, f"/ws/room/{tag}?tag={tag}")
    try:
        assert await raw.next_message() == (TEXT, b"joined")
        await raw.send(frame(TEXT, b"w" * WS_MAX_SIZE))
        assert await raw.next_message() == (TEXT, b"w" * WS_MAX_SIZE)
        await raw.send(frame(TEXT, b"w" * (WS_MAX_SIZE + 1)))
        assert await raw.close_code() == TOO_BIG
    finally:
        await raw.aclose()
    assert await server.disconnect_code(tag) == TOO_BIG


async def test_a_huge_frame_header_closes_1009_without_waiting_for_its_payload(
    server: Server, raw: RawClient
) -> None:
    header = bytes([0x80 | BINARY, 0x80 | 127]) + struct.pack("!Q", 1 << 40) + os.urandom(4)
    await raw.send(header + b"\x00" * 16)  # a terabyte announced, 16 bytes sent
    assert await raw.close_code() == TOO_BIG


async def test_fragments_over_the_servers_limit_close_1009(server: Server) -> None:
    room = new_tag()
    raw = await RawClient.open(server, f"/ws/room/{room}")
    try:
        assert await raw.next_message() == (TEXT, b"joined")
        await raw.send(fragments(TEXT, [b"v" * 4000] * 5))
        assert await raw.close_code() == TOO_BIG
    finally:
        await raw.aclose()


async def test_a_compression_bomb_closes_1009(server: Server) -> None:
    async with client(server, "/ws/echo") as ws:
        assert compressed(ws)
        await ws.send(b"\x00" * 4_000_000)  # about 4 KB compressed, 4 MB inflated
        assert await server_close_code(ws) == TOO_BIG


# what a message may contain ---------------------------------------------------------------

INVALID_UTF8 = [
    pytest.param([b"\xff\xfe"], id="invalid-bytes"),
    pytest.param([b"hello \xed\xa0\x80"], id="surrogate"),
    pytest.param([b"\xc0\xaf"], id="overlong"),
    pytest.param([b"ok", b"\xe2\x82"], id="truncated-at-the-end"),
    pytest.param(
        [b"\xce\xba\xe1\xbd\xb9", b"\xcf\x83\xce\xbc\xce\xb5", b"\xf4\x90\x80\x80", b"tail"],
        id="in-a-fragment",
    ),
]


@pytest.mark.parametrize("parts", INVALID_UTF8)
async def test_invalid_utf8_in_a_text_message_closes_1007(server: Server, parts: list[bytes]) -> None:
    tag = new_tag()
    raw = await RawClient.open(server, f"/ws/echo?tag={tag}")
    try:
        await raw.send(fragments(TEXT, parts))
        assert await raw.close_code() == INVALID_PAYLOAD
    finally:
        await raw.aclose()
    assert await server.disconnect_code(tag) == INVALID_PAYLOAD


async def test_invalid_utf8_in_a_binary_message_is_fine(server: Server, raw: RawClient) -> None:
    await raw.send(frame(BINARY, b"\xff\xfe\xed\xa0\x80"))
    assert await raw.next_message() == (BINARY, b"\xff\xfe\xed\xa0\x80")


async def test_a_binary_message_to_a_text_only_route_closes_1003(server: Server) -> None:
    tag = new_tag()
    async with client(server, f"/ws/room/{tag}?tag={tag}") as ws:
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "joined"
        await ws.send(b"\x01\x02")
        assert await server_close_code(ws) == UNSUPPORTED_DATA
    assert await server.disconnect_code(tag) == UNSUPPORTED_DATA


# protocol errors: fail the connection with 1002 --------------------------------------------

VALID_FIRST = frame(TEXT, b"ok")  # a message the server answers before it sees the error after it

PROTOCOL_ERRORS = [
    pytest.param(frame(TEXT, b"unmasked", masked=False), id="unmasked-frame"),
    pytest.param(frame(TEXT, b"r", rsv=RSV1), id="rsv1-without-extension"),
    pytest.param(frame(TEXT, b"r", rsv=RSV2), id="rsv2"),
    pytest.param(frame(BINARY, b"r", rsv=RSV3), id="rsv3"),
    pytest.param(frame(PING, b"r", rsv=RSV1 | RSV2 | RSV3), id="rsv-on-a-ping"),
    pytest.param(frame(PING, b"p" * 126), id="ping-over-125-bytes"),
    pytest.param(frame(PONG, b"p" * 126), id="pong-over-125-bytes"),
    pytest.param(frame(CLOSE, close_payload(NORMAL, b"r" * 124)), id="close-over-125-bytes"),
    pytest.param(frame(PING, b"half", fin=False) + frame(CONT, b"other half"), id="fragmented-ping"),
    pytest.param(frame(CLOSE, close_payload(NORMAL), fin=False), id="fragmented-close"),
    pytest.param(frame(CONT, b"orphan"), id="continuation-without-start"),
    pytest.param(
        frame(CONT, b"orphan", fin=False) + frame(CONT, b"s"), id="continuation-without-start-unfinished"
    ),
    pytest.param(frame(TEXT, b"start", fin=False) + frame(TEXT, b"again"), id="text-inside-a-message"),
    pytest.param(frame(BINARY, b"start", fin=False) + frame(BINARY, b"again"), id="binary-inside-a-message"),
    pytest.param(VALID_FIRST + frame(CONT, b"after the end"), id="continuation-after-the-end"),
    *[pytest.param(frame(op, b"?"), id=f"opcode-{op:#x}") for op in (3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF)],
]


@pytest.mark.parametrize("wire", PROTOCOL_ERRORS)
async def test_a_protocol_error_fails_the_connection_with_1002(server: Server, wire: bytes) -> None:
    tag = new_tag()
    raw = await RawClient.open(server, f"/ws/echo?tag={tag}")
    try:
        await raw.send(wire)
        reply = await raw.next_frame()
        if wire.startswith(VALID_FIRST) and reply == Frame(True, 0, TEXT, b"ok"):
            reply = await raw.next_frame()  # echoed before the error was read: allowed, not required
        assert reply is not None, "the server hung up without a close frame"
        assert reply.opcode == CLOSE, reply
        assert reply.close_code == PROTOCOL_ERROR
        assert await raw.next_frame() is None  # failing the connection closes TCP, no waiting
    finally:
        await raw.aclose()
    assert await server.disconnect_code(tag) == PROTOCOL_ERROR


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param(frame(PING, b"p", rsv=RSV1), id="rsv1-on-a-ping"),
        pytest.param(
            frame(TEXT, b"", fin=False, rsv=RSV1) + frame(CONT, b"", rsv=RSV1), id="rsv1-on-a-continuation"
        ),
    ],
)
async def test_rsv1_where_permessage_deflate_forbids_it_fails_with_1002(server: Server, wire: bytes) -> None:
    raw = await RawClient.open(server, headers="Sec-WebSocket-Extensions: permessage-deflate\r\n")
    try:
        assert b"permessage-deflate" in raw.response_head.lower()
        await raw.send(wire)
        assert await raw.close_code() == PROTOCOL_ERROR
    finally:
        await raw.aclose()


async def test_a_misbehaving_client_is_not_logged_as_an_error(
    request: pytest.FixtureRequest, server: Server
) -> None:
    uvicorn_deviates(request, server, "a client's invalid UTF-8 is logged at ERROR with a traceback")
    before = len(server.log)
    for wire in (frame(TEXT, b"\xff"), frame(TEXT, b"x", masked=False), frame(0x3, b"?")):
        raw = await RawClient.open(server)
        try:
            await raw.send(wire)
            assert await raw.close_code() in (INVALID_PAYLOAD, PROTOCOL_ERROR)
        finally:
            await raw.aclose()
    await _still_serves(server)
    log = server.log[before:]
    assert "Traceback" not in log, log
    assert "ERROR" not in log, log


def deflated(data: bytes) -> bytes:
    """`data` as a permessage-deflate payload (RFC 7692 7.2.1), in a window any agreement allows."""
    compressor = zlib.compressobj(wbits=-9)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


DEFLATE_OFFER = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"


async def test_a_compressed_frame_from_a_raw_client_is_inflated(server: Server) -> None:
    raw = await RawClient.open(server, headers=DEFLATE_OFFER)
    try:
        assert b"permessage-deflate" in raw.response_head.lower()
        await raw.send(frame(TEXT, deflated("dégonflé".encode()), rsv=RSV1))
        first = await raw.next_frame()
        assert first is not None
        assert first.opcode == TEXT
        payload = first.payload
        if first.rsv & RSV1:  # the server may answer compressed
            payload = zlib.decompressobj(wbits=-15).decompress(payload + b"\x00\x00\xff\xff")
        assert payload == "dégonflé".encode()
    finally:
        await raw.aclose()


async def test_compressed_invalid_utf8_closes_1007(server: Server) -> None:
    raw = await RawClient.open(server, headers=DEFLATE_OFFER)
    try:
        await raw.send(frame(TEXT, deflated(b"valid, then \xff\xfe"), rsv=RSV1))
        assert await raw.close_code() == INVALID_PAYLOAD
    finally:
        await raw.aclose()


async def test_a_corrupt_compressed_frame_fails_the_connection(server: Server) -> None:
    raw = await RawClient.open(server, headers=DEFLATE_OFFER)
    try:
        await raw.send(frame(BINARY, b"\xff" * 40, rsv=RSV1))  # not a deflate stream
        # RFC 7692 says fail, not with which code: websockets says 1002, 1007 would do too
        assert await raw.close_code() in (PROTOCOL_ERROR, INVALID_PAYLOAD)
    finally:
        await raw.aclose()


# compression and rooms ---# compression and rooms ------------------------------------------------------------------


def _room_payload(sender: str, i: int) -> str:
    rng = random.Random(f"{sender}{i}")
    body = ["a" * 8000, rng.randbytes(1500).hex(), "é😀ü" * 300, ""][i % 4]
    return f"{sender}:{i}:{body}"


async def test_compressed_and_plain_clients_in_one_room_get_every_broadcast_in_order(server: Server) -> None:
    room = new_tag()
    count = 24
    names = ["deflate-1", "deflate-2", "plain-1", "plain-2"]
    async with contextlib.AsyncExitStack() as stack:
        members: dict[str, ClientConnection] = {}
        for name in names:
            options = {} if name.startswith("deflate") else {"compression": None}
            ws = await stack.enter_async_context(client(server, f"/ws/room/{room}", **options))
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "joined"
            assert compressed(ws) == name.startswith("deflate")
            members[name] = ws

        async def speak(name: str) -> None:
            ws = members[name]
            for i in range(count):
                text = _room_payload(name, i)
                if i % 3 == 0:  # some fragmented (compressed fragments from the deflate clients)
                    await ws.send([text[j : j + 700] for j in range(0, len(text), 700)] or [""])
                else:
                    await ws.send(text)

        async def listen(name: str) -> list[str]:
            ws = members[name]
            return [str(await ws.recv()) for _ in range(count * len(names))]

        async with asyncio.timeout(4 * TIMEOUT):
            heard, _ = await asyncio.gather(
                asyncio.gather(*(listen(name) for name in names)),
                asyncio.gather(*(speak(name) for name in names)),
            )
    first = heard[0]
    for other in heard[1:]:
        assert other == first  # every member, the same messages in the same order
    for name in names:
        assert [m for m in first if m.startswith(f"{name}:")] == [
            _room_payload(name, i) for i in range(count)
        ]


DEFLATE_OFFERS = {
    "window-9": ClientPerMessageDeflateFactory(server_max_window_bits=9, client_max_window_bits=9),
    "window-10-no-takeover": ClientPerMessageDeflateFactory(
        server_no_context_takeover=True, client_no_context_takeover=True, server_max_window_bits=10
    ),
    "window-15": ClientPerMessageDeflateFactory(server_max_window_bits=15, client_max_window_bits=True),
    "default": ClientPerMessageDeflateFactory(client_max_window_bits=True),
}


def _far_repeats(i: int) -> str:
    """Text whose repeats lie 1,000 and 3,000 bytes back: inflating it with a window smaller than
    the one it was deflated with fails, so a frame shared across windows would show."""
    block = random.Random(i).randbytes(500).hex()
    return f"{i}:" + block + block + block[:1000] * 2 + block


async def test_clients_of_different_deflate_windows_in_one_room_each_read_every_broadcast(
    server: Server,
) -> None:
    room = new_tag()
    async with contextlib.AsyncExitStack() as stack:
        members: dict[str, ClientConnection] = {}
        for name, offer in DEFLATE_OFFERS.items():
            ws = await stack.enter_async_context(
                client(server, f"/ws/room/{room}", compression=None, extensions=[offer])
            )
            assert compressed(ws), name
            members[name] = ws
        members["plain"] = await stack.enter_async_context(
            client(server, f"/ws/room/{room}", compression=None)
        )
        for ws in members.values():
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "joined"
        sent = [_far_repeats(i) for i in range(12)]
        for i, text in enumerate(sent):
            await list(members.values())[i % len(members)].send(text)
        async with asyncio.timeout(2 * TIMEOUT):
            heard = {name: [await ws.recv() for _ in sent] for name, ws in members.items()}
    for name, messages in heard.items():
        assert sorted(messages) == sorted(sent), name  # whole, inflated with the member's own window
        assert messages == heard["plain"], name  # and in the room's one order


async def test_a_compressed_client_sending_fragments_gets_its_message_back(server: Server) -> None:
    async with client(server, "/ws/echo") as ws:
        assert compressed(ws)
        text = "fragmented and compressed " * 100
        await ws.send([text[i : i + 300] for i in range(0, len(text), 300)])
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == text
        data = bytes(range(256)) * 10
        await ws.send([data[i : i + 512] for i in range(0, len(data), 512)])
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == data


# pings ---------------------------------------------------------------------------------------


async def test_many_pings_get_their_pongs_in_order(server: Server, raw: RawClient) -> None:
    payloads = [f"ping {i}".encode() for i in range(200)]
    await raw.send(*(frame(PING, payload) for payload in payloads))
    pongs = [await raw.next_frame() for _ in payloads]
    assert [p.payload if p is not None and p.opcode == PONG else p for p in pongs] == payloads


@pytest.mark.parametrize("size", [0, 1, 125])
async def test_a_ping_gets_a_pong_with_its_payload(server: Server, raw: RawClient, size: int) -> None:
    payload = os.urandom(size)
    await raw.send(frame(PING, payload))
    assert await raw.next_frame() == Frame(True, 0, PONG, payload)


async def test_an_unsolicited_pong_is_ignored(server: Server, raw: RawClient) -> None:
    await raw.send(frame(PONG, b"nobody asked"), frame(PONG), frame(TEXT, b"still here"))
    assert await raw.next_message() == (TEXT, b"still here")


async def test_the_websockets_client_pings(server: Server) -> None:
    async with client(server, "/ws/echo") as ws:
        waiters = [await ws.ping(f"p{i}".encode()) for i in range(20)]
        async with asyncio.timeout(TIMEOUT):
            await asyncio.gather(*waiters)


# the handshake ---------------------------------------------------------------------------------


def _upgrade(server: Server, path: str, *, key: str | None, version: str = "13", extra: str = "") -> bytes:
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: 127.0.0.1:{server.port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Version: {version}",
    ]
    if key is not None:
        lines.append(f"Sec-WebSocket-Key: {key}")
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


GOOD_KEY = "dGhlIHNhbXBsZSBub25jZQ=="


async def _still_serves(server: Server) -> None:
    async with client(server, "/ws/echo") as ws:
        await ws.send("alive")
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "alive"


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(None, id="missing"),
        pytest.param("not base64!", id="not-base64"),
        pytest.param("c2hvcnQ=", id="short"),
    ],
)
async def test_a_bad_sec_websocket_key_gets_400(server: Server, key: str | None) -> None:
    status, _, _ = await raw_http(server, _upgrade(server, "/ws/echo", key=key))
    assert status == 400
    await _still_serves(server)


async def test_a_wrong_version_gets_a_4xx_naming_version_13(
    request: pytest.FixtureRequest, server: Server
) -> None:
    uvicorn_deviates(
        request, server, "websockets answers an unknown version with 400 and no Sec-WebSocket-Version"
    )
    status, headers, _ = await raw_http(server, _upgrade(server, "/ws/echo", key=GOOD_KEY, version="8"))
    assert 400 <= status < 500  # RFC 6455 4.4: "an appropriate HTTP error code (such as 426)"
    # "... and a |Sec-WebSocket-Version| header field indicating the version(s) the server is
    # capable of understanding"
    assert headers.get("sec-websocket-version") == "13"
    await _still_serves(server)


async def test_a_wrong_version_gets_a_4xx(server: Server) -> None:
    status, _, _ = await raw_http(server, _upgrade(server, "/ws/echo", key=GOOD_KEY, version="8"))
    assert 400 <= status < 500
    await _still_serves(server)


async def test_the_accept_key_is_computed(server: Server) -> None:
    raw = await RawClient.open(server)
    await raw.aclose()
    status, headers, _ = await raw_http(server, _upgrade(server, "/ws/echo", key=GOOD_KEY))
    assert status == 101
    assert headers["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455 1.3's example
    assert headers["upgrade"].lower() == "websocket"


async def test_a_handshake_spelled_as_browsers_do_is_accepted(server: Server) -> None:
    request = (
        f"GET /ws/echo?x=1 HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nUpgrade: WebSocket\r\n"
        f"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: {GOOD_KEY}\r\n"
        f"Sec-WebSocket-Version: 13\r\nOrigin: http://127.0.0.1:{server.port}\r\n"
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
        "User-Agent: Mozilla/5.0\r\n\r\n"
    ).encode()
    status, headers, _ = await raw_http(server, request)
    assert status == 101
    assert headers["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


async def test_unknown_extensions_are_declined(server: Server) -> None:
    offer = "Sec-WebSocket-Extensions: x-webkit-deflate-frame, x-unknown; a=1\r\n"
    status, headers, _ = await raw_http(server, _upgrade(server, "/ws/echo", key=GOOD_KEY, extra=offer))
    assert status == 101
    assert "sec-websocket-extensions" not in headers


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        (["other", "wirehall.v1", "wirehall.v2"], "wirehall.v2"),
        (["wirehall.v1"], "wirehall.v1"),
        (["other"], None),
        ([], None),
    ],
)
async def test_the_subprotocol_the_app_chooses_is_echoed(
    server: Server, offered: list[str], chosen: str | None
) -> None:
    async with client(server, "/ws/proto", subprotocols=offered or None) as ws:
        assert ws.subprotocol == chosen
        assert ws.response is not None
        assert ws.response.headers.get("Sec-WebSocket-Protocol") == chosen
        await ws.send("hi")
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "hi"


@pytest.mark.parametrize("status", [403, 429])
async def test_a_refused_handshake_gives_its_status_and_a_json_body(server: Server, status: int) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with client(server, f"/ws/refuse?status={status}&detail=not+now"):
            pytest.fail("the handshake was accepted")
    response = refused.value.response
    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json"
    assert json.loads(response.body) == {"error": "not now"}


async def test_a_refused_handshake_over_a_raw_socket(server: Server) -> None:
    status, headers, body = await raw_http(server, _upgrade(server, "/ws/refuse?status=429", key=GOOD_KEY))
    assert status == 429
    assert "sec-websocket-accept" not in headers
    assert json.loads(body) == {"error": "Too Many Requests"}
