"""`WebSocketService`'s registry: its connections, their rooms, join and leave (see _service_state.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from wirehall.errors import WebSocketStateError
from wirehall.websocket._core import OutputLimits
from wirehall.websocket._presence import PresenceNotice
from wirehall.websocket._service_state import Hold, ServiceState
from wirehall.websocket.codes import CloseCode
from wirehall.websocket.handler import WebSocketHandler

__all__ = ["Membership"]

# one logger for the whole service, whichever of its modules speaks
logger = logging.getLogger("wirehall.websocket.service")


class Membership(ServiceState):
    """The connections of this process and the rooms they are in."""

    def register(self, handler: WebSocketHandler) -> None:
        """Give `handler` an id `"{node_id}.{n}"` and serve it (the endpoint runner does this)."""
        registry = handler.registry
        if registry is self and handler.registered_id in self._connections:
            return
        if registry is not None and registry is not self:
            raise WebSocketStateError(f"{handler!r} is registered with another WebSocketService")
        connection_id = f"{self.node_id}.{next(self._counter)}"
        handler.attach(self, connection_id, self._output_limits())
        self._connections[connection_id] = handler

    def _output_limits(self) -> OutputLimits:
        # the settings are public attributes, read at each register (an app may change them)
        limits = self._limits
        if (
            limits.max_queue != self.max_queue
            or limits.policy is not self.slow_consumer
            or limits.max_pending_bytes != self.max_pending_bytes
            or limits.drain_timeout != self.drain_timeout
        ):
            limits = self._limits = OutputLimits(
                self.max_queue, self.slow_consumer, self.max_pending_bytes, self.drain_timeout
            )
        return limits

    def unregister(self, handler: WebSocketHandler) -> None:
        """Forget `handler` and take it out of its rooms (presence is updated in the background)."""
        connection_id = handler.registered_id
        if connection_id is None or self._connections.get(connection_id) is not handler:
            return
        del self._connections[connection_id]
        metrics = self.metrics
        if metrics is not None and handler.core.accepted:
            core = handler.core
            code = core.close_code or CloseCode.NO_STATUS
            metrics.connection_closed(code, evicted=bool(core.eviction) and code == CloseCode.TRY_AGAIN_LATER)
        joined = self._joined.pop(connection_id, None)
        if not joined:
            return
        for room in joined:
            self._remove_member(room, connection_id)
        self._spawn_background(self._after_unregister(connection_id, list(joined)))

    def _remove_member(self, room: str, connection_id: str) -> bool:
        removed = False
        members = self._rooms.get(room)
        if members is not None and members.pop(connection_id, None) is not None:
            removed = True
            if not members:
                del self._rooms[room]
        holds = self._holding.get(room)
        if holds is not None and holds.pop(connection_id, None) is not None:
            removed = True
            if not holds:
                del self._holding[room]
        ahead = self._ahead.get(room)
        if ahead is not None and ahead.pop(connection_id, None) is not None and not ahead:
            del self._ahead[room]
        if removed and room not in self._rooms and room not in self._holding:
            self._forget_order(room)
        return removed

    def _has_local(self, room: str) -> bool:
        return room in self._rooms or room in self._holding

    async def _after_unregister(self, connection_id: str, rooms: list[str]) -> None:
        for room in rooms:
            try:
                await self.backplane.remove_presence(room, connection_id)
                await self._sync_subscription(room)
            except Exception as exc:  # noqa: BLE001  # background: logged, the next change repairs it
                logger.warning(
                    "could not update presence of room %r after %s left: %r", room, connection_id, exc
                )
            self._presence_left(room, connection_id)
            await self._presence_changed(room)

    def _spawn_background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("background presence update failed", exc_info=task.exception())

    def _handler(self, handler_or_id: WebSocketHandler | str) -> WebSocketHandler | None:
        if isinstance(handler_or_id, str):
            return self._connections.get(handler_or_id)
        connection_id = handler_or_id.registered_id
        if connection_id is not None and self._connections.get(connection_id) is handler_or_id:
            return handler_or_id
        return None

    async def join(
        self, handler_or_id: WebSocketHandler | str, room: str, identity: str = "", *, hold: bool = False
    ) -> None:
        """Put a local connection in `room`, present there as `identity`.

        Once this returns, the connection receives every later broadcast to the room. A
        connection that has closed meanwhile is left out silently.

        With `hold=True`, what the room receives from then on is kept for the connection
        instead of sent, until `release(connection, room, after=...)`: join, read the room's
        history, send it, then release, and the history and the live messages meet with no
        gap and no repeat (positioned broadcasts up to `after` are not sent twice).

        Raises:
            BackplaneError: the backplane could not subscribe or record the presence.
        """
        handler = self._handler(handler_or_id)
        if handler is None:
            logger.debug("join(%r, %r) ignored: no such open connection here", handler_or_id, room)
            return
        connection_id = handler.id
        if hold:
            if connection_id not in self._rooms.get(room, {}):
                self._holding.setdefault(room, {})[connection_id] = Hold(handler)
        else:
            self._room_members(room)[connection_id] = handler
        joined = self._joined.get(connection_id, ())
        if room not in joined:
            self._joined[connection_id] = (*joined, room)
        try:
            await self._sync_subscription(room)
            await self.backplane.add_presence(room, connection_id, identity)
        except BaseException:
            if self._leave_locally(connection_id, room):
                await self._sync_subscription_quietly(room)
            raise
        if not self._is_member(room, connection_id, handler):
            # It closed (or left) while we were waiting on the backplane.
            await self.backplane.remove_presence(room, connection_id)
            return
        token = self._presence.follow(room)
        self._presence.change(room, {connection_id: identity})
        self._announce_presence(room, PresenceNotice(joined={connection_id: identity}))
        if token is not None:  # the room's first member here: read who is there (self included)
            await self._load_presence(room, token)
        else:
            self._schedule_presence(room)
        await self._presence_changed(room)

    def _is_member(self, room: str, connection_id: str, handler: WebSocketHandler) -> bool:
        members = self._rooms.get(room)
        if members is not None and members.get(connection_id) is handler:
            return True
        hold = self._holding.get(room, {}).get(connection_id)
        return hold is not None and hold.handler is handler

    async def leave(self, handler_or_id: WebSocketHandler | str, room: str) -> None:
        """Take a connection out of `room` (no error when it is not there)."""
        connection_id = handler_or_id if isinstance(handler_or_id, str) else handler_or_id.registered_id
        if connection_id is None or not self._leave_locally(connection_id, room):
            return
        try:
            await self.backplane.remove_presence(room, connection_id)
            await self._sync_subscription(room)
        finally:
            self._presence_left(room, connection_id)
        await self._presence_changed(room)

    def _leave_locally(self, connection_id: str, room: str) -> bool:
        joined = self._joined.get(connection_id)
        if joined is not None and room in joined:
            rest = tuple(r for r in joined if r != room)
            if rest:
                self._joined[connection_id] = rest
            else:
                del self._joined[connection_id]
        return self._remove_member(room, connection_id)

    async def occupied_rooms(self) -> list[str]:
        """Rooms with members on any node (this node's `rooms()` are the local ones), sorted."""
        return sorted(set(await self.backplane.rooms()) | set(self._rooms))

    async def presence(self, room: str) -> dict[str, str]:
        """`{connection_id: identity}` of the members of `room` on every node."""
        return await self.backplane.presence(room)

    async def _sync_subscription(self, room: str) -> None:
        # Subscribe to a room's channel while it has local members, and only then.
        if self._has_local(room) == (room in self._subscribed):
            return
        async with self._subscription_lock:
            while (wanted := self._has_local(room)) != (room in self._subscribed):
                channel = "room:" + room
                if wanted:
                    await self.backplane.subscribe(channel)
                    self._subscribed.add(room)
                else:
                    self._subscribed.discard(room)
                    await self.backplane.unsubscribe(channel)

    async def _sync_subscription_quietly(self, room: str) -> None:
        try:
            await self._sync_subscription(room)
        except Exception as exc:  # noqa: BLE001  # the caller raises the original error
            logger.warning("could not update the subscription of room %r: %r", room, exc)
