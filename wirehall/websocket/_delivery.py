"""`WebSocketService`'s broadcasts: published through the backplane, delivered to this node's
members when they come back from it (never waiting on a socket)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

import msgspec

from wirehall.errors import BackplaneError
from wirehall.types import Message
from wirehall.websocket._envelope import Envelope, Kind, SeenWindow, decode_envelope, encode_envelope
from wirehall.websocket._service_state import ALL_CHANNEL, ServiceState, encode, frame, send_all
from wirehall.websocket.handler import WebSocketHandler

__all__ = ["Delivery"]

# one logger for the whole service, whichever of its modules speaks
logger = logging.getLogger("wirehall.websocket.service")


class Delivery(ServiceState):
    """Broadcast, send_to and the delivery of what the backplane brings."""

    def broadcast_local(self, room: str, message: Any) -> None:
        """Send `message` to the members of `room` on this node only (encoded once).

        Members that joined with `hold=True` get it when released, after what was sent
        before. Never waits on a socket; for presence lists built from `PresenceDiff`,
        which every node receives.
        """
        ready = frame(*encode(message))
        metrics = self.metrics
        started = time.perf_counter() if metrics is not None else 0.0
        holds = self._holding.get(room)
        if holds:
            for hold in holds.values():
                hold.items.append((0, ready))
        members = self._rooms.get(room)
        sent = send_all(members, ready, ()) if members else 0
        if metrics is not None:
            metrics.fanned_out(sent, time.perf_counter() - started)

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
        text, data = encode(message)
        excluded = tuple(item if isinstance(item, str) else item.id for item in exclude)
        self._seq += 1
        envelope = Envelope(self.node_id, self._seq, Kind.ROOM, room, text, data, excluded, position)
        self._seen_window(envelope.origin).accept(envelope.seq)  # its echo is not delivered again
        self._deliver_positioned(envelope)
        self._publish_in_background("room:" + room, envelope)

    async def broadcast_all(self, message: Any, *, exclude: Iterable[str | WebSocketHandler] = ()) -> None:
        """Send `message` to every connection on every node, except `exclude`."""
        await self._publish(ALL_CHANNEL, Kind.ALL, "", message, exclude)

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
        text, data = encode(message)
        excluded = tuple(item if isinstance(item, str) else item.id for item in exclude)
        self._seq += 1
        payload = encode_envelope(Envelope(self.node_id, self._seq, kind, target, text, data, excluded))
        try:
            await self.backplane.publish(channel, payload)
        except Exception as exc:
            if self.metrics is not None:
                self.metrics.publish_failed()
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
            self._deliver_room(envelope.target, frame(envelope.text, envelope.data), envelope.exclude)
        elif kind is Kind.DIRECT:
            handler = self._connections.get(envelope.target)
            if handler is not None:
                handler.send_nowait(frame(envelope.text, envelope.data))
                if self.metrics is not None:
                    self.metrics.sent(1)
        else:
            metrics = self.metrics
            started = time.perf_counter() if metrics is not None else 0.0
            sent = send_all(self._connections, frame(envelope.text, envelope.data), envelope.exclude)
            if metrics is not None:
                metrics.fanned_out(sent, time.perf_counter() - started)

    def _deliver_room(self, room: str, message: Message, exclude: tuple[str, ...]) -> None:
        metrics = self.metrics
        started = time.perf_counter() if metrics is not None else 0.0
        holds = self._holding.get(room)
        if holds:
            for connection_id, hold in holds.items():
                if connection_id not in exclude:
                    hold.items.append((0, message))
        members = self._rooms.get(room)
        sent = send_all(members, message, exclude) if members else 0
        if metrics is not None:
            metrics.fanned_out(sent, time.perf_counter() - started)
