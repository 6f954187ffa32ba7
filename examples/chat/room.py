"""`/ws/{room}?user=NAME[&since=ID]`: one person in one chat room, over a WebSocket."""

from __future__ import annotations

import logging

from examples.chat.config import RESUME_LIMIT, WELCOME_HISTORY
from examples.chat.frames import FRAME_HELP, ClientFrame, Ping, Pong, SendText, Welcome
from examples.chat.names import InvalidInputError, check_room, check_since, check_text, check_user
from examples.chat.rooms import ChatRooms, PostError
from examples.chat.store import Store
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
    max_message_size = 65536

    room_name: str
    user_name: str

    async def on_connect(self, room: str, store: Store) -> None:
        """Refuse bad names (HTTP 403); else accept, send the welcome, then join."""
        try:
            room = check_room(room)
            user = check_user(self.query.get("user") or "")
            since = check_since(self.query.get("since"))
        except InvalidInputError as exc:
            await self.refuse(403, str(exc))
            return
        self.room_name, self.user_name = room, user
        await self.accept()
        try:
            await self._welcome_and_join(room, user, since, store)
        except BackplaneError as exc:
            logger.warning("%r could not join %r: %s", user, room, exc)
            await self.close(CloseCode.TRY_AGAIN_LATER, "the chat is unavailable; try again")

    async def _welcome_and_join(self, room: str, user: str, since: int | None, store: Store) -> None:
        # No message is being added (by any process) while we read the history and join, so
        # each one is either in the history or broadcast to us after the welcome: none lost,
        # none twice. The welcome is queued, not awaited, so nothing here waits on the client.
        async with store.exclusive() as snapshot:
            if since is None:
                history = await snapshot.recent(room, WELCOME_HISTORY)
            else:
                history = await snapshot.since(room, since, RESUME_LIMIT)
            welcome = Welcome(room=room, user=user, history=history)
            self.send_json_nowait(welcome)
            await self.join(room, identity=user)

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
