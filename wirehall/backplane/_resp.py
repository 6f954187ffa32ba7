"""Just enough RESP2 for the Redis backplane's hot paths: pack PUBLISH, parse replies in bulk.

redis-py parses one reply per await (several reads and a timeout each). Here a socket
read of up to 64 KiB is parsed synchronously into every complete reply it holds, which
is what lets a node read pub/sub messages and PUBLISH acknowledgements at a high rate.
"""

from __future__ import annotations

import asyncio
from typing import Final

__all__ = ["INCOMPLETE", "Incomplete", "Reply", "RespError", "RespReader", "pack_publish"]

_READ_SIZE: Final = 65536


class RespError(Exception):
    """An error reply from Redis (`-ERR ...`), or a reply that is not valid RESP2."""


Reply = bytes | int | list["Reply"] | RespError | None


class Incomplete:
    """The buffer does not hold a whole reply yet."""


INCOMPLETE: Final = Incomplete()


def pack_publish(channel: bytes, payload: bytes) -> bytes:
    """The RESP2 command `PUBLISH channel payload`."""
    return b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n" % (
        len(channel),
        channel,
        len(payload),
        payload,
    )


def _parse(buffer: bytes, pos: int) -> tuple[Reply, int] | None:
    """The reply starting at `pos` and the position after it, or None when incomplete."""
    end = buffer.find(b"\r\n", pos)
    if end < 0:
        return None
    kind = buffer[pos]
    if kind == 36:  # $ bulk string
        length = int(buffer[pos + 1 : end])
        if length < 0:
            return None, end + 2
        start = end + 2
        stop = start + length
        if len(buffer) < stop + 2:
            return None
        return buffer[start:stop], stop + 2
    if kind == 42:  # * array
        count = int(buffer[pos + 1 : end])
        pos = end + 2
        if count < 0:
            return None, pos
        items: list[Reply] = []
        for _ in range(count):
            parsed = _parse(buffer, pos)
            if parsed is None:
                return None
            item, pos = parsed
            items.append(item)
        return items, pos
    if kind == 58:  # : integer
        return int(buffer[pos + 1 : end]), end + 2
    if kind == 43:  # + simple string
        return buffer[pos + 1 : end], end + 2
    if kind == 45:  # - error
        return RespError(buffer[pos + 1 : end].decode(errors="replace")), end + 2
    raise RespError(f"not a RESP2 reply: {buffer[pos : pos + 32]!r}")


class RespReader:
    """Replies read from a stream, parsed many per read.

    The stream must be positioned at the start of a reply (nothing half-read by someone
    else). `pop()` takes the next complete reply; `fill()` waits for more bytes.
    """

    __slots__ = ("_buffer", "_pos", "_stream")

    def __init__(self, stream: asyncio.StreamReader) -> None:
        self._stream = stream
        self._buffer = b""
        self._pos = 0

    def pop(self) -> Reply | Incomplete:
        """The next complete reply, or `INCOMPLETE`.

        Raises:
            RespError: the bytes are not RESP2 (the connection is unusable).
        """
        if self._pos >= len(self._buffer):
            return INCOMPLETE
        try:
            parsed = _parse(self._buffer, self._pos)
        except ValueError as exc:  # a length or integer that is not a number
            raise RespError(f"malformed RESP2 reply: {exc}") from exc
        if parsed is None:
            return INCOMPLETE
        reply, self._pos = parsed
        return reply

    async def fill(self) -> None:
        """Wait for more bytes from the stream (cancel-safe: nothing is lost).

        Raises:
            ConnectionError: the server closed the connection.
        """
        data = await self._stream.read(_READ_SIZE)
        if not data:
            raise ConnectionError("Redis closed the connection")
        if self._pos >= len(self._buffer):
            self._buffer = data
        else:
            self._buffer = self._buffer[self._pos :] + data
        self._pos = 0

    async def reply(self) -> Reply:
        """The next reply, waiting for it as long as it takes (bound it with a timeout)."""
        while isinstance(reply := self.pop(), Incomplete):
            await self.fill()
        return reply

    @property
    def is_broken(self) -> bool:
        """The stream has ended or failed: whatever is sent next would be lost."""
        return self._stream.at_eof() or self._stream.exception() is not None
