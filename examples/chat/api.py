"""The chat's HTTP API: a room's messages (read and post) and the list of rooms."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from examples.chat.config import ROOM_LIST_DEFAULT, ROOM_LIST_MAX
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
from wirehall import BackplaneError, HTTPController, HTTPError, Response, json_only, same_site

__all__ = ["RoomList", "RoomMessages"]

logger = logging.getLogger(__name__)


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
        try:
            if since is None:
                messages = await store.recent(room, limit)
            else:
                messages = await store.since(room, since, limit)
        except (SQLAlchemyError, OSError) as exc:
            raise _unavailable(exc) from exc
        return {"room": room, "messages": messages}

    @same_site  # a page on another site cannot post in its visitor's name (403)
    @json_only  # nor send a "simple" text/plain or form post that skips the CORS preflight (415)
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
    """`/api/rooms?limit=N`: rooms with people online first, then by newest message."""

    async def get(self, rooms: ChatRooms) -> dict[str, Any]:
        """Each room's name, distinct users online (on every process) and message count."""
        raw = self.query.get("limit")
        if raw is None:
            limit = ROOM_LIST_DEFAULT
        elif raw.isascii() and raw.isdigit() and len(raw) <= 4 and 1 <= int(raw) <= ROOM_LIST_MAX:
            limit = int(raw)
        else:
            shown = repr(raw if len(raw) <= 24 else raw[:24] + "…")
            raise HTTPError(
                400, f"limit={shown} is not allowed; use a whole number from 1 to {ROOM_LIST_MAX}"
            )
        try:
            return {"rooms": await rooms.overview(limit)}
        except (BackplaneError, SQLAlchemyError, OSError) as exc:
            raise _unavailable(exc) from exc


def _unavailable(exc: Exception) -> HTTPError:
    logger.warning("answering 503: %r", exc)
    return HTTPError(
        503, "the chat is unavailable right now; try again shortly", headers={"Retry-After": "1"}
    )
