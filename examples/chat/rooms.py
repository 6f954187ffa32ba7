"""What happens in a room: posting a message, and who is online.

Posting is shared by the WebSocket and the HTTP API, so a message posted either way
reaches the room's clients the same way: stored, then broadcast.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from examples.chat.frames import Presence
from examples.chat.store import History, Message, Store
from wirehall import EventBus, PresenceDiff, WebSocketService

__all__ = ["ChatRooms", "PostError", "chat_rooms"]

logger = logging.getLogger(__name__)

RECENT_ROOMS = 1024
"""Rooms whose last welcome history is kept for the next joiner (the least recently joined go first)."""


class PostError(Exception):
    """A message could not be stored or broadcast; nothing was stored. `str()` says so."""


class ChatRooms:
    """Posts messages (store, then broadcast) and announces presence for every room."""

    def __init__(self, store: Store, service: WebSocketService) -> None:
        self.store = store
        self.service = service
        # room -> how many connections of each name are in it (on every process), kept
        # from the service's presence diffs, for the rooms with members on this process
        self._names: dict[str, Counter[str]] = {}
        # room -> the last welcome history read for it (see `recent_history`), newest rooms last
        self._recent: OrderedDict[str, tuple[int, History]] = OrderedDict()

    async def recent_history(self, room: str, limit: int) -> History:
        """The room's last `limit` messages for a joiner (who already joined, holding the room).

        A crowd joining one room would read the same page once per person; the page read
        last is reused while no newer message has been delivered on this process
        (`WebSocketService.delivered_position`): whatever came after it is still to be
        delivered, so the joiner gets it live, after the page. Otherwise it is read again.
        """
        cached = self._recent.get(room)
        delivered = self.service.delivered_position(room)
        if (
            cached is not None
            and cached[0] == limit
            and delivered is not None
            and cached[1].position >= delivered
        ):
            self._recent.move_to_end(room)
            return cached[1]
        history = await self.store.history(room, None, limit)
        self._recent[room] = (limit, history)
        self._recent.move_to_end(room)
        while len(self._recent) > RECENT_ROOMS:
            self._recent.popitem(last=False)
        return history

    async def post(self, room: str, user: str, text: str) -> Message:
        """Store the message, then broadcast it to the room; returns it as stored.

        Only a committed message is broadcast, with its place in the room (`seq`) as its
        position: the service delivers a room's messages in that order on every process,
        whichever process stored them, and fetches any that went missing from the store
        (`replay_from(store.replay)`). If the database fails, nothing is stored or sent and
        `PostError` says so. A backplane outage does not fail the post: this process's
        clients get the message at once and the others once the backplane is back.
        """
        try:
            message, seq = await self.store.add_numbered(room, user, text)
        except (SQLAlchemyError, OSError) as exc:
            logger.warning("message to %r not stored: %s", room, exc)
            raise PostError("the message could not be stored; try again") from exc
        await self.service.broadcast(room, message, position=seq)
        logger.debug("message %d (#%d of %r) posted by %r", message.id, seq, room, user)
        return message

    async def online(self, room: str) -> list[str]:
        """The distinct names online in `room` on every process, sorted."""
        return sorted(set((await self.service.presence(room)).values()))

    def announce(self, event: PresenceDiff) -> None:
        """Send this process's members of the room its presence list (subscribed to `PresenceDiff`).

        The service sends each room's diffs on every process with members in it, at most
        4 a second, so each client gets at most 4 lists a second, the last one current; the
        list is built from the diffs and encoded once, with no read of the backplane.
        """
        room = event.room
        names = self._names.get(room)
        if names is None:
            names = self._names[room] = Counter()
        for name in event.left.values():
            if names[name] > 1:
                names[name] -= 1
            else:
                del names[name]
        names.update(event.joined.values())
        if not names:
            del self._names[room]  # nobody left here: the next diff starts from everybody
        self.service.broadcast_local(room, Presence(room=room, users=sorted(names)))

    async def overview(self, limit: int) -> list[dict[str, Any]]:
        """At most `limit` rooms: those with people online (on any process), then the others
        by their newest message, newest first; each with its users online and message count.

        Costs one presence read per occupied room and two indexed queries, however many
        rooms are stored. Raises `BackplaneError` or a database error when either is down.
        """
        occupied = await self.service.occupied_rooms()
        online = dict(
            zip(occupied, await asyncio.gather(*(self.online(name) for name in occupied)), strict=True)
        )
        present = [name for name, users in online.items() if users]
        stats = await self.store.room_stats(present)
        present.sort(key=lambda name: (-(stats[name].last_id if name in stats else 0), name))
        listed = [
            {
                "room": name,
                "online": len(online[name]),
                "messages": stats[name].messages if name in stats else 0,
            }
            for name in present[:limit]
        ]
        if len(listed) < limit:
            for room in await self.store.latest_rooms(limit + len(present)):
                if room.room not in online or not online[room.room]:
                    listed.append({"room": room.room, "online": 0, "messages": room.messages})
                    if len(listed) == limit:
                        break
        return listed


async def chat_rooms(store: Store, service: WebSocketService, events: EventBus) -> AsyncIterator[ChatRooms]:
    """Container factory: the app's `ChatRooms`, announcing presence while the app runs."""
    rooms = ChatRooms(store, service)
    service.replay_from(store.replay)
    events.subscribe(PresenceDiff, rooms.announce)
    try:
        yield rooms
    finally:
        events.unsubscribe(PresenceDiff, rooms.announce)
        service.replay_from(None)
