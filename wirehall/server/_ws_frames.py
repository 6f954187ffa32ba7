"""Incoming frames of the native WebSocket protocol: parsed and checked as RFC 6455 requires.

Masked, no reserved bits but RSV1 on a compressed message's first frame, known opcodes,
control frames final and at most 125 bytes, continuations only inside a fragmented
message, UTF-8 text, valid close codes; a violation closes with 1002 (1007 for bad
UTF-8 or bad compressed data, 1009 for a message over the size limit, counted on the
frame header before its payload is buffered, and again after inflating).
"""

from __future__ import annotations

from wirehall.server._ws_base import CLOSED as _CLOSED
from wirehall.server._ws_base import CLOSING as _CLOSING
from wirehall.server._ws_base import OPEN as _OPEN
from wirehall.server._ws_base import VALID_CLOSE as _VALID_CLOSE
from wirehall.server._ws_base import FrameError, ProtocolBase
from wirehall.websocket._frames import (
    OP_BINARY,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    close_frame,
    frame,
    inflate,
)

try:  # the C version of the unmasking loop (websockets ships it for every platform it builds)
    from websockets.speedups import apply_mask as _apply_mask  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # pragma: no cover  # a pure-Python install of websockets
    from websockets.frames import apply_mask as _apply_mask  # type: ignore[attr-defined,no-redef,unused-ignore]

__all__ = ["FrameReader"]


class FrameReader(ProtocolBase):
    """Frames in, messages to the app (a part of `WebSocketProtocol`)."""

    __slots__ = ()

    # frames ---------------------------------------------------------------------------

    def _frames(self, data: bytes) -> None:
        """Parse and handle every whole frame in `data`; keep the rest for the next read."""
        pos = 0
        end = len(data)
        try:
            while end - pos >= 2:
                first = data[pos]
                second = data[pos + 1]
                length = second & 0x7F
                head = 2
                if length == 126:
                    if end - pos < 4:
                        break
                    length = int.from_bytes(data[pos + 2 : pos + 4], "big")
                    head = 4
                elif length == 127:
                    if end - pos < 10:
                        break
                    length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                    head = 10
                self._check_header(first, second, length)
                start = pos + head + 4
                if end - start < length:
                    break
                payload = _apply_mask(data[start : start + length], data[pos + head : start])
                pos = start + length
                self._frame(first, payload)
                if self._state is not _OPEN and self._state is not _CLOSING:
                    return
        except FrameError as error:
            self._fail(error.code, error.reason)
            return
        self._buf = data[pos:] if pos < end else b""

    def _check_header(self, first: int, second: int, length: int) -> None:
        if not second & 0x80:
            raise FrameError(1002, "incorrect masking")
        opcode = first & 0x0F
        if opcode >= 0x8:
            if opcode > OP_PONG:
                raise FrameError(1002, f"invalid opcode: {opcode}")
            if not first & 0x80:
                raise FrameError(1002, "fragmented control frame")
            if length > 125:
                raise FrameError(1002, "control frame too long")
            if first & 0x70:
                raise FrameError(1002, "reserved bits must be 0")
            return
        if opcode > OP_BINARY:
            raise FrameError(1002, f"invalid opcode: {opcode}")
        rsv = first & 0x70
        if rsv and (rsv != 0x40 or not self.inflate_bits or opcode == OP_CONT):
            raise FrameError(1002, "reserved bits must be 0")
        if self._frag_size + length > self._server.max_size:
            raise FrameError(1009, f"message over {self._server.max_size} bytes")

    def _frame(self, first: int, payload: bytes) -> None:
        opcode = first & 0x0F
        fin = first & 0x80
        if opcode in (OP_TEXT, OP_BINARY):
            if self._frag is not None:
                raise FrameError(1002, "expected a continuation frame")
            if fin:
                self._message(opcode, payload, bool(first & 0x40))
                return
            self._frag = [payload]
            self._frag_op = opcode
            self._frag_rsv1 = bool(first & 0x40)
            self._frag_size = len(payload)
        elif opcode == OP_CONT:
            parts = self._frag
            if parts is None:
                raise FrameError(1002, "unexpected continuation frame")
            parts.append(payload)
            self._frag_size += len(payload)
            if fin:
                self._frag = None
                self._frag_size = 0
                self._message(self._frag_op, b"".join(parts), self._frag_rsv1)
        elif opcode == OP_PING:
            if self._state is _OPEN:
                self.transport.write(frame(OP_PONG, payload))
        elif opcode == OP_PONG:
            if self._ping_payload is not None and payload == self._ping_payload:
                self._ping_payload = None
                self._schedule_ping()
        else:
            self._close_received(payload)

    def _message(self, opcode: int, payload: bytes, compressed: bool) -> None:
        if compressed:
            try:
                inflated = inflate(payload, self.inflate_bits, self._server.max_size)
            except Exception as exc:  # zlib.error and friends: not deflate data
                raise FrameError(1007, "invalid compressed data") from exc
            if inflated is None:
                raise FrameError(1009, f"message over {self._server.max_size} bytes")
            payload = inflated
        if self._state is not _OPEN:
            return  # closing: messages are dropped until the peer's close
        if opcode == OP_TEXT:
            try:
                text = payload.decode()
            except UnicodeDecodeError:
                raise FrameError(1007, "invalid UTF-8 in a text message") from None
            reader = self._reader
            if reader is not None:
                reader.message(text)
            else:
                self._to_inbox({"type": "websocket.receive", "text": text})
        else:
            reader = self._reader
            if reader is not None:
                reader.message(payload)
            else:
                self._to_inbox({"type": "websocket.receive", "bytes": payload})

    def _close_received(self, payload: bytes) -> None:
        if len(payload) == 1:
            raise FrameError(1002, "close frame too short")
        code: int | None = None
        reason = ""
        if payload:
            code = int.from_bytes(payload[:2], "big")
            if code not in _VALID_CLOSE and not 3000 <= code <= 4999:
                raise FrameError(1002, f"invalid close code {code}")
            try:
                reason = payload[2:].decode()
            except UnicodeDecodeError:
                raise FrameError(1007, "invalid UTF-8 in the close reason") from None
        self._peer_closed = True
        if self._state is _CLOSING:  # the answer to our close: the handshake is complete
            self._close_to(_CLOSED)
            self._stop_timers()
            self.transport.close()
            return
        self._close_to(_CLOSED)
        self._stop_timers()
        self.transport.write(close_frame(code))
        self.transport.close()
        self._tell_closed(code if code is not None else 1005, reason)
