"""`RedisBackplane`: several processes act as one through Redis pub/sub and a few keys.

Channels are Redis pub/sub channels named `{prefix}:{channel}`. Presence is a hash per
room, `{prefix}:presence:{room}` (member -> identity), where each member is a connection
id starting with the id of the node that owns it and a dot. Each node keeps a liveness key
`{prefix}:node:{node_id}` that expires after `heartbeat_ttl` seconds unless renewed, a set
`{prefix}:node-rooms:{node_id}` of the rooms it has members in, and is listed in the set
`{prefix}:nodes`. Whoever notices a node's liveness key gone first purges its members.

Design notes, URL options and failure behaviour: docs/redis-backplane.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, Final, Literal, TypeVar

import msgspec

from wirehall.backplane import _redis_scripts as scripts
from wirehall.backplane._redis_settings import parse_settings
from wirehall.backplane._resp import Incomplete, RespError, RespReader, pack_publish
from wirehall.errors import BackplaneError, ConfigurationError, MissingDependencyError

try:
    import redis.asyncio as aioredis
    from redis.asyncio.connection import AbstractConnection, BlockingConnectionPool, ConnectionPool
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import RedisError
    from redis.exceptions import TimeoutError as RedisTimeoutError
except ImportError as exc:  # pragma: no cover - depends on what is installed
    raise MissingDependencyError("redis", extra="redis") from exc

__all__ = ["RedisBackplane"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_MIN_BACKOFF: Final = 0.1
_MAX_BACKOFF: Final = 5.0
_POOL_SIZE: Final = 32
_PUBLISH_BATCH: Final = 1000
_SUBSCRIBE_CHUNK: Final = 500
# The presence script answers one msgpack array (member, identity, member, ...): for a big
# room that is far cheaper than thousands of RESP bulk strings parsed by redis-py.
_MEMBERS: Final = msgspec.msgpack.Decoder(list[str])
# Anything a broken or unreachable Redis can raise: redis-py's errors, socket errors and
# timeouts (TimeoutError is an OSError), unparsable or error replies.
_FAILURES: Final = (RedisError, OSError, RespError)


class RedisBackplane:
    """A `Backplane` on Redis (pub/sub for channels, hashes and expiring keys for presence).

    Build it with `RedisBackplane.from_url("redis://127.0.0.1:6379/0?prefix=myapp")` or with
    keyword arguments, which take precedence over the URL's options. Needs Redis 2.6.12 or
    later (tested with 7.0), reached at one address (standalone, or a failover setup
    behind one address); not Redis Cluster.

    Args:
        url: `redis://[[user]:password@]host[:port][/db][?options]`, or `rediss://` for TLS.
            Options other than the keyword arguments below are handed to redis-py.
        prefix: prefix of every key and channel (default "wirehall"). Pub/sub channels are
            shared by all databases of a server, so apps sharing a server need different
            prefixes even when they use different database numbers.
        heartbeat_ttl: seconds a node stays alive without calling `heartbeat()` (default 15);
            call `heartbeat()` at least three times per `heartbeat_ttl`.
        connect_timeout: seconds allowed to open a connection (default 3).
        command_timeout: seconds allowed for one Redis command (default 3).
        ping_interval: seconds of silence on the subscriber connection before it is probed
            with PING; no answer within as long again replaces the connection (default 5).
        startup: "fail" (default) makes `start()` raise `BackplaneError` when Redis cannot be
            reached; "wait" makes it retry with backoff until Redis answers.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str | None = None,
        heartbeat_ttl: float | None = None,
        connect_timeout: float | None = None,
        command_timeout: float | None = None,
        ping_interval: float | None = None,
        startup: Literal["fail", "wait"] | None = None,
    ) -> None:
        settings = parse_settings(
            url,
            {
                "prefix": prefix,
                "heartbeat_ttl": heartbeat_ttl,
                "connect_timeout": connect_timeout,
                "command_timeout": command_timeout,
                "ping_interval": ping_interval,
                "startup": startup,
            },
        )
        self._settings = settings
        self._node_id = uuid.uuid4().hex[:12]
        self._prefix = settings.prefix
        self._node_rooms_key = f"{settings.prefix}:node-rooms:{self._node_id}"
        self._ttl_ms = max(1, round(settings.heartbeat_ttl * 1000))
        # A call may have to open a connection before it runs.
        self._call_timeout = settings.connect_timeout + settings.command_timeout

        common: dict[str, Any] = {
            "protocol": 2,
            "socket_timeout": settings.command_timeout,
            "socket_connect_timeout": settings.connect_timeout,
            "health_check_interval": 0,
        }
        try:
            self._pool: BlockingConnectionPool = BlockingConnectionPool.from_url(
                settings.url,
                decode_responses=False,
                # One immediate retry on a fresh connection: a pooled connection may be
                # stale after a Redis restart. Nothing else retries, so failures are fast.
                retry=Retry(NoBackoff(), 1),
                client_name=f"wirehall-{self._node_id}",
                max_connections=_POOL_SIZE,
                timeout=settings.command_timeout,
                **common,
            )
            # Factories of the two connections read with RespReader: the subscriber's and
            # the publisher's (redis-py connects, authenticates and selects the database).
            self._subscriber_pool: ConnectionPool = ConnectionPool.from_url(
                settings.url,
                retry=Retry(NoBackoff(), 0),
                client_name=f"wirehall-sub-{self._node_id}",
                **common,
            )
            self._publisher_pool: ConnectionPool = ConnectionPool.from_url(
                settings.url,
                retry=Retry(NoBackoff(), 0),
                client_name=f"wirehall-pub-{self._node_id}",
                **common,
            )
            # Rejects options redis-py does not know now rather than at the first connection.
            self._subscriber_pool.make_connection()  # type: ignore[no-untyped-call]  # redis-py
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(
                f"the Redis URL {settings.safe_url!r} has an option redis-py rejects: {exc}"
            ) from exc
        self._client = aioredis.Redis(connection_pool=self._pool)
        self._heartbeat_script = self._client.register_script(scripts.HEARTBEAT)
        self._resync_script = self._client.register_script(scripts.RESYNC)
        self._leave_script = self._client.register_script(scripts.LEAVE)
        self._presence_script = self._client.register_script(scripts.PRESENCE)

        self._state: Literal["new", "running", "closed"] = "new"
        self._tasks: set[asyncio.Task[None]] = set()
        self._supervised: set[asyncio.Task[None]] = set()
        # Subscriber side. `_channels` is what we want (prefixed name -> name), `_confirmed`
        # what Redis confirmed on the current connection. Subscribe and unsubscribe requests
        # are serialised by `_subscription_lock`, each waiting for its own confirmation, so a
        # confirmation always belongs to the request waiting for it.
        self._channels: dict[bytes, str] = {}
        self._confirmed: set[bytes] = set()
        # (kind, key) -> one entry per command sent and not yet confirmed, oldest first; None
        # stands for a command nobody waits for (the re-subscription after a reconnect).
        self._waiters: dict[tuple[bytes, bytes], deque[asyncio.Future[bool] | None]] = {}
        self._subscription_lock = asyncio.Lock()
        self._subscriber: AbstractConnection | None = None
        self._subscriber_ready = asyncio.Event()
        self._inbox: deque[tuple[bytes, str, bytes]] = deque()
        self._inbox_ready = asyncio.Event()
        self._consuming = False
        # Publisher side: packed PUBLISH commands queue up here (with the time they were
        # queued) and go out in order, many per write, on one connection.
        self._outbox: list[tuple[bytes, float, asyncio.Future[None]]] = []
        self._outbox_ready = asyncio.Event()
        self._publisher: tuple[AbstractConnection, RespReader] | None = None
        # This node's presence, the source of truth for it (Redis may lose it).
        self._local: dict[str, dict[str, str]] = {}
        self._presence_lock = asyncio.Lock()
        self._presence_dirty = False
        self._changed_rooms: set[str] = set()
        self._reconnect_callbacks: list[Callable[[], None]] = []
        self._announce_reconnect = False

    @classmethod
    def from_url(cls, url: str) -> RedisBackplane:
        """Build a backplane from a `redis://` or `rediss://` URL and its query options.

        Raises:
            ConfigurationError: the URL or one of its options is not understood.
        """
        return cls(url)

    @property
    def node_id(self) -> str:
        """This backplane's unique id: 12 hex digits, fixed for its life."""
        return self._node_id

    @property
    def heartbeat_ttl(self) -> float:
        """Seconds this node stays alive in Redis without a `heartbeat()`."""
        return self._settings.heartbeat_ttl

    @property
    def heartbeat_interval(self) -> float:
        """How often to call `heartbeat()`: a third of `heartbeat_ttl`."""
        return self._settings.heartbeat_ttl / 3

    @property
    def url(self) -> str:
        """The Redis URL in use, password hidden."""
        return self._settings.safe_url

    @property
    def prefix(self) -> str:
        """The prefix of every key and channel."""
        return self._prefix

    def __repr__(self) -> str:
        return f"<RedisBackplane {self._settings.safe_url} node={self._node_id} {self._state}>"

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, register this node and start the subscriber.

        With `startup="wait"` this retries (0.1 s doubling up to 5 s) until Redis answers.

        Raises:
            BackplaneError: Redis cannot be reached (with `startup="fail"`), naming the URL.
        """
        if self._state == "running":
            return
        if self._state == "closed":
            raise BackplaneError("this RedisBackplane was closed; build a new one to start again")
        delay = _MIN_BACKOFF
        attempt = 0
        while True:
            attempt += 1
            if self._is_closed():
                raise BackplaneError("the Redis backplane was closed while starting")
            try:
                subscriber = await self._connect_subscriber()
                try:
                    await self._call("register this node", self._locked_resync())
                    await self._install_subscriber(subscriber)
                except BaseException:
                    await self._discard(subscriber)
                    raise
                break
            except BackplaneError as exc:
                if self._settings.startup == "fail":
                    raise BackplaneError(
                        f"could not reach Redis at {self._settings.safe_url} ({exc.__cause__ or exc})"
                        ". Start Redis there, correct the URL (WIREHALL_BACKPLANE), or add "
                        "?startup=wait to the URL to wait for Redis at startup."
                    ) from exc
                logger.warning(
                    "Redis at %s is not reachable yet (attempt %d: %s); retrying in %.1f s",
                    self._settings.safe_url,
                    attempt,
                    exc.__cause__ or exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF)
        if self._is_closed():
            self._detach(subscriber)
            await self._discard(subscriber)
            raise BackplaneError("the Redis backplane was closed while starting")
        self._state = "running"
        self._supervise(
            "subscriber", lambda: self._subscriber_loop(subscriber), lambda: self._subscriber_loop(None)
        )
        self._supervise("publisher", self._publisher_loop, self._publisher_loop)
        logger.info(
            "Redis backplane connected to %s as node %s (prefix %r)",
            self._settings.safe_url,
            self._node_id,
            self._prefix,
        )

    async def close(self) -> None:
        """Remove this node's presence, stop the subscriber, disconnect and end `messages()`.

        Never raises for an unreachable Redis: other nodes then drop this node's members once
        its liveness key expires.
        """
        if self._state == "closed":
            return
        was_running = self._state == "running"
        self._state = "closed"
        self._inbox.clear()
        self._inbox_ready.set()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        for _, _, future in self._outbox:
            if not future.done():
                future.set_exception(BackplaneError("the Redis backplane was closed"))
        self._outbox.clear()
        if self._publisher is not None:
            publisher = self._publisher[0]
            self._publisher = None
            await self._discard(publisher)
        if self._subscriber is not None:
            subscriber = self._subscriber
            self._detach(subscriber)
            await self._discard(subscriber)
        self._subscriber_ready.set()  # wakes subscribe() calls waiting for a connection
        if was_running:
            try:
                await self._call(
                    "remove this node's presence",
                    self._leave_script(args=[self._prefix, self._node_id]),
                )
            except BackplaneError as exc:
                logger.warning(
                    "%s; other nodes drop this node's members within %g s",
                    exc,
                    self._settings.heartbeat_ttl,
                )
        self._local.clear()
        if self._tasks:  # connections dropped while the loops stopped, being closed
            await asyncio.wait(list(self._tasks), timeout=self._call_timeout)
        await self._client.aclose()
        await self._pool.aclose()
        await self._subscriber_pool.aclose()
        await self._publisher_pool.aclose()
        logger.info("Redis backplane node %s closed", self._node_id)

    # -- channels ----------------------------------------------------------------------------

    async def subscribe(self, channel: str) -> None:
        """Start receiving `channel`; returns once Redis confirmed the subscription.

        Raises:
            BackplaneError: Redis did not confirm within the command timeout (e.g. it is
                down). The channel stays wanted and is subscribed when the connection is back.
        """
        self._ensure_running()
        key = self._channel_key(channel)
        self._channels[key] = channel
        try:
            async with asyncio.timeout(self._call_timeout):
                while key in self._channels and key not in self._confirmed:
                    if not await self._request(b"subscribe", key):
                        await self._subscriber_ready.wait()
                    self._ensure_running()
        except TimeoutError as exc:
            raise BackplaneError(
                f"Redis at {self._settings.safe_url} did not confirm the subscription to "
                f"{channel!r} within {self._call_timeout:g} s; it is subscribed as soon as "
                "the connection is back"
            ) from exc

    async def unsubscribe(self, channel: str) -> None:
        """Stop receiving `channel`; nothing published to it is yielded after this returns."""
        key = self._channel_key(channel)
        if self._channels.pop(key, None) is None:
            return
        self._confirmed.discard(key)
        if self._state != "running" or self._subscriber is None:
            return  # the next connection will not subscribe it
        try:
            async with asyncio.timeout(self._call_timeout):
                await self._request(b"unsubscribe", key)
        except TimeoutError:
            logger.warning(
                "Redis at %s did not confirm unsubscribing %r within %g s",
                self._settings.safe_url,
                channel,
                self._call_timeout,
            )

    async def publish(self, channel: str, payload: bytes) -> None:
        """Publish `payload` on `channel`; publishes from one node go out in call order.

        Raises:
            BackplaneError: Redis refused it, or did not take it in time: at once when
                Redis refuses connections, within about twice `connect_timeout +
                command_timeout` when it hangs. A publish that timed out may still have
                been delivered.
        """
        self._ensure_running()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._outbox.append((pack_publish(self._channel_key(channel), payload), loop.time(), future))
        self._outbox_ready.set()
        await future

    async def messages(self) -> AsyncIterator[tuple[str, bytes]]:
        """Yield `(channel, payload)` for every message on a subscribed channel, in Redis order.

        Ends when the backplane is closed. Messages published while the subscriber
        connection is down are lost (Redis pub/sub keeps no history).

        Raises:
            RuntimeError: another consumer is already iterating.
        """
        if self._consuming:
            raise RuntimeError("RedisBackplane.messages() already has a consumer")
        self._consuming = True
        inbox, channels = self._inbox, self._channels
        try:
            while self._state != "closed":
                if inbox:
                    key, name, payload = inbox.popleft()
                    if key in channels:  # not unsubscribed since it arrived
                        yield name, payload
                else:
                    self._inbox_ready.clear()
                    await self._inbox_ready.wait()
        finally:
            self._consuming = False

    # -- presence ----------------------------------------------------------------------------

    async def add_presence(self, room: str, member: str, identity: str) -> None:
        """Record `member` (a connection id starting with `node_id` and ".") in `room`.

        When Redis cannot be written the entry is kept locally (a WARNING is logged) and
        written as soon as Redis answers again.

        Raises:
            ValueError: `member` does not belong to this node.
        """
        self._ensure_running()
        self._check_member(member)
        self._local.setdefault(room, {})[member] = identity

        async def write() -> None:
            pipe = self._client.pipeline(transaction=True)
            pipe.hset(self._presence_key(room), member, identity)
            pipe.sadd(self._node_rooms_key, room)
            pipe.sadd(self._nodes_key, self._node_id)
            await pipe.execute()

        await self._write_presence(f"record {member!r} in room {room!r}", write)

    async def remove_presence(self, room: str, member: str) -> None:
        """Forget that `member` is in `room` (no error when it was not there).

        Only this node's members can be removed; another node's member is left alone (it
        was never this node's to remove). Like `add_presence`, kept locally and written
        later when Redis cannot be written.
        """
        self._ensure_running()
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

        await self._write_presence(f"remove {member!r} from room {room!r}", write)

    async def presence(self, room: str) -> dict[str, str]:
        """Members of `room` on every live node, as `{member: identity}`.

        This node's own members come from its local copy, so they are right even while
        Redis is catching up after losing them.

        Raises:
            BackplaneError: Redis could not be read.
        """
        self._ensure_running()
        packed: bytes = await self._call(
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
        """Rooms with presence recorded by any node (SCAN over the presence keys).

        Raises:
            BackplaneError: Redis could not be read.
        """
        self._ensure_running()
        head = f"{self._prefix}:presence:"

        async def scan() -> set[str]:
            found: set[str] = set()
            async for key in self._client.scan_iter(match=f"{head}*", count=1000):
                found.add(key.decode("utf-8", "replace")[len(head) :])
            return found

        found = await self._call("list the rooms with presence", scan())
        return sorted(found | {room for room, members in self._local.items() if members})

    async def heartbeat(self) -> list[str]:
        """Renew this node's liveness and purge the members of nodes whose liveness expired.

        Each dead node is claimed atomically, so only one surviving node purges and reports
        it. Also restores this node's presence when Redis lost it (restart, expired
        liveness) and reports the rooms that restoring changed.

        Raises:
            BackplaneError: Redis could not be reached; rooms purged meanwhile are reported
                by a later successful call.
        """
        self._ensure_running()
        existed, dead_nodes, changed_rooms = await self._call(
            "renew this node's liveness",
            self._heartbeat_script(args=[self._prefix, self._node_id, self._ttl_ms]),
        )
        dead, rooms = _texts(dead_nodes), _texts(changed_rooms)
        if dead:
            logger.info(
                "purged nodes %s whose liveness expired; presence changed in %d rooms",
                ", ".join(sorted(dead)),
                len(rooms),
            )
        self._changed_rooms.update(rooms)
        if not existed:
            self._presence_dirty = True
            logger.warning(
                "node %s was no longer alive in Redis at %s (Redis restarted, or heartbeats "
                "came more than %g s apart); restoring its %d presence entries",
                self._node_id,
                self._settings.safe_url,
                self._settings.heartbeat_ttl,
                sum(len(members) for members in self._local.values()),
            )
        if self._presence_dirty:
            await self._call("restore this node's presence", self._locked_resync())
        changed = sorted(self._changed_rooms)
        self._changed_rooms.clear()
        return changed

    # -- internals: commands -----------------------------------------------------------------

    @property
    def _nodes_key(self) -> str:
        return f"{self._prefix}:nodes"

    def _presence_key(self, room: str) -> str:
        return f"{self._prefix}:presence:{room}"

    def _channel_key(self, channel: str) -> bytes:
        return f"{self._prefix}:{channel}".encode()

    def _is_closed(self) -> bool:
        return self._state == "closed"

    def _ensure_running(self) -> None:
        if self._state != "running":
            raise BackplaneError(
                "the Redis backplane is closed"
                if self._state == "closed"
                else "the Redis backplane is not started; await start() first"
            )

    def _check_member(self, member: str) -> None:
        if not member.startswith(f"{self._node_id}."):
            raise ValueError(
                f"presence member {member!r} does not belong to node {self._node_id}: "
                f"member ids must start with {self._node_id + '.'!r}"
            )

    async def _call(self, action: str, call: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self._call_timeout):
                return await call
        except _FAILURES as exc:
            reason = _reason(exc)
            raise BackplaneError(
                f"could not {action}: Redis at {self._settings.safe_url} failed ({reason})"
            ) from exc

    async def _write_presence(self, action: str, write: Callable[[], Awaitable[None]]) -> None:
        try:
            async with asyncio.timeout(self._call_timeout), self._presence_lock:
                if self._presence_dirty:
                    await self._resync()
                else:
                    await write()
        except _FAILURES as exc:
            self._presence_dirty = True
            logger.warning(
                "could not %s in Redis at %s (%s); kept locally and written when Redis answers",
                action,
                self._settings.safe_url,
                _reason(exc),
            )

    async def _locked_resync(self) -> None:
        async with self._presence_lock:
            await self._resync()

    async def _resync(self) -> None:
        self._presence_dirty = True
        args: list[str | int] = [self._prefix, self._node_id, self._ttl_ms]
        for room, members in self._local.items():
            for member, identity in members.items():
                args += (room, member, identity)
        changed = _texts(await self._resync_script(args=args))
        self._presence_dirty = False
        self._changed_rooms.update(changed)

    async def _restore_presence(self) -> None:
        try:
            await self._call("restore this node's presence", self._locked_resync())
        except BackplaneError as exc:
            logger.warning("%s; retrying at the next heartbeat", exc)

    async def _publisher_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._outbox_ready.wait()
            self._outbox_ready.clear()
            while self._outbox:
                batch = self._outbox[:_PUBLISH_BATCH]
                del self._outbox[:_PUBLISH_BATCH]
                too_old = loop.time() - self._call_timeout
                expired = [item for item in batch if item[1] < too_old]
                if expired:
                    self._settle(
                        expired,
                        f"Redis at {self._settings.safe_url} did not take a publish within "
                        f"{self._call_timeout:g} s",
                        None,
                    )
                    batch = [item for item in batch if item[1] >= too_old]
                batch = [item for item in batch if not item[2].done()]
                if not batch:
                    continue
                try:
                    await self._publish_batch(batch)
                finally:  # only a bug leaves any unsettled: then the loop restarts
                    self._settle(batch, "the Redis backplane's publisher failed", None)

    async def _publish_batch(self, batch: list[tuple[bytes, float, asyncio.Future[None]]]) -> None:
        done = 0
        try:
            async with asyncio.timeout(self._call_timeout):
                connection, reader = await self._publishing_connection()
                await connection.send_packed_command([item[0] for item in batch], False)
                for _, _, future in batch:
                    reply = await reader.reply()
                    done += 1
                    if future.done():
                        continue
                    if isinstance(reply, RespError):
                        future.set_exception(BackplaneError(f"Redis refused a publish: {reply}"))
                    else:
                        future.set_result(None)
        except _FAILURES as exc:
            self._drop_publisher()
            reason = _reason(exc)
            self._settle(
                batch[done:], f"could not publish to Redis at {self._settings.safe_url} ({reason})", exc
            )
        except asyncio.CancelledError:
            self._drop_publisher()
            self._settle(batch[done:], "the Redis backplane was closed", None)
            raise
        except Exception as exc:
            logger.exception("unexpected error publishing %d messages to Redis", len(batch))
            self._drop_publisher()
            self._settle(batch[done:], f"could not publish to Redis: {exc!r}", exc)

    async def _publishing_connection(self) -> tuple[AbstractConnection, RespReader]:
        publisher = self._publisher
        if publisher is not None and publisher[0].is_connected and not publisher[1].is_broken:
            return publisher
        self._drop_publisher()  # stale (e.g. Redis restarted): never send into it
        connection: AbstractConnection = self._publisher_pool.make_connection()  # type: ignore[no-untyped-call]  # redis-py
        try:
            await connection.connect()  # type: ignore[no-untyped-call]  # redis-py
            publisher = connection, RespReader(_stream_of(connection))
        except BaseException:
            await self._discard(connection)
            raise
        self._publisher = publisher
        return publisher

    def _drop_publisher(self) -> None:
        if self._publisher is not None:
            connection = self._publisher[0]
            self._publisher = None
            self._spawn(self._discard(connection), "wirehall-redis-discard")

    @staticmethod
    def _settle(
        batch: list[tuple[bytes, float, asyncio.Future[None]]],
        message: str,
        cause: BaseException | None,
    ) -> None:
        for _, _, future in batch:
            if not future.done():
                error = BackplaneError(message)
                error.__cause__ = cause
                future.set_exception(error)

    # -- internals: subscriber ---------------------------------------------------------------

    async def _connect_subscriber(self) -> AbstractConnection:
        # redis-py leaves make_connection() unannotated.
        connection: AbstractConnection = self._subscriber_pool.make_connection()  # type: ignore[no-untyped-call]
        try:
            async with asyncio.timeout(self._call_timeout):
                await connection.connect()  # type: ignore[no-untyped-call]  # redis-py
            _stream_of(connection)  # an incompatible redis-py fails here, at start()
        except _FAILURES as exc:
            await self._discard(connection)
            reason = _reason(exc)
            raise BackplaneError(
                f"could not connect to Redis at {self._settings.safe_url} ({reason})"
            ) from exc
        except BackplaneError:
            await self._discard(connection)
            raise
        return connection

    async def _install_subscriber(self, connection: AbstractConnection) -> int:
        """Subscribe every wanted channel on a new connection and make it the current one."""
        try:
            async with asyncio.timeout(self._call_timeout), self._subscription_lock:
                self._wake_waiters()  # anything still waiting belongs to a dead connection
                keys = list(self._channels)
                for key in keys:
                    self._waiters.setdefault((b"subscribe", key), deque()).append(None)
                for start in range(0, len(keys), _SUBSCRIBE_CHUNK):
                    await connection.send_command("SUBSCRIBE", *keys[start : start + _SUBSCRIBE_CHUNK])
                await connection.send_command("PING")
                self._subscriber = connection
                self._subscriber_ready.set()
        except _FAILURES as exc:
            self._wake_waiters()
            await self._discard(connection)
            raise BackplaneError(
                f"could not subscribe at Redis at {self._settings.safe_url} ({_reason(exc)})"
            ) from exc
        return len(keys)

    async def _request(self, kind: bytes, key: bytes) -> bool:
        """Send (UN)SUBSCRIBE for `key` and wait for its confirmation.

        Returns False when there is no working connection (the caller may wait for one).
        """
        async with self._subscription_lock:
            connection = self._subscriber
            if connection is None or not connection.is_connected:
                return False
            if kind == b"subscribe":
                if key in self._confirmed or key not in self._channels:
                    return True
            elif key in self._channels:
                return True  # wanted again meanwhile: leave it subscribed
            future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            waiters = self._waiters.setdefault((kind, key), deque())
            waiters.append(future)
            sent = False
            try:
                await connection.send_command(kind.decode().upper(), key)
                sent = True
                return await future
            except _FAILURES as exc:
                logger.debug("the subscriber connection failed while sending: %s", exc)
                self._detach(connection)
                return False
            finally:
                # A request that was sent keeps its place in the queue even when its caller
                # gave up, so that its late reply is not taken for the next request's.
                if not sent:
                    with contextlib.suppress(ValueError):
                        waiters.remove(future)
                    if not connection.is_connected:  # redis-py drops it on a failed send
                        self._detach(connection)

    def _dispatch(self, response: Any) -> None:
        if not isinstance(response, list):  # PONG to a PING sent before anything was subscribed
            if self._announce_reconnect:
                self._announce_reconnected()
            return
        kind = response[0]
        if kind == b"message":
            key = response[1]
            name = self._channels.get(key)
            if name is not None:
                self._inbox.append((key, name, response[2]))
                self._inbox_ready.set()
        elif kind == b"subscribe":
            key = response[1]
            if key in self._channels:
                self._confirmed.add(key)
            self._resolve((kind, key))
        elif kind == b"unsubscribe":
            key = response[1]
            if key is not None:
                self._confirmed.discard(key)
                self._resolve((kind, key))
        elif kind == b"pong":
            if self._announce_reconnect:
                self._announce_reconnected()
        else:
            logger.debug("ignored unexpected pub/sub reply %r", response[:2])

    def _resolve(self, waiter_key: tuple[bytes, bytes]) -> None:
        # Replies come in the order the commands were sent: each one settles the oldest.
        waiters = self._waiters.get(waiter_key)
        if not waiters:
            return
        future = waiters.popleft()
        if not waiters:
            del self._waiters[waiter_key]
        if future is not None and not future.done():
            future.set_result(True)

    def _detach(self, connection: AbstractConnection) -> None:
        """Forget `connection` as the current subscriber and wake everyone waiting on it."""
        if self._subscriber is not connection:
            return
        self._subscriber = None
        self._subscriber_ready.clear()
        self._confirmed.clear()
        self._wake_waiters()

    def _wake_waiters(self) -> None:
        """Tell every (un)subscribe request still waiting that its connection is gone."""
        waiting, self._waiters = self._waiters, {}
        for waiters in waiting.values():
            for future in waiters:
                if future is not None and not future.done():
                    future.set_result(False)

    async def _discard(self, connection: AbstractConnection) -> None:
        with contextlib.suppress(*_FAILURES):
            await connection.disconnect(nowait=True)

    async def _read(self, connection: AbstractConnection) -> None:
        reader = RespReader(_stream_of(connection))
        interval = self._settings.ping_interval
        awaiting_pong = False
        while True:
            while not isinstance(reply := reader.pop(), Incomplete):
                if isinstance(reply, RespError):
                    raise reply
                awaiting_pong = False
                self._dispatch(reply)
            try:
                async with asyncio.timeout(interval):
                    await reader.fill()
            except TimeoutError:
                if awaiting_pong:
                    raise TimeoutError(f"no answer to PING within {interval:g} s") from None
                if not connection.is_connected:  # redis-py closed it after a failed send
                    raise ConnectionError("the subscriber connection was closed") from None
                awaiting_pong = True
                await connection.send_command("PING")

    async def _subscriber_loop(self, connection: AbstractConnection | None) -> None:
        loop = asyncio.get_running_loop()
        delay = _MIN_BACKOFF
        if connection is None:  # restarted: the old loop's connection cannot be trusted
            lost_at = loop.time()
            if self._subscriber is not None:
                stale = self._subscriber
                self._detach(stale)
                await self._discard(stale)
            connection, count, delay = await self._reconnect(delay)
            self._reconnected(loop.time() - lost_at, count)
        while True:
            since = loop.time()
            try:
                await self._read(connection)
            except _FAILURES as exc:
                logger.warning(
                    "lost the Redis subscriber connection to %s (%s); reconnecting",
                    self._settings.safe_url,
                    _reason(exc),
                )
            except Exception:
                logger.exception(
                    "unexpected error reading from Redis at %s; reconnecting",
                    self._settings.safe_url,
                )
            finally:
                self._detach(connection)
                await self._discard(connection)
            lost_at = loop.time()
            if lost_at - since >= _MAX_BACKOFF:
                delay = _MIN_BACKOFF  # it had been working for a while: retry at once
            connection, count, delay = await self._reconnect(delay)
            self._reconnected(loop.time() - lost_at, count)

    def _reconnected(self, after: float, channels: int) -> None:
        logger.info(
            "reconnected to Redis at %s after %.1f s; re-subscribed %d channels",
            self._settings.safe_url,
            after,
            channels,
        )
        self._spawn(self._restore_presence(), "wirehall-redis-restore-presence")
        # The PING sent after the re-subscriptions is answered once Redis has processed them
        # all: from its answer on, nothing published is missed, so that is when we say so.
        self._announce_reconnect = True

    def on_reconnect(self, callback: Callable[[], None]) -> None:
        """Call `callback` each time the subscriber is connected again after losing Redis.

        Called once Redis confirmed the re-subscriptions (see `Backplane.on_reconnect`).
        """
        self._reconnect_callbacks.append(callback)

    def _announce_reconnected(self) -> None:
        self._announce_reconnect = False
        for callback in list(self._reconnect_callbacks):
            try:
                callback()
            except Exception:
                logger.exception("a reconnect callback of the Redis backplane failed")

    async def _reconnect(self, delay: float) -> tuple[AbstractConnection, int, float]:
        """Retry with exponential backoff until a new subscriber connection is installed."""
        attempt = 0
        while True:
            await asyncio.sleep(delay)
            attempt += 1
            try:
                connection = await self._connect_subscriber()
                count = await self._install_subscriber(connection)
            except BackplaneError as exc:
                reason: object = exc.__cause__ or exc
            except Exception as exc:
                logger.exception("unexpected error reconnecting to Redis")
                reason = repr(exc)
            else:
                return connection, count, min(delay * 2, _MAX_BACKOFF)
            delay = min(delay * 2, _MAX_BACKOFF)
            logger.warning(
                "Redis at %s still unreachable (attempt %d: %s); next try in %.1f s",
                self._settings.safe_url,
                attempt,
                reason,
                delay,
            )

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task in self._supervised:
            self._supervised.discard(task)  # its supervisor logs and restarts it
            return
        if not task.cancelled() and (error := task.exception()) is not None:
            logger.error("background task %s of the Redis backplane failed", task.get_name(), exc_info=error)

    def _supervise(
        self,
        name: str,
        first: Callable[[], Coroutine[Any, Any, None]],
        again: Callable[[], Coroutine[Any, Any, None]],
    ) -> None:
        """Run a loop that must not stop while the backplane runs; restart it (`again`) if it does."""

        def restart(task: asyncio.Task[None]) -> None:
            if self._state != "running" or task.cancelled():
                return
            logger.error(
                "the Redis backplane's %s loop stopped; restarting it",
                name,
                exc_info=task.exception(),
            )
            self._supervise(name, again, again)

        task = self._spawn(first(), f"wirehall-redis-{name}")
        self._supervised.add(task)
        task.add_done_callback(restart)


def _stream_of(connection: AbstractConnection) -> asyncio.StreamReader:
    """The socket reader under a connected redis-py connection, read with RespReader."""
    stream = getattr(connection, "_reader", None)
    if not isinstance(stream, asyncio.StreamReader):
        raise BackplaneError(
            f"redis-py {getattr(aioredis, '__version__', '?')} keeps no asyncio StreamReader "
            "at Connection._reader, which the Redis backplane reads; it was tested with "
            "redis-py 5 to 8"
        )
    return stream


def _reason(error: BaseException) -> str:
    """What went wrong, in a few words, for messages and logs."""
    if isinstance(error, TimeoutError | RedisTimeoutError):
        return f"timed out: {error}" if str(error) else "timed out"
    return str(error) or repr(error)


def _texts(replies: list[bytes]) -> list[str]:
    return [reply.decode() for reply in replies]
