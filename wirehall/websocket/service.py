"""`WebSocketService`: the connections of this process, their rooms, presence and broadcast."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import msgspec

from wirehall._tasks import Backoff, Supervisor
from wirehall.backplane.base import Backplane
from wirehall.errors import BackplaneError, WebSocketStateError
from wirehall.events import DeliveryInterrupted, EventBus, PresenceChanged, PresenceDiff
from wirehall.types import Message
from wirehall.websocket._core import (
    DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_MAX_PENDING_BYTES,
    OutputLimits,
    SlowConsumerPolicy,
)
from wirehall.websocket._envelope import (
    Envelope,
    Kind,
    SeenWindow,
    decode_envelope,
    encode_envelope,
)
from wirehall.websocket._ordering import RoomOrder
from wirehall.websocket._presence import PresenceBook, PresenceNotice, decode_notice, encode_notice
from wirehall.websocket.codes import CloseCode
from wirehall.websocket.handler import WebSocketHandler

__all__ = ["ReplaySource", "WebSocketService"]

logger = logging.getLogger(__name__)

_encode_json = msgspec.json.Encoder().encode
_ALL_CHANNEL = "all"
_REPLAY_PAGE = 500  # positioned messages asked of the replay source at a time
_MAX_UNPUBLISHED = 10_000  # positioned broadcasts kept for republishing after an outage

ReplaySource: TypeAlias = Callable[[str, int, int], Awaitable[Sequence[tuple[int, Any]]]]
"""`(room, after, limit) -> [(position, message), ...]`: the room's messages after position
`after`, oldest first, at most `limit` of them (the app's history, e.g. its database)."""


@dataclass(slots=True)
class _Hold:
    """What a room delivered to a connection that joined with `hold=True`, until released."""

    handler: WebSocketHandler
    items: list[tuple[int, Message]] = field(default_factory=list)  # (position or 0, frame)


# what a room's order keeps for a positioned broadcast: the frame and who is excluded
_Positioned: TypeAlias = tuple[Message, tuple[str, ...]]


class WebSocketService:
    """Registry of this process's connections; rooms, presence and broadcast across nodes.

    Broadcasts go through the backplane and are delivered to local members only when
    they come back from it: every node delivers in the backplane's order, each message
    once. Delivery never waits on a socket (see `WebSocketHandler.send_nowait`); a
    connection that keeps more than `max_queue` messages waiting is a slow consumer,
    handled by `slow_consumer` (by default closed with 1013); one with more than
    `max_pending_bytes` waiting, or whose output has not drained for `drain_timeout`
    seconds, is closed with 1013 whatever the policy (None turns either check off).

    Presence changes are published as `PresenceDiff` events on every node with members in
    the room, coalesced: at most one per room per `presence_interval` seconds per node, and
    in rooms of more than `presence_crowd` members proportionally less often
    (`presence_interval * members / presence_crowd`), so that lists sent on each diff cost
    a member a bounded number of names a second (None: no stretching).

    Build one per app, `await start()` it before use and `await stop()` it at shutdown.
    """

    def __init__(
        self,
        backplane: Backplane | None = None,
        *,
        events: EventBus | None = None,
        max_queue: int = 1024,
        slow_consumer: SlowConsumerPolicy = SlowConsumerPolicy.CLOSE,
        max_pending_bytes: int | None = DEFAULT_MAX_PENDING_BYTES,
        drain_timeout: float | None = DEFAULT_DRAIN_TIMEOUT,
        heartbeat_interval: float | None = None,
        shutdown_code: int = CloseCode.GOING_AWAY,
        gap_timeout: float = 1.0,
        presence_interval: float = 0.25,
        presence_crowd: int | None = 100,
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
        if max_pending_bytes is not None and max_pending_bytes < 1:
            raise ValueError(f"max_pending_bytes must be at least 1 (or None), got {max_pending_bytes!r}")
        if drain_timeout is not None and not drain_timeout > 0:
            raise ValueError(f"drain_timeout must be positive seconds (or None), got {drain_timeout!r}")
        self.max_pending_bytes = max_pending_bytes
        self.drain_timeout = drain_timeout
        self._limits = OutputLimits(max_queue, slow_consumer, max_pending_bytes, drain_timeout)
        if heartbeat_interval is None:
            # renew well within the backplane's expiry (a third of it for Redis)
            heartbeat_interval = backplane.heartbeat_interval
        self.heartbeat_interval = heartbeat_interval
        self.shutdown_code = shutdown_code
        if gap_timeout <= 0:
            raise ValueError(f"gap_timeout must be positive seconds, got {gap_timeout!r}")
        self.gap_timeout = gap_timeout
        # Presence as diffs (see _presence.py): each followed room's members, its timer while
        # a change waits to be announced, the notices this node still has to publish, and
        # the rooms to read or announce again at the next heartbeat (a read or publish failed).
        self._presence = PresenceBook(presence_interval, time.monotonic, presence_crowd)
        self._presence_timers: dict[str, asyncio.TimerHandle] = {}
        self._notices: deque[tuple[str, bytes]] = deque()
        self._notice_sender: asyncio.Task[None] | None = None
        self._presence_retry: set[str] = set()
        self._connections: dict[str, WebSocketHandler] = {}
        self._rooms: dict[str, dict[str, WebSocketHandler]] = {}
        # connection id -> its rooms (a tuple: most connections are in one or two)
        self._joined: dict[str, tuple[str, ...]] = {}
        self._subscribed: set[str] = set()
        self._subscription_lock = asyncio.Lock()
        self._counter = itertools.count(1)
        self._seq = 0
        self._seen: dict[str, SeenWindow] = {}
        # the pump and the heartbeat: restarted (after a backoff) should they stop
        self._loops = Supervisor(
            "the WebSocket service", logger=logger, is_running=lambda: not self._stopping
        )
        self._background: set[asyncio.Task[None]] = set()
        self._started = False
        self._stopping = False
        self._node_id: str | None = None
        # Positioned broadcasts (see `broadcast(position=...)`): each room's order, the
        # connections that joined with `hold=True` and wait for `release`, the released ones
        # whose history went further than the room's live messages have (room -> id -> last
        # position they have), the rooms waiting for a gap to close, and what could not be
        # published during an outage.
        self._orders: dict[str, RoomOrder[_Positioned]] = {}
        self._holding: dict[str, dict[str, _Hold]] = {}
        self._ahead: dict[str, dict[str, int]] = {}
        self._gap_timers: dict[str, asyncio.TimerHandle] = {}
        self._unpublished: deque[tuple[str, Envelope]] = deque(maxlen=_MAX_UNPUBLISHED)
        self._publishing: set[asyncio.Task[None]] = set()
        self._replay: ReplaySource | None = None

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
    def presence_interval(self) -> float:
        """The least time, in seconds, between two `PresenceDiff` events of one room on this node."""
        return self._presence.interval

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
        registry = handler.registry
        if registry is self and handler.registered_id in self._connections:
            return
        if registry is not None and registry is not self:
            raise WebSocketStateError(f"{handler!r} is registered with another WebSocketService")
        connection_id = f"{self.node_id}.{next(self._counter)}"
        handler.attach(self, connection_id, self._limits)
        self._connections[connection_id] = handler

    def unregister(self, handler: WebSocketHandler) -> None:
        """Forget `handler` and take it out of its rooms (presence is updated in the background)."""
        connection_id = handler.registered_id
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

    def _forget_order(self, room: str) -> None:
        self._orders.pop(room, None)
        self._ahead.pop(room, None)
        timer = self._gap_timers.pop(room, None)
        if timer is not None:
            timer.cancel()

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

    # rooms and presence -------------------------------------------------------------

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
                self._holding.setdefault(room, {})[connection_id] = _Hold(handler)
        else:
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
        if self._rooms.get(room, {}).get(connection_id) is handler:
            return True
        hold = self._holding.get(room, {}).get(connection_id)
        return hold is not None and hold.handler is handler

    def release(self, handler_or_id: WebSocketHandler | str, room: str, *, after: int | None = None) -> None:
        """Send what `room` kept for a connection that joined with `hold=True`, then go live.

        `after` is the position of the last message the connection already has (from the
        history it was sent; 0 when the room had none): positioned broadcasts up to it are
        not sent again, and those after it follow in order. Without `after`, everything kept
        is sent. No effect when the connection is not held in `room`.
        """
        connection_id = handler_or_id if isinstance(handler_or_id, str) else handler_or_id.registered_id
        holds = self._holding.get(room)
        hold = holds.pop(connection_id, None) if holds is not None and connection_id else None
        if hold is None or connection_id is None:
            return
        if holds is not None and not holds:
            del self._holding[room]
        handler = hold.handler
        self._rooms.setdefault(room, {})[connection_id] = handler
        ready: list[tuple[int, _Positioned]] = []
        if after is not None:
            order = self._order(room)
            if order.next is None:
                # Start the room here. Other joiners still held (or members already live)
                # may have read less history than this one: what waits from before `after`
                # goes to them, and this connection skips it as "ahead".
                begin, oldest = after, order.oldest_waiting
                if oldest is not None and (room in self._holding or len(self._rooms[room]) > 1):
                    begin = min(after, oldest - 1)
                ready = order.start(begin)
                first = begin + 1
            else:
                first = order.next
                kept = sum(1 for position, _ in hold.items if after < position < first)
                if kept < first - after - 1:
                    # Messages after its history went out before it joined and were not
                    # kept for it (they arrived late and were dropped as delivered).
                    logger.warning(
                        "connection %s missed messages of room %r after %d; closing it so it catches up",
                        connection_id,
                        room,
                        after,
                    )
                    self._rooms[room].pop(connection_id, None)
                    if not self._rooms[room]:
                        del self._rooms[room]
                    if not self._has_local(room):
                        self._forget_order(room)
                    self._spawn_background(handler.close_from_outside(CloseCode.SERVICE_RESTART))
                    return
            if after >= first:
                self._ahead.setdefault(room, {})[connection_id] = after
        for position, message in hold.items:
            if not position or after is None or position > after:
                handler.send_nowait(message)
        for position, (message, exclude) in ready:
            self._fan_out(room, message, exclude, position)

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

    async def _presence_changed(self, room: str) -> None:
        if self.events is not None:
            await self.events.publish(PresenceChanged(room))

    def _presence_left(self, room: str, connection_id: str) -> None:
        self._presence.change(room, left=(connection_id,))
        if not self._has_local(room):
            self._presence.unfollow(room)  # everybody leaves, as this node sees it
        self._schedule_presence(room)
        self._announce_presence(room, PresenceNotice(left=(connection_id,)))

    def _announce_presence(self, room: str, notice: PresenceNotice) -> None:
        # Published in order by one task: a member's join and leave reach every node in order.
        self._seq += 1
        envelope = Envelope(self.node_id, self._seq, Kind.PRESENCE, room, data=encode_notice(notice))
        self._seen_window(envelope.origin).accept(envelope.seq)  # applied here already
        self._notices.append(("room:" + room, encode_envelope(envelope)))
        if self._notice_sender is None or self._notice_sender.done():
            self._notice_sender = asyncio.get_running_loop().create_task(self._send_notices())

    async def _send_notices(self) -> None:
        while self._notices:
            channel, payload = self._notices.popleft()
            try:
                await self.backplane.publish(channel, payload)
            except Exception as exc:  # noqa: BLE001  # the room is announced again at the next heartbeat
                room = channel.removeprefix("room:")
                self._presence_retry.add(room)
                logger.warning("could not tell other nodes about presence in room %r: %r", room, exc)

    def _presence_notice(self, room: str, data: bytes) -> None:
        try:
            notice = decode_notice(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            logger.warning("dropped an undecodable presence notice for room %r: %s", room, exc)
            return
        if notice.resync:
            self._resync_presence(room)
            return
        self._presence.change(room, notice.joined, notice.left)
        self._schedule_presence(room)

    def _resync_presence(self, room: str) -> None:
        token = self._presence.begin_load(room)
        if token is not None:
            self._spawn_background(self._load_presence(room, token))

    async def _load_presence(self, room: str, token: int) -> None:
        try:
            snapshot = await self.backplane.presence(room)
        except Exception as exc:  # noqa: BLE001  # read again at the next heartbeat
            self._presence_retry.add(room)
            logger.warning("could not read the presence of room %r: %r", room, exc)
            return
        if self._presence.load(room, token, snapshot):
            self._schedule_presence(room)

    def _schedule_presence(self, room: str) -> None:
        delay = self._presence.due(room)
        if delay is not None:
            loop = asyncio.get_running_loop()
            self._presence_timers[room] = loop.call_later(delay, self._presence_due, room)

    def _presence_due(self, room: str) -> None:
        self._presence_timers.pop(room, None)
        diff = self._presence.take(room)
        if diff is None:
            return
        if self.events is None or not self.events.wants(PresenceDiff):
            self._presence_announced(room)
        else:
            self._spawn_background(self._publish_diff(PresenceDiff(room, *diff)))

    async def _publish_diff(self, diff: PresenceDiff) -> None:
        try:
            if self.events is not None:
                await self.events.publish(diff)
        finally:
            self._presence_announced(diff.room)

    def _presence_announced(self, room: str) -> None:
        self._presence.announced(room)
        if not self._stopping:
            self._schedule_presence(room)

    def _retry_presence(self, rooms: Iterable[str]) -> None:
        """Have every node read these rooms' presence again (changes may have been missed)."""
        for room in rooms:
            self._announce_presence(room, PresenceNotice(resync=True))
            self._resync_presence(room)

    def broadcast_local(self, room: str, message: Any) -> None:
        """Send `message` to the members of `room` on this node only (encoded once).

        Members that joined with `hold=True` get it when released, after what was sent
        before. Never waits on a socket; for presence lists built from `PresenceDiff`,
        which every node receives.
        """
        text, data = _encode(message)
        frame = _frame(text, data)
        holds = self._holding.get(room)
        if holds:
            for hold in holds.values():
                hold.items.append((0, frame))
        members = self._rooms.get(room)
        if members:
            for handler in tuple(members.values()):
                handler.send_nowait(frame)

    # sending ------------------------------------------------------------------------------

    async def broadcast(
        self,
        room: str,
        message: Any,
        *,
        exclude: Iterable[str | WebSocketHandler] = (),
        position: int | None = None,
    ) -> None:
        """Send `message` to every member of `room` on every node, except `exclude`.

        `str` goes as a text frame, `bytes` as a binary one, anything else as JSON text
        (encoded once). Never waits on a socket. When the backplane cannot take the
        message (Redis is down), this node's members still get it and a WARNING is logged:
        other nodes miss it, and clients catch up through their app's history.

        `position` is the message's place in the room's stored history (1 for the room's
        first message, each next one 1 more; keep the counter with the messages, e.g. in
        the same database transaction, and broadcast only after it committed). A room's
        positioned messages reach every member on every node in position order, each once,
        whichever node sent them; one that is late is waited for `gap_timeout` seconds, then
        fetched from the app's `replay_from` source (or, without one, the room's members on
        this node are closed with 1012 so that they reconnect and catch up). A positioned
        broadcast is delivered to this node's members at once and handed to the backplane
        without waiting for it; if the backplane cannot take it, it is published again when
        the backplane is back.
        """
        if position is None:
            await self._publish("room:" + room, Kind.ROOM, room, message, exclude)
            return
        if position < 1:
            raise ValueError(f"position must be 1 or more (the room's first message is 1), got {position!r}")
        text, data = _encode(message)
        excluded = tuple(item if isinstance(item, str) else item.id for item in exclude)
        self._seq += 1
        envelope = Envelope(self.node_id, self._seq, Kind.ROOM, room, text, data, excluded, position)
        self._seen_window(envelope.origin).accept(envelope.seq)  # its echo is not delivered again
        self._deliver_positioned(envelope)
        self._publish_in_background("room:" + room, envelope)

    def replay_from(self, source: ReplaySource | None) -> None:
        """Where missed positioned broadcasts are fetched: `source(room, after, limit)`.

        Used when a room's positioned messages have a gap that does not close within
        `gap_timeout`, and for every room with members here after a backplane outage.
        """
        self._replay = source

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
        text, data = _encode(message)
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

    def _publish_in_background(self, channel: str, envelope: Envelope) -> None:
        # Tasks start in creation order and each hands its payload to the backplane before
        # its first await, so the backplane still gets them in call order.
        task = asyncio.get_running_loop().create_task(self._publish_positioned(channel, envelope))
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)

    async def _publish_positioned(self, channel: str, envelope: Envelope) -> None:
        try:
            await self.backplane.publish(channel, encode_envelope(envelope))
        except Exception as exc:  # noqa: BLE001  # kept and published again when the backplane is back
            if len(self._unpublished) == self._unpublished.maxlen:
                logger.warning(
                    "more than %d broadcasts wait for the backplane; the oldest is left to replay",
                    len(self._unpublished),
                )
            self._unpublished.append((channel, envelope))
            logger.warning(
                "backplane did not take message %d of room %r (%s); delivered here, published again once it is back",
                envelope.position,
                envelope.target,
                exc,
            )

    async def _republish(self) -> None:
        """Publish again what the backplane could not take (in order; stops at a failure)."""
        while self._unpublished:
            channel, envelope = self._unpublished[0]
            self._seq += 1
            fresh = msgspec.structs.replace(envelope, origin=self.node_id, seq=self._seq)
            self._seen_window(fresh.origin).accept(fresh.seq)
            try:
                await self.backplane.publish(channel, encode_envelope(fresh))
            except Exception as exc:  # noqa: BLE001  # tried again at the next heartbeat or reconnect
                logger.warning("%d broadcasts still wait for the backplane (%s)", len(self._unpublished), exc)
                return
            if self._unpublished and self._unpublished[0][1] is envelope:
                self._unpublished.popleft()

    # delivery --------------------------------------------------------------------------

    def _seen_window(self, origin: str) -> SeenWindow:
        seen = self._seen.get(origin)
        if seen is None:
            seen = self._seen[origin] = SeenWindow()
        return seen

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
        kind = envelope.kind
        if kind is Kind.PRESENCE:
            self._presence_notice(envelope.target, envelope.data or b"")
        elif envelope.position:
            self._deliver_positioned(envelope)
        elif kind is Kind.ROOM:
            self._deliver_room(envelope.target, _frame(envelope.text, envelope.data), envelope.exclude)
        elif kind is Kind.DIRECT:
            handler = self._connections.get(envelope.target)
            if handler is not None:
                handler.send_nowait(_frame(envelope.text, envelope.data))
        else:
            _send_all(self._connections, _frame(envelope.text, envelope.data), envelope.exclude)

    def _deliver_room(self, room: str, message: Message, exclude: tuple[str, ...]) -> None:
        holds = self._holding.get(room)
        if holds:
            for connection_id, hold in holds.items():
                if connection_id not in exclude:
                    hold.items.append((0, message))
        members = self._rooms.get(room)
        if members:
            _send_all(members, message, exclude)

    def _order(self, room: str) -> RoomOrder[_Positioned]:
        order = self._orders.get(room)
        if order is None:
            order = self._orders[room] = RoomOrder(asyncio.get_running_loop().time)
        return order

    def _deliver_positioned(self, envelope: Envelope) -> None:
        room = envelope.target
        if envelope.kind is not Kind.ROOM or not self._has_local(room):
            return
        message = _frame(envelope.text, envelope.data)
        self._offer(room, envelope.position, message, envelope.exclude)

    def _offer(self, room: str, position: int, message: Message, exclude: tuple[str, ...]) -> None:
        order = self._order(room)
        # a room that a held joiner is about to start waits for its start
        ready = order.offer(position, (message, exclude), autostart=room not in self._holding)
        for ready_position, (ready_message, ready_exclude) in ready:
            self._fan_out(room, ready_message, ready_exclude, ready_position)
        if order.has_gap and room not in self._gap_timers:
            loop = asyncio.get_running_loop()
            self._gap_timers[room] = loop.call_later(self.gap_timeout, self._gap_timer_fired, room)

    def _fan_out(self, room: str, message: Message, exclude: tuple[str, ...], position: int) -> None:
        holds = self._holding.get(room)
        if holds:
            for connection_id, hold in holds.items():
                if connection_id not in exclude:
                    hold.items.append((position, message))
        members = self._rooms.get(room)
        if not members:
            return
        skip: set[str] = set(exclude)
        ahead = self._ahead.get(room)
        if ahead:
            for connection_id, last in list(ahead.items()):
                if last >= position:
                    skip.add(connection_id)
                if last <= position:
                    del ahead[connection_id]
            if not ahead:
                del self._ahead[room]
        for connection_id, handler in tuple(members.items()):
            if connection_id not in skip:
                handler.send_nowait(message)

    def _gap_timer_fired(self, room: str) -> None:
        self._gap_timers.pop(room, None)
        order = self._orders.get(room)
        if order is None or order.gap_since is None:
            return
        loop = asyncio.get_running_loop()
        left = order.gap_since + self.gap_timeout - loop.time()
        if left > 0.001:  # the gap that remains opened later than the one the timer was for
            self._gap_timers[room] = loop.call_later(left, self._gap_timer_fired, room)
            return
        self._spawn_background(self._fill_gap(room))

    async def _fill_gap(self, room: str) -> None:
        caught_up = await self._catch_up(room)
        order = self._orders.get(room)
        if order is None or not order.has_gap:
            return
        missing = order.next
        if not caught_up:
            # Nothing behind the gap goes to them: they reconnect with the last position they
            # saw, and the app's history gives them the missing one with what follows it.
            logger.warning(
                "room %r: message %s never arrived; closing its members here so they catch up", room, missing
            )
            await self._close_room(room, CloseCode.SERVICE_RESTART)
            return
        # the app's history does not have it either: nothing was stored at that place
        for position, (message, exclude) in order.skip_gap():
            self._fan_out(room, message, exclude, position)
        logger.warning("room %r: message %s never arrived and is not in the history; skipped", room, missing)

    async def _catch_up(self, room: str) -> bool:
        """Fetch the room's positioned messages after what was delivered; False if impossible."""
        replay = self._replay
        if replay is None:
            return False
        while True:
            order = self._orders.get(room)
            if order is None or order.next is None:
                return True
            after = order.next - 1
            try:
                items = await replay(room, after, _REPLAY_PAGE)
            except Exception as exc:  # noqa: BLE001  # the caller falls back to closing the room
                logger.warning("could not replay room %r after %d: %r", room, after, exc)
                return False
            for position, item in items:
                self._offer(room, position, _frame(*_encode(item)), ())
            order = self._orders.get(room)
            if len(items) < _REPLAY_PAGE or order is None or order.next is None or order.next - 1 <= after:
                return True

    async def _close_room(self, room: str, code: int) -> None:
        # Out of the room at once (before the closes run), so that no later message reaches
        # them: one that did would be the "last seen" they reconnect from, past the gap.
        # (Still in `_joined`: their presence goes when they unregister.) The room's order
        # is forgotten with its last member; a new joiner starts it again.
        handlers = [*self._rooms.get(room, {}).values()]
        handlers += [hold.handler for hold in self._holding.get(room, {}).values()]
        for handler in handlers:
            connection_id = handler.registered_id
            if connection_id is not None:
                self._remove_member(room, connection_id)
        await asyncio.gather(
            *(handler.close_from_outside(code) for handler in handlers), return_exceptions=True
        )

    def _backplane_reconnected(self) -> None:
        if not self._stopping:
            self._spawn_background(self._after_reconnect())

    async def _after_reconnect(self) -> None:
        # presence notices may have been missed both ways: every node reads these rooms again
        self._retry_presence(sorted(set(self._presence.rooms()) | self._presence_retry))
        self._presence_retry.clear()
        await self._republish()
        rooms = sorted(set(self._rooms) | set(self._holding))
        for room in rooms:
            if room in self._orders and not await self._catch_up(room):
                logger.warning(
                    "room %r may have missed messages during the outage; closing its members here", room
                )
                await self._close_room(room, CloseCode.SERVICE_RESTART)
        if self.events is not None and rooms:
            await self.events.publish(DeliveryInterrupted(tuple(rooms)))

    async def _pump(self) -> None:
        backoff = Backoff(0.05, 2.0)
        while not self._stopping:
            received = False
            try:
                async for channel, payload in self.backplane.messages():
                    received = True
                    try:
                        self._deliver(channel, payload)
                    except Exception:
                        logger.exception("delivering a backplane message on %r failed", channel)
            except Exception as exc:  # noqa: BLE001  # the pump must survive; logged and retried
                if self._stopping:
                    return
                if received:
                    backoff.reset()
                delay = backoff.next()
                logger.warning("reading the backplane failed (%r); retrying in %.2fs", exc, delay)
            else:
                if self._stopping:
                    return
                if received:
                    backoff.reset()
                delay = backoff.next()
                logger.warning("the backplane's message stream ended; reading it again in %.2fs", delay)
            await asyncio.sleep(delay)

    async def _heartbeat(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                rooms = await self.backplane.heartbeat()
            except Exception as exc:  # noqa: BLE001  # the heartbeat must survive; logged
                logger.warning("backplane heartbeat failed: %r", exc)
                continue
            retry = self._presence_retry
            self._presence_retry = set()
            # purged or restored members have no notice of their own: every node reads again
            self._retry_presence(sorted(set(rooms) | retry))
            for room in rooms:
                await self._presence_changed(room)
            if self._unpublished:
                await self._republish()

    # lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect the backplane and start delivering (idempotent)."""
        if self._started:
            return
        await self.backplane.start()
        self._node_id = self.backplane.node_id
        await self.backplane.subscribe("node:" + self._node_id)
        await self.backplane.subscribe(_ALL_CHANNEL)
        self.backplane.on_reconnect(self._backplane_reconnected)
        self._started = True
        self._stopping = False
        self._loops.supervise("backplane-pump", self._pump)
        if self.heartbeat_interval > 0:
            self._loops.supervise("backplane-heartbeat", self._heartbeat)
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
                *(handler.close_from_outside(self.shutdown_code) for handler in handlers),
                return_exceptions=True,
            )
        if self._background:
            await asyncio.wait(set(self._background), timeout=WebSocketHandler.close_timeout)
        if self._publishing:
            await asyncio.wait(set(self._publishing), timeout=WebSocketHandler.close_timeout)
        for timer in self._gap_timers.values():
            timer.cancel()
        self._gap_timers.clear()
        for timer in self._presence_timers.values():
            timer.cancel()
        self._presence_timers.clear()
        if self._notice_sender is not None and not self._notice_sender.done():
            await asyncio.wait({self._notice_sender}, timeout=WebSocketHandler.close_timeout)
        await self._loops.cancel_loops()
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


def _frame(text: str | None, data: bytes | None) -> Message:
    """The ASGI message of a text (when not None) or binary frame."""
    if text is not None:
        return {"type": "websocket.send", "text": text}
    return {"type": "websocket.send", "bytes": data or b""}


def _send_all(members: dict[str, WebSocketHandler], message: Message, exclude: tuple[str, ...]) -> None:
    """Queue `message` for `members` (id -> connection) but `exclude`; never waits."""
    # Copies (no per-member tuples): a slow or dead consumer leaves the room during the loop.
    if exclude:
        excluded = frozenset(exclude)
        for connection_id, handler in zip(tuple(members), tuple(members.values()), strict=True):
            if connection_id not in excluded:
                handler.send_nowait(message)
    else:
        for handler in tuple(members.values()):
            handler.send_nowait(message)


def _encode(message: Any) -> tuple[str | None, bytes | None]:
    if isinstance(message, str):
        return message, None
    if isinstance(message, bytes | bytearray | memoryview):
        return None, bytes(message)
    return _encode_json(message).decode(), None
