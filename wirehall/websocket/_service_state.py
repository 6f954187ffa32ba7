"""What the parts of `WebSocketService` share: its state, and the few helpers they all use.

`WebSocketService` (service.py) is a facade over four parts, one module each, all working
on this one state: `Membership` (the registry, rooms, join and leave), `PresenceWiring`
(presence diffs across nodes), `Delivery` (publishing broadcasts and delivering what the
backplane brings) and `PositionedDelivery` (positioned broadcasts: order, holds, gaps,
replay). A part calls another's methods through the stubs below, so that each module
type-checks on its own.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias

import msgspec

from wirehall.backplane.base import Backplane
from wirehall.events import EventBus
from wirehall.types import Message
from wirehall.websocket._core import OutputLimits, SlowConsumerPolicy
from wirehall.websocket._envelope import Envelope, SeenWindow
from wirehall.websocket._frames import Broadcast, frame_of
from wirehall.websocket._ordering import RoomOrder
from wirehall.websocket._outbox import OutboxBase
from wirehall.websocket._presence import PresenceBook, PresenceNotice
from wirehall.websocket.handler import WebSocketHandler, send_message

__all__ = [
    "ALL_CHANNEL",
    "Hold",
    "Members",
    "Positioned",
    "ReplaySource",
    "ServiceMetrics",
    "ServiceState",
    "deliver",
    "encode",
    "frame",
    "send_all",
]

_encode_json = msgspec.json.Encoder().encode
ALL_CHANNEL = "all"
"""The backplane channel of `broadcast_all`."""
frame = send_message  # the frame a broadcast shares (its ASGI shape is the handler's business)

ReplaySource: TypeAlias = Callable[[str, int, int], Awaitable[Sequence[tuple[int, Any]]]]
"""`(room, after, limit) -> [(position, message), ...]`: the room's messages after position
`after`, oldest first, at most `limit` of them (the app's history, e.g. its database)."""


@dataclass(slots=True)
class Hold:
    """What a room delivered to a connection that joined with `hold=True`, until released."""

    handler: WebSocketHandler
    items: list[tuple[int, Message]] = field(default_factory=list)  # (position or 0, frame)


Positioned: TypeAlias = tuple[Message, tuple[str, ...]]
"""What a room's order keeps for a positioned broadcast: the frame and who is excluded."""


class ServiceMetrics(Protocol):
    """What the service tells a metrics collector (`wirehall.metrics`) as it happens.

    `WebSocketService.metrics` is None unless the app turned metrics on: each place that
    reports checks that one attribute, so metrics cost nothing when off.
    """

    def connection_closed(self, code: int, *, evicted: bool) -> None:
        """An accepted connection left the registry with `code`; `evicted`: as a slow consumer."""

    def fanned_out(self, recipients: int, seconds: float) -> None:
        """One broadcast was handed to `recipients` local connections in `seconds`."""

    def sent(self, count: int) -> None:
        """`count` messages were handed to local connections outside a broadcast (`send_to`, a release)."""

    def publish_failed(self) -> None:
        """The backplane did not take a publish."""


class ServiceState:
    """The state of a `WebSocketService` (set in its `__init__`) and the parts' cross-calls."""

    backplane: Backplane
    events: EventBus | None
    metrics: ServiceMetrics | None
    gap_timeout: float
    max_queue: int
    slow_consumer: SlowConsumerPolicy
    max_pending_bytes: int | None
    drain_timeout: float | None
    _limits: OutputLimits
    _node_id: str | None
    _stopping: bool
    # the registry: connections, rooms, each connection's rooms, subscribed room channels
    _connections: dict[str, WebSocketHandler]
    _rooms: dict[str, Members]
    _joined: dict[str, tuple[str, ...]]
    _subscribed: set[str]
    _subscription_lock: asyncio.Lock
    _counter: itertools.count[int]
    _background: set[asyncio.Task[None]]
    # envelopes: this node's sequence, and what was seen of each origin
    _seq: int
    _seen: dict[str, SeenWindow]
    # presence (see _presence_wiring.py)
    _presence: PresenceBook
    _presence_timers: dict[str, asyncio.TimerHandle]
    _notices: deque[tuple[str, bytes]]
    _notice_sender: asyncio.Task[None] | None
    _presence_retry: set[str]
    # positioned broadcasts (see _positioned.py)
    _orders: dict[str, RoomOrder[Positioned]]
    _holding: dict[str, dict[str, Hold]]
    _ahead: dict[str, dict[str, int]]
    _gap_timers: dict[str, asyncio.TimerHandle]
    _unpublished: deque[tuple[str, Envelope]]
    _publishing: set[asyncio.Task[None]]
    _replay: ReplaySource | None

    @property
    def node_id(self) -> str:
        """This process's id on the backplane; connection ids start with it."""
        if self._node_id is None:
            self._node_id = self.backplane.node_id
        return self._node_id

    # implemented by one part, called by another -------------------------------------------

    def _room_members(self, room: str) -> Members:
        """The members of `room` on this node, created empty when it has none."""
        members = self._rooms.get(room)
        if members is None:
            members = self._rooms[room] = Members()
        return members

    def _has_local(self, room: str) -> bool:
        return room in self._rooms or room in self._holding

    def _spawn_background(self, coro: Coroutine[Any, Any, None]) -> None:
        raise NotImplementedError  # Membership

    async def _sync_subscription(self, room: str) -> None:
        raise NotImplementedError  # Membership

    def _remove_member(self, room: str, connection_id: str) -> bool:
        raise NotImplementedError  # Membership

    def _forget_order(self, room: str) -> None:
        raise NotImplementedError  # PositionedDelivery

    def _deliver_positioned(self, envelope: Envelope) -> None:
        raise NotImplementedError  # PositionedDelivery

    def _publish_in_background(self, channel: str, envelope: Envelope) -> None:
        raise NotImplementedError  # PositionedDelivery

    def _deliver(self, channel: str, payload: bytes) -> None:
        raise NotImplementedError  # Delivery

    def _seen_window(self, origin: str) -> SeenWindow:
        raise NotImplementedError  # Delivery

    def _presence_notice(self, room: str, data: bytes) -> None:
        raise NotImplementedError  # PresenceWiring

    def _presence_left(self, room: str, connection_id: str) -> None:
        raise NotImplementedError  # PresenceWiring

    async def _presence_changed(self, room: str) -> None:
        raise NotImplementedError  # PresenceWiring

    def _announce_presence(self, room: str, notice: PresenceNotice) -> None:
        raise NotImplementedError  # PresenceWiring

    async def _load_presence(self, room: str, token: int) -> None:
        raise NotImplementedError  # PresenceWiring

    def _schedule_presence(self, room: str) -> None:
        raise NotImplementedError  # PresenceWiring

    def _retry_presence(self, rooms: Iterable[str]) -> None:
        raise NotImplementedError  # PresenceWiring


class Members(dict[str, WebSocketHandler]):
    """A room's members (connection id -> connection) that keeps their outboxes for the
    fan-out loop: built on the first broadcast after a change, and dropped by any change."""

    __slots__ = ("_outboxes",)

    def __init__(self) -> None:
        super().__init__()
        self._outboxes: tuple[tuple[str, ...], tuple[OutboxBase, ...]] | None = None

    def outboxes(self) -> tuple[tuple[str, ...], tuple[OutboxBase, ...]]:
        """(the members' ids, their outboxes), in the same order."""
        kept = self._outboxes
        if kept is None:
            kept = self._outboxes = (tuple(self), tuple(handler._outbox for handler in self.values()))
        return kept

    def __setitem__(self, key: str, value: WebSocketHandler) -> None:
        self._outboxes = None
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self._outboxes = None
        super().__delitem__(key)

    def pop(self, *args: Any) -> Any:
        self._outboxes = None
        return super().pop(*args)

    def popitem(self) -> tuple[str, WebSocketHandler]:
        self._outboxes = None
        return super().popitem()

    def setdefault(self, *args: Any) -> Any:
        self._outboxes = None
        return super().setdefault(*args)

    def update(self, *args: Any, **kwargs: Any) -> None:
        self._outboxes = None
        super().update(*args, **kwargs)

    def clear(self) -> None:
        self._outboxes = None
        super().clear()

    def __ior__(self, other: Any) -> Any:  # type: ignore[misc]  # typeshed's __or__ is narrower
        self._outboxes = None
        return super().__ior__(other)


def send_all(members: dict[str, WebSocketHandler], message: Message, exclude: Iterable[str]) -> int:
    """Queue `message` for `members` (id -> connection) but `exclude`; never waits. Returns how many."""
    # A copy (the room's kept one, or a tuple): a slow or dead consumer leaves the room during the loop.
    if type(members) is Members:
        ids, outboxes = members.outboxes()
    else:
        ids, outboxes = tuple(members), tuple(handler._outbox for handler in members.values())
    if exclude:
        excluded = frozenset(exclude)
        outboxes = tuple(outbox for i, outbox in zip(ids, outboxes, strict=True) if i not in excluded)
    deliver(outboxes, message)
    return len(outboxes)


def deliver(outboxes: Sequence[OutboxBase], message: Message) -> None:
    """Queue `message` in each of `outboxes`, never waiting: the hot loop of every fan-out.

    A member on the native path whose transport takes frames now gets the broadcast's
    shared frame written at once (see `NativeOutbox`); the others go through `put_nowait`,
    which writes, queues, drops or evicts. With thousands of members each one's objects
    are out of the CPU's caches by the time the loop reaches them, so the loop reads as
    few of them as it can: the outbox, then the transport.
    """
    if type(message) is not Broadcast:
        for outbox in outboxes:
            outbox.put_nowait(message)
        return
    frames = message.frames
    if frames is None:
        frame_of(message, 0)
        frames = message.frames
    assert frames is not None
    get = frames.get
    for outbox in outboxes:
        direct = outbox._direct
        if direct is not None:
            built = get(outbox._bits)  # type: ignore[attr-defined]  # `_direct` is only ever set by NativeOutbox
            if built is not None:
                direct.write(built)
                continue
        outbox.put_nowait(message)


def encode(message: Any) -> tuple[str | None, bytes | None]:
    """A message as frame content: `str` as text, bytes as binary, anything else as JSON text."""
    if isinstance(message, str):
        return message, None
    if isinstance(message, bytes | bytearray | memoryview):
        return None, bytes(message)
    return _encode_json(message).decode(), None
