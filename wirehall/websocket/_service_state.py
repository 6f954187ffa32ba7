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
from wirehall.websocket._presence import PresenceBook, PresenceNotice
from wirehall.websocket.handler import WebSocketHandler, send_message

__all__ = [
    "ALL_CHANNEL",
    "Hold",
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
    _rooms: dict[str, dict[str, WebSocketHandler]]
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


def send_all(members: dict[str, WebSocketHandler], message: Message, exclude: Iterable[str]) -> int:
    """Queue `message` for `members` (id -> connection) but `exclude`; never waits. Returns how many."""
    # Copies (no per-member tuples): a slow or dead consumer leaves the room during the loop.
    if exclude:
        excluded = frozenset(exclude)
        handlers = tuple(
            h for i, h in zip(tuple(members), tuple(members.values()), strict=True) if i not in excluded
        )
    else:
        handlers = tuple(members.values())
    deliver(handlers, message)
    return len(handlers)


def deliver(handlers: Sequence[WebSocketHandler], message: Message) -> None:
    """Queue `message` for each of `handlers`, never waiting: the hot loop of every fan-out.

    A member on the native path whose transport takes frames now gets the broadcast's
    shared frame written at once (see `NativeOutbox`); the others go through their
    outboxes, which write, queue, drop or evict.
    """
    if type(message) is not Broadcast:
        for handler in handlers:
            handler.send_nowait(message)
        return
    frames = message.frames
    if frames is None:
        frame_of(message, 0)
        frames = message.frames
    assert frames is not None
    get = frames.get
    for handler in handlers:
        outbox = handler._outbox
        direct = outbox._direct
        if direct is not None:
            built = get(outbox._bits)  # type: ignore[union-attr]
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
