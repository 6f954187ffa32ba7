"""The chat's HTTP API: a room's messages (read and post) and the list of rooms."""

from __future__ import annotations

import re
from typing import Any

from examples.chat.config import API_LIMIT_DEFAULT, API_LIMIT_MAX
from examples.chat.names import InvalidInputError, check_room, check_text, check_user
from examples.chat.rooms import ChatRooms, PostError
from examples.chat.store import Store
from wirehall import HTTPController, HTTPError, Response

__all__ = ["RoomList", "RoomMessages", "parse_limit", "parse_since"]

_DIGITS = re.compile(r"[0-9]{1,18}")  # fits a 64-bit integer column


def parse_since(raw: str | None) -> int | None:
    """The `since` query parameter: absent, or a message id (a whole number, 0 or more)."""
    if raw is None:
        return None
    if _DIGITS.fullmatch(raw) is None:
        raise InvalidInputError(f"since={_shown(raw)} is not a message id; use a whole number, 0 or more")
    return int(raw)


def parse_limit(raw: str | None) -> int:
    """The `limit` query parameter: 1 to 500, 50 when absent."""
    if raw is None:
        return API_LIMIT_DEFAULT
    if _DIGITS.fullmatch(raw) is None or not 1 <= int(raw) <= API_LIMIT_MAX:
        raise InvalidInputError(
            f"limit={_shown(raw)} is not allowed; use a whole number from 1 to {API_LIMIT_MAX}"
        )
    return int(raw)


def _shown(raw: str) -> str:
    return repr(raw if len(raw) <= 24 else raw[:24] + "…")


def _bad_request(exc: InvalidInputError) -> HTTPError:
    return HTTPError(400, str(exc))


class RoomMessages(HTTPController):
    """`/api/rooms/{room}/messages`: read a room's messages, or post one."""

    async def get(self, room: str, store: Store) -> dict[str, Any]:
        """The room's last `limit` messages, or with `since` the first `limit` after it."""
        try:
            room = check_room(room)
            since = parse_since(self.query.get("since"))
            limit = parse_limit(self.query.get("limit"))
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
