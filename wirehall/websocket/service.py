"""`WebSocketService`: the connections of this process, their rooms, presence and broadcast."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

import msgspec

from wirehall.backplane.base import Backplane
from wirehall.errors import BackplaneError, WebSocketStateError
from wirehall.events import EventBus, PresenceChanged
from wirehall.types import Message
from wirehall.websocket._envelope import (
    Envelope,
    Kind,
    SeenWindow,
    decode_envelope,
    encode_envelope,
)
from wirehall.websocket._outbox import SlowConsumerPolicy
from wirehall.websocket.codes import CloseCode
from wirehall.websocket.handler import WebSocketHandler

__all__ = ["WebSocketService"]

logger = logging.getLogger(__name__)

_encode_json = msgspec.json.Encoder().encode
_ALL_CHANNEL = "all"
_RESTART_DELAYS = (0.05, 0.2, 0.5, 1.0, 2.0)


class WebSocketService:
    """Registry of this process's connections; rooms, presence and broadcast across nodes.

    Broadcasts go through the backplane and are delivered to local members only when
    they come back from it: every node delivers in the backplane's order, each message
    once. Delivery never waits on a socket (see `WebSocketHandler.send_nowait`); a
    connection that keeps more than `max_queue` messages waiting is a slow consumer,
    handled by `slow_consumer` (by default closed with 1013).

    Build one per app, `await start()` it before use and `await stop()` it at shutdown.
    """

    def __init__(
        self,
        backplane: Backplane | None = None,
        *,
        events: EventBus | None = None,
        max_queue: int = 1024,
        slow_consumer: SlowConsumerPolicy = SlowConsumerPolicy.CLOSE,
        heartbeat_interval: float | None = None,
        shutdown_code: int = CloseCode.GOING_AWAY,
    ) -> None:
        if backplane is None:
            from wirehall.backplane.memory import MemoryBackplane

            backplane = MemoryBackplane()
        if max_queue < 1:
            raise ValueError(f"max_queue must be at least 1, got {max_queue!r}")
        self.backplane = backplane
        self.events = events
        self.max_queue = max_queue
        self.slow_consumer = slow_consumer
        if heartbeat_interval is None:
            # renew well within the backplane's expiry (a third of it for Redis), else every 5 s
            heartbeat_interval = float(getattr(backplane, "heartbeat_interval", 5.0))
        self.heartbeat_interval = heartbeat_interval
        self.shutdown_code = shutdown_code
        self._connections: dict[str, WebSocketHandler] = {}
        self._rooms: dict[str, dict[str, WebSocketHandler]] = {}
        # connection id -> its rooms (a tuple: most connections are in one or two)
        self._joined: dict[str, tuple[str, ...]] = {}
        self._subscribed: set[str] = set()
        self._subscription_lock = asyncio.Lock()
        self._counter = itertools.count(1)
        self._seq = 0
        self._seen: dict[str, SeenWindow] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._started = False
        self._stopping = False
        self._node_id: str | None = None

    # registry -----------------------------------------------------------------------

    @property
    def node_id(self) -> str:
        """This process's id on the backplane; connection ids start with it."""
        if self._node_id is None:
            self._node_id = self.backplane.node_id
        return self._node_id

    @property
    def connection_count(self) -> int:
        """How many connections this process serves."""
        return len(self._connections)

    @property
    def room_count(self) -> int:
        """How many rooms have members on this process."""
        return len(self._rooms)

    def rooms(self) -> list[str]:
        """Names of the rooms with members on this process."""
        return list(self._rooms)

    def get(self, connection_id: str) -> WebSocketHandler | None:
        """The local connection with that id, if any."""
        return self._connections.get(connection_id)

    def local_members(self, room: str) -> list[WebSocketHandler]:
        """The connections of this process in `room`."""
        return list(self._rooms.get(room, {}).values())

    def register(self, handler: WebSocketHandler) -> None:
        """Give `handler` an id `"{node_id}.{n}"` and serve it (the endpoint runner does this)."""
        if handler._service is self and handler._id in self._connections:
            return
        if handler._service is not None and handler._service is not self:
            raise WebSocketStateError(f"{handler!r} is registered with another WebSocketService")
        connection_id = f"{self.node_id}.{next(self._counter)}"
        handler._id = connection_id
        handler._service = self
        handler._outbox.configure(self.max_queue, self.slow_consumer)
        self._connections[connection_id] = handler

    def unregister(self, handler: WebSocketHandler) -> None:
        """Forget `handler` and take it out of its rooms (presence is updated in the background)."""
        connection_id = handler._id
        if connection_id is None or self._connections.get(connection_id) is not handler:
            return
        del self._connections[connection_id]
        joined = self._joined.pop(connection_id, None)
        if not joined:
            return
        for room in joined:
            self._remove_member(room, connection_id)
        self._spawn_background(self._after_unregister(connection_id, list(joined)))

    def _remove_member(self, room: str, connection_id: str) -> bool:
        members = self._rooms.get(room)
        if members is None or members.pop(connection_id, None) is None:
            return False
        if not members:
            del self._rooms[room]
        return True

    async def _after_unregister(self, connection_id: str, rooms: list[str]) -> None:
        for room in rooms:
            try:
                await self.backplane.remove_presence(room, connection_id)
                await self._sync_subscription(room)
            except Exception as exc:  # noqa: BLE001  # background: logged, the next change repairs it
                logger.warning(
                    "could not update presence of room %r after %s left: %r", room, connection_id, exc
                )
            await self._presence_changed(room)

    def _spawn_background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("background presence update failed", exc_info=task.exception())

    # rooms and presence -------------------------------------------------------------

    def _handler(self, handler_or_id: WebSocketHandler | str) -> WebSocketHandler | None:
        if isinstance(handler_or_id, str):
            return self._connections.get(handler_or_id)
        if handler_or_id._id is not None and self._connections.get(handler_or_id._id) is handler_or_id:
            return handler_or_id
        return None

    async def join(self, handler_or_id: WebSocketHandler | str, room: str, identity: str = "") -> None:
        """Put a local connection in `room`, present there as `identity`.

        Once this returns, the connection receives every later broadcast to the room. A
        connection that has closed meanwhile is left out silently.

        Raises:
            BackplaneError: the backplane could not subscribe or record the presence.
        """
        handler = self._handler(handler_or_id)
        if handler is None:
            logger.debug("join(%r, %r) ignored: no such open connection here", handler_or_id, room)
            return
        connection_id = handler.id
        self._rooms.setdefault(room, {})[connection_id] = handler
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
        if self._rooms.get(room, {}).get(connection_id) is not handler:
            # It closed (or left) while we were waiting on the backplane.
            await self.backplane.remove_presence(room, connection_id)
            return
        await self._presence_changed(room)

    async def leave(self, handler_or_id: WebSocketHandler | str, room: str) -> None:
        """Take a connection out of `room` (no error when it is not there)."""
        connection_id = handler_or_id if isinstance(handler_or_id, str) else handler_or_id._id
        if connection_id is None or not self._leave_locally(connection_id, room):
            return
        await self.backplane.remove_presence(room, connection_id)
        await self._sync_subscription(room)
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
        if (room in self._rooms) == (room in self._subscribed):
            return
        async with self._subscription_lock:
            while (wanted := room in self._rooms) != (room in self._subscribed):
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

    async def _presence_changed(self, room: str) -> None:
        if self.events is not None:
            await self.events.publish(PresenceChanged(room))

    # sending ------------------------------------------------------------------------------

    async def broadcast(
        self, room: str, message: Any, *, exclude: Iterable[str | WebSocketHandler] = ()
    ) -> None:
        """Send `message` to every member of `room` on every node, except `exclude`.

        `str` goes as a text frame, `bytes` as a binary one, anything else as JSON text
        (encoded once). Never waits on a socket. When the backplane cannot take the
        message (Redis is down), this node's members still get it and a WARNING is logged:
        other nodes miss it, and clients catch up through their app's history.
        """
        await self._publish("room:" + room, Kind.ROOM, room, message, exclude)

    async def broadcast_all(self, message: Any, *, exclude: Iterable[str | WebSocketHandler] = ()) -> None:
        """Send `message` to every connection on every node, except `exclude`."""
        await self._publish(_ALL_CHANNEL, Kind.ALL, "", message, exclude)

    async def send_to(self, connection_id: str, message: Any) -> bool:
        """Send `message` to one connection, on whichever node serves it.

        Returns False when the id cannot be a live connection (malformed, or one of this
        node's that is gone); True once handed to the backplane for its node.
        """
        node, dot, number = connection_id.rpartition(".")
        if not dot or not node or not number:
            return False
        if node == self.node_id and connection_id not in self._connections:
            return False
        await self._publish("node:" + node, Kind.DIRECT, connection_id, message, ())
        return True

    async def _publish(
        self,
        channel: str,
        kind: Kind,
        target: str,
        message: Any,
        exclude: Iterable[str | WebSocketHandler],
    ) -> None:
        text: str | None = None
        data: bytes | None = None
        if isinstance(message, str):
            text = message
        elif isinstance(message, bytes | bytearray | memoryview):
            data = bytes(message)
        else:
            text = _encode_json(message).decode()
        excluded = tuple(item if isinstance(item, str) else item.id for item in exclude)
        self._seq += 1
        payload = encode_envelope(Envelope(self.node_id, self._seq, kind, target, text, data, excluded))
        try:
            await self.backplane.publish(channel, payload)
        except Exception as exc:
            error = exc if isinstance(exc, BackplaneError) else None
            if kind is Kind.DIRECT and not target.startswith(self.node_id + "."):
                raise error or BackplaneError(
                    f"the backplane did not take a message for {channel!r}: {exc!r}"
                ) from exc
            # local members must not lose what only the cross-process path failed to carry;
            # if the backplane did take it after all, its echo is dropped as a duplicate
            logger.warning(
                "backplane did not take a message for %r (%s); delivered to this node's members only",
                channel,
                exc,
            )
            self._deliver(channel, payload)

    # delivery --------------------------------------------------------------------------

    def _deliver(self, channel: str, payload: bytes) -> None:
        try:
            envelope = decode_envelope(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            logger.warning("dropped an undecodable backplane message on %r: %s", channel, exc)
            return
        seen = self._seen.get(envelope.origin)
        if seen is None:
            seen = self._seen[envelope.origin] = SeenWindow()
        if not seen.accept(envelope.seq):
            return
        message: Message
        if envelope.text is not None:
            message = {"type": "websocket.send", "text": envelope.text}
        else:
            message = {"type": "websocket.send", "bytes": envelope.data or b""}
        kind = envelope.kind
        if kind is Kind.ROOM:
            members = self._rooms.get(envelope.target)
            if not members:
                return
            # A copy of the values (no per-member tuples): a slow or dead consumer leaves
            # the room during the loop.
            targets = tuple(members.values())
        elif kind is Kind.DIRECT:
            handler = self._connections.get(envelope.target)
            if handler is not None:
                handler._outbox.put_nowait(message)
            return
        else:
            targets = tuple(self._connections.values())
        exclude = envelope.exclude
        if exclude:
            excluded = frozenset(exclude)
            for handler in targets:
                if handler._id not in excluded:
                    handler._outbox.put_nowait(message)
        else:
            for handler in targets:
                handler._outbox.put_nowait(message)

    async def _pump(self) -> None:
        failures = 0
        while not self._stopping:
            try:
                async for channel, payload in self.backplane.messages():
                    failures = 0
                    try:
                        self._deliver(channel, payload)
                    except Exception:
                        logger.exception("delivering a backplane message on %r failed", channel)
            except Exception as exc:  # noqa: BLE001  # the pump must survive; logged and retried
                if self._stopping:
                    return
                delay = _RESTART_DELAYS[min(failures, len(_RESTART_DELAYS) - 1)]
                logger.warning("reading the backplane failed (%r); retrying in %.2fs", exc, delay)
            else:
                if self._stopping:
                    return
                delay = _RESTART_DELAYS[min(failures, len(_RESTART_DELAYS) - 1)]
                logger.warning("the backplane's message stream ended; reading it again in %.2fs", delay)
            failures += 1
            await asyncio.sleep(delay)

    async def _heartbeat(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                rooms = await self.backplane.heartbeat()
            except Exception as exc:  # noqa: BLE001  # the heartbeat must survive; logged
                logger.warning("backplane heartbeat failed: %r", exc)
                continue
            for room in rooms:
                await self._presence_changed(room)

    def _supervise(self, name: str, factory: Callable[[], Coroutine[Any, Any, None]]) -> None:
        task = asyncio.get_running_loop().create_task(factory(), name=f"wirehall-{name}")
        self._tasks[name] = task

        def done(task: asyncio.Task[None]) -> None:
            if self._stopping or task.cancelled():
                return
            error = task.exception()
            if error is not None:
                logger.error("the %s task failed; restarting it", name, exc_info=error)
            else:
                logger.error("the %s task ended unexpectedly; restarting it", name)
            self._supervise(name, factory)

        task.add_done_callback(done)

    # lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect the backplane and start delivering (idempotent)."""
        if self._started:
            return
        await self.backplane.start()
        self._node_id = self.backplane.node_id
        await self.backplane.subscribe("node:" + self._node_id)
        await self.backplane.subscribe(_ALL_CHANNEL)
        self._started = True
        self._stopping = False
        self._supervise("backplane-pump", self._pump)
        if self.heartbeat_interval > 0:
            self._supervise("backplane-heartbeat", self._heartbeat)
        logger.info("WebSocket service started on node %s", self._node_id)

    async def stop(self) -> None:
        """Close every local connection with `shutdown_code`, then the backplane (idempotent)."""
        if self._stopping:
            return
        self._stopping = True
        handlers = list(self._connections.values())
        if handlers:
            logger.info("closing %d WebSocket connections (code %d)", len(handlers), self.shutdown_code)
            await asyncio.gather(
                *(handler._close_from_outside(self.shutdown_code) for handler in handlers),
                return_exceptions=True,
            )
        if self._background:
            await asyncio.wait(set(self._background), timeout=WebSocketHandler.close_timeout)
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        if self._started:
            try:
                await self.backplane.close()
            except Exception as exc:  # noqa: BLE001  # shutting down anyway; logged
                logger.warning("closing the backplane failed: %r", exc)
        self._started = False
        logger.info("WebSocket service stopped")

    def __repr__(self) -> str:
        return (
            f"<WebSocketService node={self._node_id} connections={len(self._connections)} "
            f"rooms={len(self._rooms)}>"
        )
