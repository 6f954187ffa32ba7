"""The Redis backplane's presence: who is in which room, node liveness and the heartbeat.

This node's members are kept locally, the source of truth for them: Redis may lose them
(a restart, a liveness that expired), and a write that fails leaves the local copy
"dirty", to be written again whole (the RESYNC script) at the next chance. The Lua
scripts (`_redis_scripts.py`) do each multi-key step atomically inside Redis.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Final

import msgspec

from wirehall.backplane import _redis_scripts as scripts
from wirehall.backplane._redis_io import FAILURES, Target, aioredis, reason, texts
from wirehall.errors import BackplaneError

__all__ = ["Presence"]

# The parts of the Redis backplane log under the one name it has always used.
logger = logging.getLogger("wirehall.backplane.redis")

_POOL_SIZE: Final = 32
# The presence script answers one msgpack array (member, identity, member, ...): for a big
# room that is far cheaper than thousands of RESP bulk strings parsed by redis-py.
_MEMBERS: Final = msgspec.msgpack.Decoder(list[str])


class Presence:
    """Presence of one node in Redis: hashes per room, a liveness key, a heartbeat."""

    def __init__(self, target: Target, node_id: str) -> None:
        settings = target.settings
        self._target = target
        self._node_id = node_id
        self._prefix = settings.prefix
        self._node_rooms_key = f"{settings.prefix}:node-rooms:{node_id}"
        self._ttl_ms = max(1, round(settings.heartbeat_ttl * 1000))
        self._pool = target.shared_pool(f"wirehall-{node_id}", _POOL_SIZE)
        self._client = aioredis.Redis(connection_pool=self._pool)
        self._heartbeat_script = self._client.register_script(scripts.HEARTBEAT)
        self._resync_script = self._client.register_script(scripts.RESYNC)
        self._leave_script = self._client.register_script(scripts.LEAVE)
        self._presence_script = self._client.register_script(scripts.PRESENCE)
        self._local: dict[str, dict[str, str]] = {}
        self._lock = asyncio.Lock()
        self._dirty = False
        self._changed_rooms: set[str] = set()

    # -- members -----------------------------------------------------------------------------

    async def add(self, room: str, member: str, identity: str) -> None:
        """Record this node's `member` in `room`; kept locally when Redis cannot be written."""
        self._check_member(member)
        self._local.setdefault(room, {})[member] = identity

        async def write() -> None:
            pipe = self._client.pipeline(transaction=True)
            pipe.hset(self._presence_key(room), member, identity)
            pipe.sadd(self._node_rooms_key, room)
            pipe.sadd(f"{self._prefix}:nodes", self._node_id)
            await pipe.execute()

        await self._write(f"record {member!r} in room {room!r}", write)

    async def remove(self, room: str, member: str) -> None:
        """Forget this node's `member` in `room` (another node's member is left alone)."""
        members = self._local.get(room)
        if members is None or members.pop(member, None) is None:
            return
        room_left = not members
        if room_left:
            del self._local[room]

        async def write() -> None:
            pipe = self._client.pipeline(transaction=True)
            pipe.hdel(self._presence_key(room), member)
            if room_left:
                pipe.srem(self._node_rooms_key, room)
            await pipe.execute()

        await self._write(f"remove {member!r} from room {room!r}", write)

    async def members(self, room: str) -> dict[str, str]:
        """Members of `room` on every live node; this node's from its local copy."""
        packed: bytes = await self._target.call(
            f"read the presence of room {room!r}",
            self._presence_script(args=[self._prefix, room]),
        )
        try:
            flat = _MEMBERS.decode(packed)
        except msgspec.DecodeError as exc:
            raise BackplaneError(f"Redis answered presence of {room!r} with {packed[:40]!r}") from exc
        own = f"{self._node_id}."
        members = {
            member: identity
            for member, identity in zip(flat[::2], flat[1::2], strict=True)
            if not member.startswith(own)
        }
        members.update(self._local.get(room, {}))
        return members

    async def rooms(self) -> list[str]:
        """Rooms with presence recorded by any node (SCAN over the presence keys), sorted."""
        head = f"{self._prefix}:presence:"

        async def scan() -> set[str]:
            found: set[str] = set()
            async for key in self._client.scan_iter(match=f"{head}*", count=1000):
                found.add(key.decode("utf-8", "replace")[len(head) :])
            return found

        found = await self._target.call("list the rooms with presence", scan())
        return sorted(found | {room for room, members in self._local.items() if members})

    def _check_member(self, member: str) -> None:
        if not member.startswith(f"{self._node_id}."):
            raise ValueError(
                f"presence member {member!r} does not belong to node {self._node_id}: "
                f"member ids must start with {self._node_id + '.'!r}"
            )

    def _presence_key(self, room: str) -> str:
        return f"{self._prefix}:presence:{room}"

    # -- liveness ----------------------------------------------------------------------------

    async def heartbeat(self) -> list[str]:
        """Renew liveness, purge dead nodes, restore this node's members if Redis lost them."""
        existed, dead_nodes, changed_rooms = await self._target.call(
            "renew this node's liveness",
            self._heartbeat_script(args=[self._prefix, self._node_id, self._ttl_ms]),
        )
        dead, rooms = texts(dead_nodes), texts(changed_rooms)
        if dead:
            logger.info(
                "purged nodes %s whose liveness expired; presence changed in %d rooms",
                ", ".join(sorted(dead)),
                len(rooms),
            )
        self._changed_rooms.update(rooms)
        if not existed:
            self._dirty = True
            logger.warning(
                "node %s was no longer alive in Redis at %s (Redis restarted, or heartbeats "
                "came more than %g s apart); restoring its %d presence entries",
                self._node_id,
                self._target.safe_url,
                self._target.settings.heartbeat_ttl,
                sum(len(members) for members in self._local.values()),
            )
        if self._dirty:
            await self._target.call("restore this node's presence", self.resync())
        changed = sorted(self._changed_rooms)
        self._changed_rooms.clear()
        return changed

    async def resync(self) -> None:
        """Write this node's liveness and every member of it to Redis, replacing what is there."""
        async with self._lock:
            await self._resync()

    async def restore(self) -> None:
        """`resync()` after a reconnection; a failure is logged and left to the next heartbeat."""
        try:
            await self._target.call("restore this node's presence", self.resync())
        except BackplaneError as exc:
            logger.warning("%s; retrying at the next heartbeat", exc)

    async def leave(self) -> None:
        """Remove this node's members and keys from Redis and forget the local copy.

        Never raises: when Redis cannot be reached, other nodes purge this node's members
        once its liveness key expires.
        """
        try:
            await self._target.call(
                "remove this node's presence", self._leave_script(args=[self._prefix, self._node_id])
            )
        except BackplaneError as exc:
            logger.warning(
                "%s; other nodes drop this node's members within %g s",
                exc,
                self._target.settings.heartbeat_ttl,
            )

    def forget(self) -> None:
        """Drop the local copy of this node's members (the backplane is closed)."""
        self._local.clear()

    async def aclose(self) -> None:
        """Close the client and its pool."""
        await self._client.aclose()
        await self._pool.aclose()

    async def _write(self, action: str, write: Callable[[], Awaitable[None]]) -> None:
        try:
            async with asyncio.timeout(self._target.call_timeout), self._lock:
                if self._dirty:
                    await self._resync()
                else:
                    await write()
        except FAILURES as exc:
            self._dirty = True
            logger.warning(
                "could not %s in Redis at %s (%s); kept locally and written when Redis answers",
                action,
                self._target.safe_url,
                reason(exc),
            )

    async def _resync(self) -> None:
        self._dirty = True
        args: list[str | int] = [self._prefix, self._node_id, self._ttl_ms]
        for room, members in self._local.items():
            for member, identity in members.items():
                args += (room, member, identity)
        changed = texts(await self._resync_script(args=args))
        self._dirty = False
        self._changed_rooms.update(changed)
