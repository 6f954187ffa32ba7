"""A minimal RFC 6455 client connection for the load client, on asyncio protocols.

A library client costs tens of microseconds per received frame, which would make a
fan-out to 5,000 connections measure the client rather than the server. Here frames from
the server are parsed with a few integer operations, frames to the server are masked as
the RFC requires, pings are answered. By default no extension is offered (nothing is
compressed); with `deflate=True` the client offers `permessage-deflate; client_max_window_bits`
(RFC 7692) and inflates the frames that come compressed (RSV1 set). Its own frames stay
uncompressed, which the extension allows.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import socket
import struct
import zlib
from collections.abc import Callable
from typing import cast

__all__ = ["Connection", "close_all", "connect", "connect_many", "frame", "ignore"]

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_DEFLATE_OFFER = b"permessage-deflate; client_max_window_bits"
_DEFLATE_TAIL = b"\x00\x00\xff\xff"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def frame(opcode: int, payload: bytes, mask: bytes) -> bytes:
    """A final, masked client frame."""
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    key = (mask * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")
    return header + mask + masked


def ignore(conn: Connection, payload: bytes) -> None:
    """The default `on_data`: drop the message."""
    pass


class Connection(asyncio.Protocol):
    """One client WebSocket. `on_data(conn, payload)` is called for each data message."""

    def __init__(self, host: str, port: int, path: str, deflate: bool = False) -> None:
        loop = asyncio.get_running_loop()
        self.host = host
        self.port = port
        self.path = path
        self.handshake: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.on_data: Callable[[Connection, bytes], None] = ignore
        self.mask = os.urandom(4)
        self.is_open = False
        self.close_code: int | None = None
        self.close_sent = False
        self.received = 0
        self.counted = True
        self.sent_at = 0.0
        self._buffer = b""
        self._fragments: list[bytes] | None = None
        self._fragments_compressed = False
        self._key = base64.b64encode(os.urandom(16))
        self.offer_deflate = deflate
        # the server's answer to the offer (None: nothing negotiated) and the inflater;
        # one per connection, as the server may keep its context from message to message
        self.extension: bytes | None = None
        self.compressed = 0  # data messages that arrived compressed
        self._inflater: zlib._Decompress | None = None

    # asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not inherit from asyncio.Transport, hence the cast
        self.transport = transport = cast(asyncio.Transport, transport)
        transport.write(
            b"GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n%s\r\n"
            % (
                self.path.encode(),
                self.host.encode(),
                self.port,
                self._key,
                b"Sec-WebSocket-Extensions: %s\r\n" % _DEFLATE_OFFER if self.offer_deflate else b"",
            )
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self.is_open = False
        if not self.handshake.done():
            self.handshake.set_exception(ConnectionError(f"connection lost during the handshake: {exc!r}"))
        if not self.lost.done():
            self.lost.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self._buffer:
            data = self._buffer + data
            self._buffer = b""
        if not self.is_open:
            data = self._handshake_response(data)
            if not data:
                return
        pos = 0
        end = len(data)
        while end - pos >= 2:
            b0 = data[pos]
            length = data[pos + 1] & 0x7F
            start = pos + 2
            if length == 126:
                if end - pos < 4:
                    break
                length = (data[pos + 2] << 8) | data[pos + 3]
                start = pos + 4
            elif length == 127:
                if end - pos < 10:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                start = pos + 10
            stop = start + length
            if stop > end:
                break
            payload = data[start:stop]
            pos = stop
            opcode = b0 & 0x0F
            if opcode in (OP_TEXT, OP_BINARY):
                if b0 & 0x80:
                    self.received += 1
                    self.on_data(self, self._inflate(payload) if b0 & 0x40 else payload)
                else:
                    self._fragments = [payload]
                    self._fragments_compressed = bool(b0 & 0x40)
            elif opcode == OP_CONT and self._fragments is not None:
                self._fragments.append(payload)
                if b0 & 0x80:
                    whole = b"".join(self._fragments)
                    self._fragments = None
                    self.received += 1
                    self.on_data(self, self._inflate(whole) if self._fragments_compressed else whole)
            elif opcode == OP_PING:
                self.writeframe(OP_PONG, payload)
            elif opcode == OP_CLOSE:
                self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                if not self.close_sent:
                    self.writeframe(OP_CLOSE, payload[:2])
                    self.close_sent = True
        if pos < end:
            self._buffer = data[pos:]

    def _inflate(self, payload: bytes) -> bytes:
        """A compressed message's payload (RSV1 set): raw deflate, its tail restored."""
        if self._inflater is None:
            raise ConnectionError("a compressed frame arrived without permessage-deflate negotiated")
        self.compressed += 1
        return self._inflater.decompress(payload + _DEFLATE_TAIL)

    def _negotiated(self, answer: bytes | None) -> None:
        if not answer:
            return
        params = [p.strip().lower() for p in answer.split(b";")]
        if params[0] != b"permessage-deflate" or not self.offer_deflate:
            raise ConnectionError(f"the server answered an extension not offered: {answer!r}")
        bits = 15
        for param in params[1:]:
            name, _, value = param.partition(b"=")
            if name.strip() == b"server_max_window_bits" and value:
                bits = int(value.strip().strip(b'"'))
        self.extension = answer
        self._inflater = zlib.decompressobj(-bits)

    def _handshake_response(self, data: bytes) -> bytes:
        head_end = data.find(b"\r\n\r\n")
        if head_end < 0:
            self._buffer = data
            return b""
        head, rest = data[:head_end], data[head_end + 4 :]
        lines = head.split(b"\r\n")
        expected = base64.b64encode(hashlib.sha1(self._key + _GUID).digest())
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if not lines[0].startswith(b"HTTP/1.1 101"):
            error = ConnectionError(f"handshake refused: {lines[0].decode(errors='replace')}")
        elif headers.get(b"sec-websocket-accept") != expected:
            error = ConnectionError("handshake answered with a wrong Sec-WebSocket-Accept")
        else:
            try:
                self._negotiated(headers.get(b"sec-websocket-extensions"))
            except (ConnectionError, ValueError) as exc:
                error = ConnectionError(f"bad extension answer: {exc}")
            else:
                self.is_open = True
                self.handshake.set_result(None)
                return rest
        if not self.handshake.done():
            self.handshake.set_exception(error)
        assert self.transport is not None
        self.transport.abort()
        return b""

    # sending --------------------------------------------------------------------------

    def writeframe(self, opcode: int, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame(opcode, payload, self.mask))

    def send_text(self, payload: bytes) -> None:
        self.writeframe(OP_TEXT, payload)

    def begin_close(self) -> None:
        if not self.close_sent:
            self.close_sent = True
            self.writeframe(OP_CLOSE, struct.pack("!H", 1000))


