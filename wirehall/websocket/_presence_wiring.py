"""`WebSocketService`'s presence: diffs announced to other nodes, read back and published as
`PresenceDiff` events, coalesced per room (the bookkeeping is `_presence.PresenceBook`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

import msgspec

from wirehall.events import PresenceChanged, PresenceDiff
from wirehall.websocket._envelope import Envelope, Kind, encode_envelope
from wirehall.websocket._presence import PresenceNotice, decode_notice, encode_notice
from wirehall.websocket._service_state import ServiceState

__all__ = ["PresenceWiring"]

# one logger for the whole service, whichever of its modules speaks
logger = logging.getLogger("wirehall.websocket.service")


class PresenceWiring(ServiceState):
    """Who is in each room, across nodes, as coalesced diffs."""

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
                if self.metrics is not None:
                    self.metrics.publish_failed()
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
