"""What the `WebSocketService` puts on the backplane, and how it delivers each once.

An envelope carries one frame, already encoded, to the connections of a room, to one
connection, or to all of them. Every node delivers an envelope only when it comes back
from the backplane, so all nodes deliver in the backplane's order and the publisher
delivers once. Each origin numbers its envelopes; a receiver keeps, per origin, the
highest number seen and a window of the numbers just below it, and drops an envelope
it has already seen or that is older than the window. The window (rather than a bare
"newer than the last one") tolerates a backplane that reorders an origin's envelopes
across channels or connections a little, without ever delivering one twice.
"""

from __future__ import annotations

import enum

import msgspec

__all__ = ["WINDOW", "Envelope", "Kind", "SeenWindow", "decode_envelope", "encode_envelope"]

WINDOW = 1024
_FULL = (1 << WINDOW) - 1


class Kind(enum.IntEnum):
    """Who an envelope is for."""

    ROOM = 0  # the local members of room `target`
    ALL = 1  # every local connection
    DIRECT = 2  # the connection whose id is `target`
    PRESENCE = 3  # for the service of every node following room `target` (`data`: a presence notice)


class Envelope(msgspec.Struct, array_like=True, frozen=True):
    """One frame on its way through the backplane (msgpack, as a compact array)."""

    origin: str
    seq: int
    kind: Kind
    target: str
    text: str | None = None
    data: bytes | None = None
    exclude: tuple[str, ...] = ()
    position: int = 0  # the message's place in its room (1, 2, ...), 0 when it has none


encode_envelope = msgspec.msgpack.Encoder().encode
decode_envelope = msgspec.msgpack.Decoder(Envelope).decode


class SeenWindow:
    """Which sequence numbers of one origin were delivered already."""

    __slots__ = ("high", "mask")

    def __init__(self) -> None:
        self.high = 0
        self.mask = 0  # bit i set: `high - i` was seen

    def accept(self, seq: int) -> bool:
        """True the first time `seq` is offered (and it is not older than the window)."""
        high = self.high
        if seq > high:
            shift = seq - high
            self.mask = ((self.mask << shift) | 1) & _FULL if shift < WINDOW else 1
            self.high = seq
            return True
        offset = high - seq
        if offset >= WINDOW:
            return False
        bit = 1 << offset
        if self.mask & bit:
            return False
        self.mask |= bit
        return True
