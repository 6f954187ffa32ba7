"""The chat app: the store and room service in the container, the page, the API, the socket."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from examples.chat.api import RoomList, RoomMessages
from examples.chat.config import ChatSettings
from examples.chat.room import ChatRoom
from examples.chat.rooms import ChatRooms, chat_rooms
from examples.chat.store import Store
from wirehall import HTTPController, Response, Wirehall

__all__ = ["STATIC", "create_app"]

STATIC = Path(__file__).parent / "static"
DRAIN_TIMEOUT = 10.0  # seconds a client's output may stay backed up before it is dropped


class Page(HTTPController):
    """`/`: the chat page."""

    async def get(self) -> Response:
        """The page itself; its script and styles are under `/static/`."""
        return self.send_file(STATIC / "index.html")


async def healthz() -> dict[str, str]:
    """`{"status": "ok"}` once the app serves (its store and backplane started)."""
    return {"status": "ok"}


def create_app(settings: ChatSettings | None = None, **options: Any) -> Wirehall:
    """Build the chat app; `options` go to `Wirehall` (say `backplane=` in tests)."""
    settings = ChatSettings.from_env() if settings is None else settings
    options.setdefault("max_connections_per_address", settings.max_connections_per_address)
    given_service = "websockets" in options
    app = Wirehall(**options)
    if not given_service:
        # A client that stopped reading is let go well within the contract's 30 s: its
        # output may stay undrained for 10 s, then it gets 5 s to take its close frame.
        app.websockets.drain_timeout = DRAIN_TIMEOUT

    message_limit = settings.message_rate_limit

    class Room(ChatRoom):  # this app's CHAT_RATE_LIMIT, from its settings
        rate_limit = message_limit
        slow_consumer_close_timeout = DRAIN_TIMEOUT

    async def store() -> AsyncIterator[Store]:
        chat_store = Store(settings.database_url)
        await chat_store.start()
        try:
            yield chat_store
        finally:
            await chat_store.close()

    app.container.singleton(Store, store)
    app.container.singleton(ChatRooms, chat_rooms)

    app.add_route("/healthz", healthz)
    app.add_route("/", Page)
    app.static("/static", STATIC)
    app.serve_client()  # /wirehall.js, which the page's script imports
    app.add_route("/api/rooms", RoomList)
    # `path` so that a room name with a slash, or an empty one, reaches the endpoint and
    # is refused there as invalid (400 / 403), rather than being an unknown path (404)
    app.add_route("/api/rooms/{room:path}/messages", RoomMessages)
    app.add_websocket_route("/ws/{room:path}", Room, name="ChatRoom")
    return app
