"""`RedisBackplane`: several processes act as one through Redis pub/sub and a few keys.

Channels are Redis pub/sub channels named `{prefix}:{channel}`. Presence is a hash per
room, `{prefix}:presence:{room}` (member -> identity), where each member is a connection
id starting with the id of the node that owns it and a dot. Each node keeps a liveness key
`{prefix}:node:{node_id}` that expires after `heartbeat_ttl` seconds unless renewed, a set
`{prefix}:node-rooms:{node_id}` of the rooms it has members in, and is listed in the set
`{prefix}:nodes`. Whoever notices a node's liveness key gone first purges its members.

This module is the facade: it holds the lifecycle and keeps the public API. The work is
done by three parts, each owning its state: `_redis_subscriber.Subscriber` (the pub/sub
connection, subscriptions, reconnection, `on_reconnect`), `_redis_publisher.Publisher`
(the batching outbox) and `_redis_presence.Presence` (members, liveness, heartbeat).
Design notes, URL options and failure behaviour: docs/redis-backplane.md.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Literal

from wirehall._tasks import Backoff, Supervisor
from wirehall.backplane._redis_io import AbstractConnection, Target, discard
from wirehall.backplane._redis_presence import Presence
from wirehall.backplane._redis_publisher import Publisher
from wirehall.backplane._redis_settings import parse_settings
from wirehall.backplane._redis_subscriber import Subscriber
from wirehall.errors import BackplaneError, ConfigurationError

__all__ = ["RedisBackplane"]

logger = logging.getLogger("wirehall.backplane.redis")


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
        self._target = Target(settings)
        self._state: Literal["new", "running", "closed"] = "new"
        self._tasks = Supervisor(
            "the Redis backplane",
            logger=logger,
            is_running=lambda: self._state == "running",
            task_prefix="wirehall-redis",
        )
        try:
            self._subscriber = Subscriber(self._target, self._node_id, resubscribed=self._restore_presence)
            self._publisher = Publisher(self._target, self._node_id, self._tasks)
            self._presence = Presence(self._target, self._node_id)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(
                f"the Redis URL {settings.safe_url!r} has an option redis-py rejects: {exc}"
            ) from exc

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
        return self._settings.prefix

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
        backoff = Backoff(0.1, 5.0)
        while True:
            if self._is_closed():
                raise BackplaneError("the Redis backplane was closed while starting")
            try:
                subscriber = await self._connect()
                break
            except BackplaneError as exc:
                if self._settings.startup == "fail":
                    raise BackplaneError(
                        f"could not reach Redis at {self._settings.safe_url} ({exc.__cause__ or exc})"
                        ". Start Redis there, correct the URL (WIREHALL_BACKPLANE), or add "
                        "?startup=wait to the URL to wait for Redis at startup."
                    ) from exc
                delay = backoff.next()
                logger.warning(
                    "Redis at %s is not reachable yet (attempt %d: %s); retrying in %.1f s",
                    self._settings.safe_url,
                    backoff.failures,
                    exc.__cause__ or exc,
                    delay,
                )
                await asyncio.sleep(delay)
        if self._is_closed():
            await self._subscriber.release(subscriber)
            raise BackplaneError("the Redis backplane was closed while starting")
        self._state = "running"
        self._tasks.supervise(
            "subscriber", lambda: self._subscriber.run(subscriber), lambda: self._subscriber.run(None)
        )
        self._tasks.supervise("publisher", self._publisher.run)
        logger.info(
            "Redis backplane connected to %s as node %s (prefix %r)",
            self._settings.safe_url,
            self._node_id,
            self._settings.prefix,
        )

    async def _connect(self) -> AbstractConnection:
        """Open the subscriber connection, register this node, then subscribe (once)."""
        connection = await self._subscriber.connect()
        try:
            await self._target.call("register this node", self._presence.resync())
            await self._subscriber.install(connection)
        except BaseException:
            await discard(connection)
            raise
        return connection

    async def close(self) -> None:
        """Remove this node's presence, stop the subscriber, disconnect and end `messages()`.

        Never raises for an unreachable Redis: other nodes then drop this node's members once
        its liveness key expires.
        """
        if self._state == "closed":
            return
        was_running = self._state == "running"
        self._state = "closed"
        self._subscriber.end()
        await self._tasks.cancel()
        await self._publisher.close()
        await self._subscriber.close()
        if was_running:
            await self._presence.leave()
        self._presence.forget()
        # connections dropped while the loops stopped, being closed
        await self._tasks.settle(self._target.call_timeout)
        await self._presence.aclose()
        await self._subscriber.aclose_pool()
        logger.info("Redis backplane node %s closed", self._node_id)

    def _is_closed(self) -> bool:
        return self._state == "closed"

    def _ensure_running(self) -> None:
        if self._state != "running":
            raise BackplaneError(
                "the Redis backplane is closed"
                if self._state == "closed"
                else "the Redis backplane is not started; await start() first"
            )

    def _channel_key(self, channel: str) -> bytes:
        return f"{self._settings.prefix}:{channel}".encode()

    # -- channels ----------------------------------------------------------------------------

    async def subscribe(self, channel: str) -> None:
        """Start receiving `channel`; returns once Redis confirmed the subscription.

        Raises:
            BackplaneError: Redis did not confirm within the command timeout (e.g. it is
                down). The channel stays wanted and is subscribed when the connection is back.
        """
        self._ensure_running()
        await self._subscriber.subscribe(self._channel_key(channel), channel)

    async def unsubscribe(self, channel: str) -> None:
        """Stop receiving `channel`; nothing of it is yielded after this returns."""
        await self._subscriber.unsubscribe(self._channel_key(channel), channel)

    async def publish(self, channel: str, payload: bytes) -> None:
        """Publish `payload` on `channel`; publishes from one node go out in call order.

        Raises:
            BackplaneError: Redis refused it, or did not take it in time: at once when
                Redis refuses connections, within about twice `connect_timeout +
                command_timeout` when it hangs. A publish that timed out may still have
                been delivered.
        """
        self._ensure_running()
        await self._publisher.publish(self._channel_key(channel), payload)

    def messages(self) -> AsyncIterator[tuple[str, bytes]]:
        """Yield `(channel, payload)` for every message on a subscribed channel, in Redis order.

        Ends when the backplane is closed. Messages published while the subscriber
        connection is down are lost (Redis pub/sub keeps no history).

        Raises:
            RuntimeError: another consumer is already iterating.
        """
        return self._subscriber.messages()

    def on_reconnect(self, callback: Callable[[], None]) -> None:
        """Call `callback` each time the subscriber is connected again after losing Redis.

        Called once Redis confirmed the re-subscriptions (see `Backplane.on_reconnect`).
        """
        self._subscriber.on_reconnect(callback)

    # -- presence ----------------------------------------------------------------------------

    async def add_presence(self, room: str, member: str, identity: str) -> None:
        """Record `member` (a connection id starting with `node_id` and ".") in `room`.

        When Redis cannot be written the entry is kept locally (a WARNING is logged) and
        written as soon as Redis answers again.

        Raises:
            ValueError: `member` does not belong to this node.
        """
        self._ensure_running()
        await self._presence.add(room, member, identity)

    async def remove_presence(self, room: str, member: str) -> None:
        """Forget that `member` is in `room` (no error when it was not there).

        Only this node's members can be removed; another node's member is left alone (it
        was never this node's to remove). Like `add_presence`, kept locally and written
        later when Redis cannot be written.
        """
        self._ensure_running()
        await self._presence.remove(room, member)

    async def presence(self, room: str) -> dict[str, str]:
        """Members of `room` on every live node, as `{member: identity}`.

        This node's own members come from its local copy, so they are right even while
        Redis is catching up after losing them.

        Raises:
            BackplaneError: Redis could not be read.
        """
        self._ensure_running()
        return await self._presence.members(room)

    async def rooms(self) -> list[str]:
        """Rooms with presence recorded by any node (SCAN over the presence keys).

        Raises:
            BackplaneError: Redis could not be read.
        """
        self._ensure_running()
        return await self._presence.rooms()

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
        return await self._presence.heartbeat()

    def _restore_presence(self) -> None:
        self._tasks.spawn(self._presence.restore(), "restore-presence")