# connecting and closing ------------------------------------------------------------------


async def connect(
    host: str, port: int, path: str, timeout: float, tiny_buffers: bool = False, deflate: bool = False
) -> Connection:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        if tiny_buffers:
            # A stalled reader whose kernel buffers fill after a few KiB: a small receive
            # buffer, and a small MSS so that the server's send buffer starts small too.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
        else:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.wait_for(loop.sock_connect(sock, (host, port)), timeout)
    except BaseException:
        sock.close()
        raise
    _, conn = await loop.create_connection(lambda: Connection(host, port, path, deflate), sock=sock)
    await asyncio.wait_for(conn.handshake, timeout)
    return conn


async def connect_many(
    host: str,
    ports: list[int],
    count: int,
    concurrency: int = 100,
    path: str = "/ws",
    deflate: bool = False,
    timeout: float = 15.0,
) -> list[Connection]:
    """Open `count` connections, spread round-robin over `ports`, `concurrency` at a time."""
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int) -> Connection:
        async with gate:
            return await connect(host, ports[index % len(ports)], path, timeout=timeout, deflate=deflate)

    results = await asyncio.gather(*(one(i) for i in range(count)), return_exceptions=True)
    conns = [r for r in results if isinstance(r, Connection)]
    failures = [r for r in results if not isinstance(r, Connection)]
    if failures:
        await close_all(conns)
        raise RuntimeError(f"{len(failures)} of {count} connections failed; first: {failures[0]!r}")
    return conns


async def close_all(conns: list[Connection], timeout: float = 5.0) -> None:
    """Close cleanly (close frame, wait for the server to hang up), abort the stragglers."""
    for conn in conns:
        conn.on_data = ignore
        if conn.transport is not None:
            conn.transport.resume_reading()
        conn.begin_close()
    waiting = [conn.lost for conn in conns if not conn.lost.done()]
    if waiting:
        await asyncio.wait(waiting, timeout=timeout)
    for conn in conns:
        if conn.transport is not None and not conn.lost.done():
            conn.transport.abort()
