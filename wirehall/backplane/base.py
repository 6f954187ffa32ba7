"""The `Backplane` protocol: how a `WebSocketService` reaches other processes.

A backplane carries opaque byte payloads on named channels and keeps a shared view of
who is present in which room. It knows nothing of WebSockets, envelopes or JSON: the
`WebSocketService` decides what goes into a payload (origin, sequence number, exclusions)
and makes delivery exactly-once. Implementations need not inherit from this class.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Protocol, runtime_checkable

__all__ = ["Backplane"]


@runtime_checkable
class Backplane(Protocol):
    """The contract every backplane keeps (checked by `tests/backplane/test_contract.py`)."""

    @property
    def node_id(self) -> str:
        """This process's unique id on the backplane (stable for the backplane's life)."""
        ...

    @property
    def heartbeat_interval(self) -> float:
        """Seconds between two calls of `heartbeat()` that keep this node alive.

        The `WebSocketService` calls `heartbeat()` this often unless told otherwise.
        """
        ...

    async def start(self) -> None:
        """Connect. Raises `BackplaneError` with a clear message when that is impossible."""
        ...

    async def subscribe(self, channel: str) -> None:
        """Start receiving `channel`. Once this returns, nothing later published to it is missed.

        Subscribing twice to the same channel is the same as once.
        """
        ...

    async def unsubscribe(self, channel: str) -> None:
        """Stop receiving `channel` (no error when not subscribed).

        Once this returns, `messages()` yields nothing more of `channel`, not even what
        arrived before and was not yet taken.
        """
        ...

    async def publish(self, channel: str, payload: bytes) -> None:
        """Send `payload` to every node subscribed to `channel`, this node included.

        Raises `BackplaneError` when the payload could not be handed to the backplane.
        """
        ...

    def messages(self) -> AsyncIterator[tuple[str, bytes]]:
        """Every payload published on a subscribed channel, as `(channel, payload)`.

        Payloads of one channel arrive in the order the backplane ordered them; a payload
        is yielded once per subscription. What is published while this node is cut off
        from the backplane is not replayed. The iterator ends when the backplane is closed.
        Only one consumer may iterate.
        """
        ...

    async def add_presence(self, room: str, member: str, identity: str) -> None:
        """Record that `member` (a connection id) is in `room` as `identity`.

        Member ids start with this node's `node_id` and a dot (the service's connection ids
        do); an id of another node is a `ValueError`.
        """
        ...

    async def remove_presence(self, room: str, member: str) -> None:
        """Forget that `member` is in `room` (no error when it was not there, or is another node's)."""
        ...

    async def presence(self, room: str) -> dict[str, str]:
        """Members of `room` on every live node, as `{member: identity}`."""
        ...

    async def rooms(self) -> list[str]:
        """Rooms in which any node has recorded presence, sorted.

        Members of a node that died may keep a room listed until they are purged; ask
        `presence(room)` for who is really there.
        """
        ...

    async def heartbeat(self) -> list[str]:
        """Renew this node's liveness and purge members of nodes that stopped renewing theirs.

        Returns the rooms whose presence changed: by the purge (each reported by one node
        only), or by restoring this node's own members after the backplane lost them.
        Called by the service every `heartbeat_interval` seconds.
        """
        ...

    def on_reconnect(self, callback: Callable[[], None]) -> None:
        """Call `callback` each time this node is connected again after losing the backplane.

        It is called once the subscriptions are restored, so whatever is published from then
        on reaches this node; what was published while it was cut off did not, and what this
        node published meanwhile may not have reached the others. A backplane that cannot be
        cut off (one process) never calls it.
        """
        ...

    async def close(self) -> None:
        """Remove this node's presence, disconnect, and end `messages()`."""
        ...
