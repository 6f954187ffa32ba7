"""`WebSocketService`'s positioned broadcasts: each room's messages in position order on every
node, held joiners released where their history ends, gaps waited for then replayed, and
what the backplane could not take published again (the order itself is `_ordering.RoomOrder`)."""

from __future__ import annotations

import asyncio
import logging
import time

import msgspec

from wirehall.events import DeliveryInterrupted
from wirehall.types import Message
from wirehall.websocket._envelope import Envelope, Kind, encode_envelope
from wirehall.websocket._ordering import RoomOrder
from wirehall.websocket._service_state import (
    Hold,
    Positioned,
    ReplaySource,
    ServiceState,
    encode,
    frame,
    send_all,
)
from wirehall.websocket.codes import CloseCode
from wirehall.websocket.handler import WebSocketHandler

_REPLAY_PAGE = 500  # positioned messages asked of the replay source at a time

__all__ = ["PositionedDelivery"]

# one logger for the whole service, whichever of its modules speaks
logger = logging.getLogger("wirehall.websocket.service")


class PositionedDelivery(ServiceState):
    """Positioned broadcasts: order, holds, gaps, replay and republishing."""

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
        self._room_members(room)[connection_id] = handler
        ready: list[tuple[int, Positioned]] = []
        if after is not None:
            ready_or_none = self._go_live(room, connection_id, hold, after)
            if ready_or_none is None:
                return
            ready = ready_or_none
        sent = 0
        for position, message in hold.items:
            if not position or after is None or position > after:
                handler.send_nowait(message)
                sent += 1
        if sent and self.metrics is not None:
            self.metrics.sent(sent)
        for position, (message, exclude) in ready:
            self._fan_out(room, message, exclude, position)

    def _go_live(
        self, room: str, connection_id: str, hold: Hold, after: int
    ) -> list[tuple[int, Positioned]] | None:
        """Place a released connection whose history ends at `after` in the room's order.

        Returns what the room can deliver now (it starts here), or None when the
        connection missed messages and is being closed so that it catches up.
        """
        order = self._order(room)
        ready: list[tuple[int, Positioned]] = []
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
                self._spawn_background(hold.handler.close_from_outside(CloseCode.SERVICE_RESTART))
                return None
        if after >= first:
            self._ahead.setdefault(room, {})[connection_id] = after
        return ready

    def delivered_position(self, room: str) -> int | None:
        """The room's last position delivered (or released past) on this node; None when unknown.

        Every positioned message of `room` after it has yet to reach this node's members, so
        a joiner holding the room (`join(..., hold=True)`) will get it. An app may reuse a
        history it read at position `p >= delivered_position(room)` instead of reading it
        again: nothing after `p` has been delivered here, and nothing up to `p` is missing from
        it. None (no positioned message or release here yet, or the room emptied): read anew.
        """
        order = self._orders.get(room)
        if order is None or order.next is None:
            return None
        return order.next - 1

    def replay_from(self, source: ReplaySource | None) -> None:
        """Where missed positioned broadcasts are fetched: `source(room, after, limit)`.

        Used when a room's positioned messages have a gap that does not close within
        `gap_timeout`, and for every room with members here after a backplane outage.
        """
        self._replay = source

    def _forget_order(self, room: str) -> None:
        self._orders.pop(room, None)
        self._ahead.pop(room, None)
        timer = self._gap_timers.pop(room, None)
        if timer is not None:
            timer.cancel()

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
            if self.metrics is not None:
                self.metrics.publish_failed()
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
                if self.metrics is not None:
                    self.metrics.publish_failed()
                logger.warning("%d broadcasts still wait for the backplane (%s)", len(self._unpublished), exc)
                return
            if self._unpublished and self._unpublished[0][1] is envelope:
                self._unpublished.popleft()

    def _order(self, room: str) -> RoomOrder[Positioned]:
        order = self._orders.get(room)
        if order is None:
            order = self._orders[room] = RoomOrder(asyncio.get_running_loop().time)
        return order

    def _deliver_positioned(self, envelope: Envelope) -> None:
        room = envelope.target
        if envelope.kind is not Kind.ROOM or not self._has_local(room):
            return
        message = frame(envelope.text, envelope.data)
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
        metrics = self.metrics
        if metrics is None:
            self._send_positioned(room, message, exclude, position)
            return
        started = time.perf_counter()
        sent = self._send_positioned(room, message, exclude, position)
        metrics.fanned_out(sent, time.perf_counter() - started)

    def _send_positioned(self, room: str, message: Message, exclude: tuple[str, ...], position: int) -> int:
        """Hand a positioned broadcast to the room's members (and holds); returns how many members."""
        holds = self._holding.get(room)
        if holds:
            for connection_id, hold in holds.items():
                if connection_id not in exclude:
                    hold.items.append((position, message))
        members = self._rooms.get(room)
        if not members:
            return 0
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
        return send_all(members, message, skip)

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
                self._offer(room, position, frame(*encode(item)), ())
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
