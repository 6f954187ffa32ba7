"""RFC 6455 frames as the server writes them, built once per payload and shared.

Plain functions and one small cache, no I/O. The native server path
(`wirehall.server.websocket`) writes these bytes straight to each member's transport,
so a broadcast to a thousand members encodes its text and builds its frame once, not a
thousand times (`frame_of` keeps the frame on the broadcast's message).

Compression (permessage-deflate, RFC 7692): the server always negotiates
`server_no_context_takeover`, so a compressed message depends only on its payload and
the window size; every member that negotiated the same window shares one compressed
frame. Payloads shorter than `DEFLATE_MIN_SIZE` go uncompressed (RFC 7692 lets the
sender choose per message): deflating a short chat line costs more CPU than the bytes it saves.
"""

from __future__ import annotations

import zlib
from typing import Any

from wirehall.types import Message

__all__ = [
    "DEFLATE_MEM_LEVEL",
    "DEFLATE_MIN_SIZE",
    "OP_BINARY",
    "OP_CLOSE",
    "OP_CONT",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "Broadcast",
    "close_frame",
    "deflate",
    "frame",
    "frame_of",
    "inflate",
]

OP_CONT, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA

DEFLATE_MIN_SIZE = 128
"""Payloads (bytes) shorter than this are sent uncompressed even when compression was negotiated."""
DEFLATE_MEM_LEVEL = 5
_DEFLATE_TAIL = b"\x00\x00\xff\xff"


def frame(opcode: int, payload: bytes, rsv1: bool = False) -> bytes:
    """One final, unmasked frame (what a server sends)."""
    first = (0xC0 if rsv1 else 0x80) | opcode
    size = len(payload)
    if size < 126:
        return bytes((first, size)) + payload
    if size < 65536:
        return bytes((first, 126)) + size.to_bytes(2, "big") + payload
    return bytes((first, 127)) + size.to_bytes(8, "big") + payload


def close_frame(code: int | None, reason: str = "") -> bytes:
    """A close frame with `code` and `reason` (None: an empty close, 1005 on the other side)."""
    if code is None:
        return frame(OP_CLOSE, b"")
    data = reason.encode()
    if len(data) > 123:  # the frame's limit: cut at a character, never inside one
        data = data[:123].decode(errors="ignore").encode()
    return frame(OP_CLOSE, code.to_bytes(2, "big") + data)


def deflate(payload: bytes, window_bits: int) -> bytes:
    """`payload` compressed as one permessage-deflate message with no context takeover."""
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -window_bits, DEFLATE_MEM_LEVEL)
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return data[:-4] if data.endswith(_DEFLATE_TAIL) else data


def inflate(payload: bytes, window_bits: int, max_size: int) -> bytes | None:
    """One compressed message's payload, or None when it inflates to more than `max_size` bytes.

    Raises:
        zlib.error: the payload is not valid deflate data.
    """
    decompressor = zlib.decompressobj(-window_bits)
    data = decompressor.decompress(payload + _DEFLATE_TAIL, max_size + 1)
    if len(data) > max_size or decompressor.unconsumed_tail:
        return None
    return data


class Broadcast(dict[str, Any]):
    """An ASGI `websocket.send` message that remembers its frames (one per compression window).

    To any ASGI server it is the plain message dict; the native path builds its frame once
    and every member writes the same bytes.
    """

    __slots__ = ("frames",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.frames: dict[int, bytes] | None = None


def _payload(message: Message) -> tuple[int, bytes]:
    text: str | None = message.get("text")
    if text is not None:
        return OP_TEXT, text.encode()
    data: bytes | None = message.get("bytes")
    return OP_BINARY, data if data is not None else b""


def _build(message: Message, window_bits: int) -> bytes:
    opcode, payload = _payload(message)
    if window_bits and len(payload) >= DEFLATE_MIN_SIZE:
        return frame(opcode, deflate(payload, window_bits), rsv1=True)
    return frame(opcode, payload)


def frame_of(message: Message, window_bits: int) -> bytes:
    """The frame of a `websocket.send` message for a member whose compression window is
    `window_bits` (0: no compression); a `Broadcast` builds each variant once."""
    if type(message) is not Broadcast:
        return _build(message, window_bits)
    frames = message.frames
    if frames is None:
        built = _build(message, window_bits)
        message.frames = {window_bits: built}
        return built
    built_once = frames.get(window_bits)
    if built_once is None:
        built_once = frames[window_bits] = _build(message, window_bits)
    return built_once
