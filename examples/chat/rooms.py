"""What happens in a room: posting a message, and who is online.

Posting is shared by the WebSocket and the HTTP API, so a message posted either way
reaches the room's clients the same way: stored, then broadcast.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from examples.chat.frames import Presence
from examples.chat.store import Message, Store
from wirehall import BackplaneError, EventBus, PresenceChanged, WebSocketService

__all__ = ["ChatRooms", "PostError", "chat_rooms"]

logger = logging.getLogger(__name__)


class PostError(Exception):
    """A message could not be stored or broadcast; nothing was stored. `str()` says so."""


class _RoomLocks:
    """One asyncio lock per room, forgotten when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, room: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(room) or (asyncio.Lock(), 0)
        self._locks[room] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[room]
            if users == 1:
                del self._locks[room]
            else:
                self._locks[room] = (lock, users - 1)


class ChatRooms:
    """Posts messages (store, then broadcast) and announces presence for every room."""

    # After announcing, read presence again this much later: two processes announcing at
    # once can have their lists delivered in the opposite order to the one they were read
    # in, leaving the older list last; the process whose list is out of date sends again.
    recheck_after = 0.25

    def __init__(self, store: Store, service: WebSocketService) -> None:
        self.store = store
        self.service = service
        self._announcing = _RoomLocks()
        self._announced: dict[str, list[str]] = {}
        self._rechecks: dict[str, asyncio.Task[None]] = {}

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

    async def announce(self, event: PresenceChanged) -> None:
        """Send the room its presence list (subscribed to `PresenceChanged`)."""
        await self._send_presence(event.room, only_if_changed=False)
        if event.room not in self._rechecks:
            task = asyncio.get_running_loop().create_task(self._recheck(event.room))
            self._rechecks[event.room] = task

    async def _send_presence(self, room: str, *, only_if_changed: bool) -> None:
        async with self._announcing.hold(room):  # lists go out in the order they were read
            users = await self.online(room)
            if only_if_changed and self._announced.get(room, []) == users:
                return
            await self.service.broadcast(room, Presence(room=room, users=users))
            if users:
                self._announced[room] = users
            else:
                self._announced.pop(room, None)

    async def _recheck(self, room: str) -> None:
        try:
            await asyncio.sleep(self.recheck_after)
            del self._rechecks[room]  # a change from here on schedules another recheck
            await self._send_presence(room, only_if_changed=True)
        except BackplaneError as exc:  # the next change or heartbeat announces again
            logger.warning("presence of %r not re-checked: %s", room, exc)

    async def close(self) -> None:
        """Stop pending presence re-checks (at shutdown)."""
        tasks = list(self._rechecks.values())
        self._rechecks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

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
    events.subscribe(PresenceChanged, rooms.announce)
    try:
        yield rooms
    finally:
        events.unsubscribe(PresenceChanged, rooms.announce)
        service.replay_from(None)
        await rooms.close()
