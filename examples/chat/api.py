"""The chat's HTTP API: a room's messages (read and post) and the list of rooms."""

from __future__ import annotations

from typing import Any

from examples.chat.names import (
    InvalidInputError,
    check_limit,
    check_room,
    check_since,
    check_text,
    check_user,
)
from examples.chat.rooms import ChatRooms, PostError
from examples.chat.store import Store
from wirehall import HTTPController, HTTPError, Response

__all__ = ["RoomList", "RoomMessages"]


def _bad_request(exc: InvalidInputError) -> HTTPError:
    return HTTPError(400, str(exc))


class RoomMessages(HTTPController):
    """`/api/rooms/{room}/messages`: read a room's messages, or post one."""

    async def get(self, room: str, store: Store) -> dict[str, Any]:
        """The room's last `limit` messages, or with `since` the first `limit` after it."""
        try:
            room = check_room(room)
            since = check_since(self.query.get("since"))
            limit = check_limit(self.query.get("limit"))
        except InvalidInputError as exc:
            raise _bad_request(exc) from exc
        if since is None:
            messages = await store.recent(room, limit)
        else:
            messages = await store.since(room, since, limit)
        return {"room": room, "messages": messages}

    async def post(self, room: str, rooms: ChatRooms) -> Response:
        """Store `{"user": U, "text": T}` and send it to the room, as a WebSocket message would."""
        try:
            room = check_room(room)
        except InvalidInputError as exc:
            raise _bad_request(exc) from exc
        data = await self.request.json()
        if not isinstance(data, dict):
            raise HTTPError(400, 'the body must be a JSON object like {"user": "ann", "text": "hi"}')
        user, text = data.get("user"), data.get("text")
        if not isinstance(user, str):
            raise HTTPError(400, '"user" is missing or not a string; send {"user": ..., "text": ...}')
        if not isinstance(text, str):
            raise HTTPError(400, '"text" is missing or not a string; send {"user": ..., "text": ...}')
        try:
            user, text = check_user(user), check_text(text)
        except InvalidInputError as exc:
            raise _bad_request(exc) from exc
        try:
            message = await rooms.post(room, user, text)
        except PostError as exc:
            raise HTTPError(503, str(exc), headers={"Retry-After": "1"}) from exc
        return self.send_json(message, status=201)


class RoomList(HTTPController):
    """`/api/rooms`: every room with messages or people online."""

    async def get(self, rooms: ChatRooms) -> dict[str, Any]:
        """Each room's name, distinct users online (on every process) and message count."""
        return {"rooms": await rooms.overview()}
