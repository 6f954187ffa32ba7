"""The chat's HTTP API: a room's messages (read and post) and the list of rooms."""

from __future__ import annotations

import logging
from typing import Annotated, Any, NoReturn

import msgspec
from sqlalchemy.exc import SQLAlchemyError

from examples.chat.config import API_LIMIT_DEFAULT, API_LIMIT_MAX, ROOM_LIST_DEFAULT, ROOM_LIST_MAX
from examples.chat.names import InvalidInputError, check_room, check_text, check_user
from examples.chat.rooms import ChatRooms, PostError
from examples.chat.store import Store
from wirehall import (
    BackplaneError,
    HTTPController,
    HTTPError,
    RequestValidationError,
    Response,
    json_only,
    same_site,
)

__all__ = ["RoomList", "RoomMessages"]

logger = logging.getLogger(__name__)


MessageId = Annotated[int, msgspec.Meta(ge=0, le=10**18 - 1)]  # fits a 64-bit integer column
PageSize = Annotated[int, msgspec.Meta(ge=1, le=API_LIMIT_MAX)]
RoomCount = Annotated[int, msgspec.Meta(ge=1, le=ROOM_LIST_MAX)]


class NewMessage(msgspec.Struct):
    """The body of a post: `{"user": U, "text": T}` (checked further by the chat's name rules)."""

    user: str
    text: str


def _bad_request(exc: InvalidInputError) -> HTTPError:
    return HTTPError(400, str(exc))


class _ChatAPI(HTTPController):
    async def on_invalid_input(self, error: RequestValidationError) -> NoReturn:
        # the chat's contract answers every bad input with 400 (its clients predate the 422s)
        raise HTTPError(400, error.detail) from error


class RoomMessages(_ChatAPI):
    """`/api/rooms/{room}/messages`: read a room's messages, or post one."""

    async def get(
        self, room: str, store: Store, since: MessageId | None = None, limit: PageSize = API_LIMIT_DEFAULT
    ) -> dict[str, Any]:
        """The room's last `limit` messages, or with `since` the first `limit` after it."""
        try:
            room = check_room(room)
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
    async def post(self, room: str, rooms: ChatRooms, body: NewMessage) -> Response:
        """Store `{"user": U, "text": T}` and send it to the room, as a WebSocket message would."""
        try:
            room = check_room(room)
            user, text = check_user(body.user), check_text(body.text)
        except InvalidInputError as exc:
            raise _bad_request(exc) from exc
        try:
            message = await rooms.post(room, user, text)
        except PostError as exc:
            raise HTTPError(503, str(exc), headers={"Retry-After": "1"}) from exc
        return self.send_json(message, status=201)


class RoomList(_ChatAPI):
    """`/api/rooms?limit=N`: rooms with people online first, then by newest message."""

    async def get(self, rooms: ChatRooms, limit: RoomCount = ROOM_LIST_DEFAULT) -> dict[str, Any]:
        """Each room's name, distinct users online (on every process) and message count."""
        try:
            return {"rooms": await rooms.overview(limit)}
        except (BackplaneError, SQLAlchemyError, OSError) as exc:
            raise _unavailable(exc) from exc


def _unavailable(exc: Exception) -> HTTPError:
    logger.warning("answering 503: %r", exc)
    return HTTPError(
        503, "the chat is unavailable right now; try again shortly", headers={"Retry-After": "1"}
    )
