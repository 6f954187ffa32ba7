"""`/ws/{room}?user=NAME[&since=ID]`: one person in one chat room, over a WebSocket."""

from __future__ import annotations

import logging

from sqlalchemy.exc import SQLAlchemyError

from examples.chat.config import RESUME_LIMIT, WELCOME_HISTORY, ChatSettings
from examples.chat.frames import FRAME_HELP, ClientFrame, ErrorFrame, Ping, Pong, Presence, SendText, Welcome
from examples.chat.names import (
    InvalidInputError,
    check_query,
    check_room,
    check_since,
    check_text,
    check_user,
)
from examples.chat.rooms import ChatRooms, PostError
from examples.chat.store import Message, Store
from wirehall import BackplaneError, CloseCode, WebSocketController

__all__ = ["ChatRoom"]

logger = logging.getLogger(__name__)


class ChatRoom(WebSocketController):
    """Welcome with history, presence, messages in and out, ping and pong.

    Text frames only (binary closes with 1003); frames over 64 KiB close with 1009;
    frames that are not a chat frame get an error frame and change nothing.
    """

    receives = "text"
    message_type = ClientFrame
    sends = Welcome | Presence | Message | Pong | ErrorFrame  # for the AsyncAPI document
    max_message_size = 65536
    # CHAT_RATE_LIMIT's default; create_app gives each app the rate of its settings
    rate_limit = ChatSettings().message_rate_limit

    room_name: str
    user_name: str

    async def on_connect(self, room: str, store: Store, rooms: ChatRooms) -> None:
        """Refuse bad names (HTTP 403); else accept, send the welcome, then join."""
        try:
            room = check_room(room)
            query = check_query(self.scope.get("query_string", b""))  # `user=%FF` is not a name
            user = check_user(query.get("user") or "")
            since = check_since(query.get("since"))
        except InvalidInputError as exc:
            await self.refuse(403, str(exc))
            return
        self.room_name, self.user_name = room, user
        await self.accept()
        # Join first, holding the room's live messages back; then read the history. A message
        # stored before the read is in the history; one stored after it is broadcast after we
        # joined, so it is among those held back. The release sends the held ones that follow
        # the history (by their place in the room), in order: none lost, none twice, and no
        # lock held while waiting on the backplane or the database.
        try:
            await self.join(room, identity=user, hold=True)
            if since is None:  # the room's latest page, which a crowd of joiners shares
                history = await rooms.recent_history(room, WELCOME_HISTORY)
            else:
                history = await store.history(room, since, RESUME_LIMIT)
        except BackplaneError as exc:
            logger.warning("%r could not join %r: %s", user, room, exc)
            await self.close(CloseCode.TRY_AGAIN_LATER, "the chat is unavailable; try again")
            return
        except (SQLAlchemyError, OSError) as exc:
            logger.warning("%r could not read the history of %r: %s", user, room, exc)
            await self.close(CloseCode.TRY_AGAIN_LATER, "the chat's messages are unavailable; try again")
            return
        self.send_json_nowait(Welcome(room=room, user=user, history=history.messages))
        self.release(room, after=history.position)

    async def on_message(self, frame: SendText | Ping, rooms: ChatRooms) -> None:
        """Post a message to the room, or answer a ping."""
        if isinstance(frame, Ping):
            await self.send_json(Pong())
            return
        try:
            text = check_text(frame.text)
        except InvalidInputError as exc:
            await self.send_error(str(exc))
            return
        try:
            await rooms.post(self.room_name, self.user_name, text)
        except PostError as exc:
            await self.send_error(str(exc))

    async def on_invalid_message(self, error: str, raw: str | bytes) -> None:
        """Say what was wrong with a frame that is not a chat frame; the connection stays."""
        await self.send_error(f"that frame was not understood ({error}); {FRAME_HELP}")
