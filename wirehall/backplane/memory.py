"""`MemoryBackplane`: the backplane of a single process (the default).

Several memory backplanes sharing one `MemoryHub` behave like the nodes of a cluster
(each with its own node id, subscriptions and message stream), which is how the
contract tests and multi-node tests run without Redis.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable

from wirehall.errors import BackplaneError

__all__ = ["MemoryBackplane", "MemoryHub"]


class MemoryHub:
    """What memory backplanes of one "cluster" share: subscriptions and presence."""

    def __init__(self) -> None:
        self.subscribers: dict[str, set[MemoryBackplane]] = {}
        # room -> member -> (node id, identity)
        self.presence: dict[str, dict[str, tuple[str, str]]] = {}


class MemoryBackplane:
    """An in-process backplane: an asyncio queue per node, presence in dicts."""

    def __init__(self, hub: MemoryHub | None = None, *, node_id: str | None = None) -> None:
        self.hub = hub if hub is not None else MemoryHub()
        self._node_id = node_id or secrets.token_hex(6)
        self._queue: asyncio.Queue[tuple[str, bytes] | None] = asyncio.Queue()
        self._channels: set[str] = set()
        self._started = False
        self._closed = False
        self._cut_off = False
        self._reconnect_callbacks: list[Callable[[], None]] = []

    @property
    def node_id(self) -> str:
        """This node's id (random unless given)."""
        return self._node_id

    def _check(self, action: str) -> None:
        if self._closed:
            raise BackplaneError(f"cannot {action}: the memory backplane is closed")
        if not self._started:
            raise BackplaneError(f"cannot {action}: the memory backplane was not started; call start()")

    async def start(self) -> None:
        """Nothing to connect; marks the backplane usable."""
        if self._closed:
            raise BackplaneError("a closed memory backplane cannot be started again; make a new one")
        self._started = True

    async def subscribe(self, channel: str) -> None:
        """Receive `channel` from now on."""
        self._check(f"subscribe to {channel!r}")
        self._channels.add(channel)
        self.hub.subscribers.setdefault(channel, set()).add(self)

    async def unsubscribe(self, channel: str) -> None:
        """Stop receiving `channel`."""
        self._channels.discard(channel)
        subscribers = self.hub.subscribers.get(channel)
        if subscribers is not None:
            subscribers.discard(self)
            if not subscribers:
                del self.hub.subscribers[channel]

    async def publish(self, channel: str, payload: bytes) -> None:
        """Queue `payload` for every node subscribed to `channel` (and not cut off)."""
        self._check(f"publish to {channel!r}")
        if self._cut_off:
            raise BackplaneError(f"cannot publish to {channel!r}: this node is cut off (cut_off())")
        for node in self.hub.subscribers.get(channel, ()):
            node.receive(channel, payload)

    def receive(self, channel: str, payload: bytes) -> None:
        """Queue a payload published on `channel` for `messages()` (dropped while cut off)."""
        if not self._cut_off:
            self._queue.put_nowait((channel, payload))

    def cut_off(self) -> None:
        """Act as if this node lost the backplane: publishes fail and nothing arrives (for tests)."""
        self._cut_off = True

    def reconnect(self) -> None:
        """End `cut_off()`: deliveries resume, then the `on_reconnect` callbacks run."""
        if not self._cut_off:
            return
        self._cut_off = False
        for callback in list(self._reconnect_callbacks):
            callback()

    def on_reconnect(self, callback: Callable[[], None]) -> None:
        """Call `callback` after each `reconnect()` that ends a `cut_off()`."""
        self._reconnect_callbacks.append(callback)

    async def messages(self) -> AsyncIterator[tuple[str, bytes]]:
        """Payloads of subscribed channels in publication order; ends at `close()`."""
        queue = self._queue
        while not (self._closed and queue.empty()):
            item = await queue.get()
            if item is None:
                return
            yield item

    async def add_presence(self, room: str, member: str, identity: str) -> None:
        """Record `member` in `room` as `identity`."""
        self._check(f"add presence to {room!r}")
        self.hub.presence.setdefault(room, {})[member] = (self._node_id, identity)

    async def remove_presence(self, room: str, member: str) -> None:
        """Forget `member` in `room`."""
        members = self.hub.presence.get(room)
        if members is not None and members.pop(member, None) is not None and not members:
            del self.hub.presence[room]

    async def presence(self, room: str) -> dict[str, str]:
        """`{member: identity}` in `room`, across the hub's nodes."""
        return {member: identity for member, (_, identity) in self.hub.presence.get(room, {}).items()}

    async def rooms(self) -> list[str]:
        """Rooms with presence on any of the hub's nodes."""
        return sorted(room for room, members in self.hub.presence.items() if members)

    async def heartbeat(self) -> list[str]:
        """Nodes of one process cannot die separately: nothing to purge."""
        return []

    async def close(self) -> None:
        """Remove this node's presence and subscriptions; end `messages()` (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for channel in list(self._channels):
            await self.unsubscribe(channel)
        presence = self.hub.presence
        for room in list(presence):
            members = presence[room]
            for member in [m for m, (node, _) in members.items() if node == self._node_id]:
                del members[member]
            if not members:
                del presence[room]
        self._queue.put_nowait(None)

    def __repr__(self) -> str:
        return f"<MemoryBackplane node={self._node_id} channels={len(self._channels)}>"
