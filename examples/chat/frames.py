"""The JSON frames of the chat's WebSocket protocol, and reading what a client sent.

Client to server: `{"type": "message", "text": T}` and `{"type": "ping"}`.
Server to client: welcome, presence, message (a stored `Message`), pong and error.
"""

from __future__ import annotations

import msgspec

from examples.chat.store import Message

__all__ = [
    "FRAME_HELP",
    "ClientFrame",
    "ErrorFrame",
    "Ping",
    "Pong",
    "Presence",
    "SendText",
    "Welcome",
]

FRAME_HELP = 'send {"type": "message", "text": "..."} or {"type": "ping"}'


class SendText(msgspec.Struct, frozen=True, tag="message", tag_field="type"):
    """A client asks to post `text` to the room."""

    text: str


class Ping(msgspec.Struct, frozen=True, tag="ping", tag_field="type"):
    """A client checks that the connection is alive."""


ClientFrame = SendText | Ping


class Welcome(msgspec.Struct, frozen=True, tag="welcome", tag_field="type"):
    """The first frame on every connection: who you are, and the history you asked for."""

    room: str
    user: str
    history: list[Message]


class Presence(msgspec.Struct, frozen=True, tag="presence", tag_field="type"):
    """The distinct names online in `room`, sorted."""

    room: str
    users: list[str]


class Pong(msgspec.Struct, frozen=True, tag="pong", tag_field="type"):
    """The answer to a ping."""


class ErrorFrame(msgspec.Struct, frozen=True, tag="error", tag_field="type"):
    """What was wrong with the client's last frame, for a person; nothing was stored."""

    error: str
