"""`MemoryBackplane`: the backplane of a single process (the default).

Several memory backplanes sharing one `MemoryHub` behave like the nodes of a cluster
(each with its own node id, subscriptions and message stream), which is how the
contract tests and multi-node tests run without Redis. Tests can play the failures of a
real cluster on them: `cut_off()` / `reconnect()` a node from the backplane, and
`MemoryHub.expire(node_id)` a node's liveness as if it had stopped renewing it.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable

from wirehall.errors import BackplaneError

__all__ = ["MemoryBackplane", "MemoryHub"]


class MemoryHub:
    """What memory backplanes of one "cluster" share: subscriptions, presence, liveness."""

    def __init__(self) -> None:
        self.subscribers: dict[str, set[MemoryBackplane]] = {}
        # room -> member -> (node id, identity)
        self.presence: dict[str, dict[str, tuple[str, str]]] = {}
        # nodes whose liveness lapsed: their members are hidden until one node purges them
        self.expired: set[str] = set()

    def expire(self, node_id: str) -> None:
        """Act as if `node_id` stopped renewing its liveness (for tests).

        Its members disappear from `presence()` at once; the next `heartbeat()` of another
        node purges and reports them; its own next `heartbeat()` makes it alive again.
        """
        self.expired.add(node_id)

    def drop_node(self, node_id: str) -> list[str]:
        """Delete every member of `node_id`; the rooms that lost one, sorted."""
        changed: list[str] = []
        for room in list(self.presence):
            members = self.presence[room]
            gone = [member for member, (node, _) in members.items() if node == node_id]
            for member in gone:
                del members[member]
            if gone:
                changed.append(room)
            if not members:
                del self.presence[room]
        return sorted(changed)


class MemoryBackplane:
    """An in-process backplane: an asyncio queue per node, presence in dicts.

    Args:
        hub: what the nodes of one cluster share (a new one when not given).
        node_id: this node's id (random when not given).
        heartbeat_interval: how often the service should call `heartbeat()` (default 5 s).
    """

    def __init__(
        self, hub: MemoryHub | None = None, *, node_id: str | None = None, heartbeat_interval: float = 5.0
    ) -> None:
        self.hub = hub if hub is not None else MemoryHub()
        self._node_id = node_id or secrets.token_hex(6)
        self._heartbeat_interval = heartbeat_interval
        self._queue: asyncio.Queue[tuple[str, bytes] | None] = asyncio.Queue()
        self._channels: set[str] = set()
        # this node's members, the source of truth for them (as on Redis)
        self._own: dict[str, dict[str, str]] = {}
        self._started = False
        self._closed = False
        self._cut_off = False
        self._consuming = False
        self._reconnect_callbacks: list[Callable[[], None]] = []

    @property
    def node_id(self) -> str:
        """This node's id (random unless given)."""
        return self._node_id

    @property
    def heartbeat_interval(self) -> float:
        """Seconds between two `heartbeat()` calls (as given; nothing expires on its own)."""
        return self._heartbeat_interval

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
        """Stop receiving `channel`; what is queued of it is not yielded either."""
        self._channels.discard(channel)
        self._leave_channel(channel)

    def _leave_channel(self, channel: str) -> None:
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
        """Payloads of subscribed channels in publication order; ends at `close()`.

        What was queued before `close()` is still yielded; what was queued of a channel
        unsubscribed since is not.

        Raises:
            RuntimeError: another consumer is already iterating.
        """
        if self._consuming:
            raise RuntimeError("MemoryBackplane.messages() already has a consumer")
        self._consuming = True
        queue = self._queue
        try:
            while not (self._closed and queue.empty()):
                item = await queue.get()
                if item is None:
                    return
                if item[0] in self._channels:
                    yield item
        finally:
            self._consuming = False

    async def add_presence(self, room: str, member: str, identity: str) -> None:
        """Record `member` in `room` as `identity`.

        Raises:
            ValueError: `member` does not start with this node's id and a dot.
        """
        self._check(f"add presence to {room!r}")
        if not member.startswith(f"{self._node_id}."):
            raise ValueError(
                f"presence member {member!r} does not belong to node {self._node_id}: "
                f"member ids must start with {self._node_id + '.'!r}"
            )
        self._own.setdefault(room, {})[member] = identity
        self.hub.presence.setdefault(room, {})[member] = (self._node_id, identity)

    async def remove_presence(self, room: str, member: str) -> None:
        """Forget this node's `member` in `room` (another node's member is left alone)."""
        own = self._own.get(room)
        if own is None or own.pop(member, None) is None:
            return
        if not own:
            del self._own[room]
        members = self.hub.presence.get(room)
        if members is not None and members.pop(member, None) is not None and not members:
            del self.hub.presence[room]

    async def presence(self, room: str) -> dict[str, str]:
        """`{member: identity}` in `room`, across the hub's live nodes."""
        expired = self.hub.expired
        return {
            member: identity
            for member, (node, identity) in self.hub.presence.get(room, {}).items()
            if node not in expired
        }

    async def rooms(self) -> list[str]:
        """Rooms with presence on any of the hub's nodes."""
        return sorted(room for room, members in self.hub.presence.items() if members)

    async def heartbeat(self) -> list[str]:
        """Purge the members of expired nodes, and restore this node's own if they were purged.

        Returns the rooms that changed. Nothing expires unless a test calls `MemoryHub.expire`.
        """
        self._check("renew this node's liveness")
        hub = self.hub
        hub.expired.discard(self._node_id)
        changed: set[str] = set()
        for node in sorted(hub.expired):
            hub.expired.discard(node)  # claimed: only this node purges and reports it
            changed.update(hub.drop_node(node))
        for room, members in self._own.items():
            present = hub.presence.setdefault(room, {})
            for member, identity in members.items():
                if present.get(member) != (self._node_id, identity):
                    present[member] = (self._node_id, identity)
                    changed.add(room)
        return sorted(changed)

    async def close(self) -> None:
        """Remove this node's presence and subscriptions; end `messages()` (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for channel in self._channels:  # still wanted: what is queued is yielded
            self._leave_channel(channel)
        self.hub.drop_node(self._node_id)
        self.hub.expired.discard(self._node_id)
        self._own.clear()
        self._queue.put_nowait(None)

    def __repr__(self) -> str:
        return f"<MemoryBackplane node={self._node_id} channels={len(self._channels)}>"
