"""`WebSocketService`: the connections of this process, their rooms, presence and broadcast."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque

from wirehall._tasks import Backoff, Supervisor
from wirehall.backplane.base import Backplane
from wirehall.backplane.memory import MemoryBackplane
from wirehall.events import EventBus
from wirehall.websocket._core import (
    DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_MAX_PENDING_BYTES,
    OutputLimits,
    SlowConsumerPolicy,
)
from wirehall.websocket._delivery import Delivery
from wirehall.websocket._envelope import Envelope, SeenWindow
from wirehall.websocket._membership import Membership
from wirehall.websocket._ordering import RoomOrder
from wirehall.websocket._positioned import PositionedDelivery
from wirehall.websocket._presence import PresenceBook
from wirehall.websocket._presence_wiring import PresenceWiring
from wirehall.websocket._service_state import (
    ALL_CHANNEL,
    Hold,
    Members,
    Positioned,
    ReplaySource,
    ServiceMetrics,
)
from wirehall.websocket.codes import CloseCode
from wirehall.websocket.handler import WebSocketHandler

__all__ = ["ReplaySource", "WebSocketService"]

logger = logging.getLogger(__name__)

_MAX_UNPUBLISHED = 10_000  # positioned broadcasts kept for republishing after an outage


class WebSocketService(Membership, PresenceWiring, Delivery, PositionedDelivery):
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

    This class is the facade: its public methods are implemented by its parts, one module
    each (`_membership`, `_presence_wiring`, `_delivery`, `_positioned`; see
    `_service_state`), and it owns the lifecycle (start, stop, the backplane pump).
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
            backplane = MemoryBackplane()
        if max_queue < 1:
            raise ValueError(f"max_queue must be at least 1, got {max_queue!r}")
        self.backplane = backplane
        self.events = events
        self.metrics: ServiceMetrics | None = None  # set by `wirehall.metrics` when the app counts
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
        self._rooms: dict[str, Members] = {}
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
        self._orders: dict[str, RoomOrder[Positioned]] = {}
        self._holding: dict[str, dict[str, Hold]] = {}
        self._ahead: dict[str, dict[str, int]] = {}
        self._gap_timers: dict[str, asyncio.TimerHandle] = {}
        self._unpublished: deque[tuple[str, Envelope]] = deque(maxlen=_MAX_UNPUBLISHED)
        self._publishing: set[asyncio.Task[None]] = set()
        self._replay: ReplaySource | None = None

    # the registry at a glance ------------------------------------------------------------

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

    def queue_depths(self) -> list[int]:
        """How many outgoing messages wait in each local connection's outbox (read by metrics)."""
        return [handler.queued for handler in self._connections.values()]

    def get(self, connection_id: str) -> WebSocketHandler | None:
        """The local connection with that id, if any."""
        return self._connections.get(connection_id)

    def local_members(self, room: str) -> list[WebSocketHandler]:
        """The connections of this process in `room`."""
        return list(self._rooms.get(room, {}).values())

    # the backplane's pump and heartbeat ---------------------------------------------------

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
        old = self.backplane
        if self._stopping and isinstance(old, MemoryBackplane):
            # served again (an app in a second test): a closed memory backplane is not
            # restarted, so this node joins the same hub on a fresh one
            self.backplane = MemoryBackplane(old.hub, heartbeat_interval=old.heartbeat_interval)
        await self.backplane.start()
        self._node_id = self.backplane.node_id
        await self.backplane.subscribe("node:" + self._node_id)
        await self.backplane.subscribe(ALL_CHANNEL)
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
