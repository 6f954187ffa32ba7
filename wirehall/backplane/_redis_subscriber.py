"""The Redis backplane's subscriber: one pub/sub connection and what arrives on it.

It owns the wanted channels and those Redis confirmed on the current connection, sends
(UN)SUBSCRIBE one at a time and waits for each confirmation, reads the connection with
`RespReader` (probing silence with PING), and replaces a lost connection with backoff.
After a reconnection the `on_reconnect` callbacks run on the answer to the PING sent
after the re-subscriptions: Redis answers it once it processed them all, so from then on
nothing published is missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

from wirehall._tasks import Backoff
from wirehall.backplane._redis_io import (
    FAILURES,
    AbstractConnection,
    Target,
    discard,
    make_connection,
    reason,
    stream_of,
)
from wirehall.backplane._resp import Incomplete, RespError, RespReader
from wirehall.errors import BackplaneError

__all__ = ["Subscriber"]

# The parts of the Redis backplane log under the one name it has always used.
logger = logging.getLogger("wirehall.backplane.redis")

_SUBSCRIBE_CHUNK: Final = 500


class Subscriber:
    """The pub/sub side of one node: subscriptions, the message inbox and reconnection.

    `resubscribed` is called when a new connection has been installed after a loss (before
    Redis confirmed the re-subscriptions); the `on_reconnect` callbacks run once it has.
    """

    def __init__(self, target: Target, node_id: str, *, resubscribed: Callable[[], None]) -> None:
        self._target = target
        self._pool = target.pool(f"wirehall-sub-{node_id}")
        make_connection(self._pool)  # rejects options redis-py does not know now, not later
        self._resubscribed = resubscribed
        self._backoff = Backoff(0.1, 5.0)
        self._closed = False
        # `_channels` is what we want (prefixed name -> name), `_confirmed` what Redis
        # confirmed on the current connection. Requests are serialised by `_lock`, each
        # waiting for its own confirmation, so a confirmation always belongs to the
        # request waiting for it.
        self._channels: dict[bytes, str] = {}
        self._confirmed: set[bytes] = set()
        # (kind, key) -> one entry per command sent and not yet confirmed, oldest first; None
        # stands for a command nobody waits for (the re-subscription after a reconnect).
        self._waiters: dict[tuple[bytes, bytes], deque[asyncio.Future[bool] | None]] = {}
        self._lock = asyncio.Lock()
        self._connection: AbstractConnection | None = None
        self._ready = asyncio.Event()
        self._inbox: deque[tuple[bytes, str, bytes]] = deque()
        self._inbox_ready = asyncio.Event()
        self._consuming = False
        self._callbacks: list[Callable[[], None]] = []
        self._announce_reconnect = False

    @property
    def confirmed(self) -> int:
        """How many subscriptions Redis has confirmed on the current connection."""
        return len(self._confirmed)

    @property
    def queued(self) -> int:
        """How many messages arrived and wait for `messages()` to yield them."""
        return len(self._inbox)

    @property
    def has_consumer(self) -> bool:
        """Whether `messages()` is being iterated."""
        return self._consuming

    # -- channels ----------------------------------------------------------------------------

    async def subscribe(self, key: bytes, channel: str) -> None:
        """Want `key` (named `channel`); returns once Redis confirmed it."""
        self._channels[key] = channel
        try:
            async with asyncio.timeout(self._target.call_timeout):
                while key in self._channels and key not in self._confirmed:
                    if not await self._request(b"subscribe", key):
                        await self._ready.wait()
                    if self._closed:
                        raise BackplaneError("the Redis backplane is closed")
        except TimeoutError as exc:
            raise BackplaneError(
                f"Redis at {self._target.safe_url} did not confirm the subscription to "
                f"{channel!r} within {self._target.call_timeout:g} s; it is subscribed as soon as "
                "the connection is back"
            ) from exc

    async def unsubscribe(self, key: bytes, channel: str) -> None:
        """Stop wanting `key`; nothing of it is yielded by `messages()` from now on."""
        if self._channels.pop(key, None) is None:
            return
        self._confirmed.discard(key)
        if self._closed or self._connection is None:
            return  # the next connection will not subscribe it
        try:
            async with asyncio.timeout(self._target.call_timeout):
                await self._request(b"unsubscribe", key)
        except TimeoutError:
            logger.warning(
                "Redis at %s did not confirm unsubscribing %r within %g s",
                self._target.safe_url,
                channel,
                self._target.call_timeout,
            )

    async def messages(self) -> AsyncIterator[tuple[str, bytes]]:
        """`(channel, payload)` of subscribed channels in Redis order, until `end()`."""
        if self._consuming:
            raise RuntimeError("RedisBackplane.messages() already has a consumer")
        self._consuming = True
        inbox, channels = self._inbox, self._channels
        try:
            while not self._closed:
                if inbox:
                    key, name, payload = inbox.popleft()
                    if key in channels:  # not unsubscribed since it arrived
                        yield name, payload
                else:
                    self._inbox_ready.clear()
                    await self._inbox_ready.wait()
        finally:
            self._consuming = False

    def on_reconnect(self, callback: Callable[[], None]) -> None:
        """Call `callback` each time Redis confirmed the re-subscriptions after a loss."""
        self._callbacks.append(callback)

    async def _request(self, kind: bytes, key: bytes) -> bool:
        """Send (UN)SUBSCRIBE for `key` and wait for its confirmation.

        Returns False when there is no working connection (the caller may wait for one).
        """
        async with self._lock:
            connection = self._connection
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
            except FAILURES as exc:
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

    # -- the connection ----------------------------------------------------------------------

    async def connect(self) -> AbstractConnection:
        """Open a new subscriber connection (not yet subscribed to anything)."""
        connection = make_connection(self._pool)
        try:
            async with asyncio.timeout(self._target.call_timeout):
                await connection.connect()  # type: ignore[no-untyped-call]  # redis-py
            stream_of(connection)  # an incompatible redis-py fails here, at start()
        except FAILURES as exc:
            await discard(connection)
            raise BackplaneError(
                f"could not connect to Redis at {self._target.safe_url} ({reason(exc)})"
            ) from exc
        except BackplaneError:
            await discard(connection)
            raise
        return connection

    async def install(self, connection: AbstractConnection) -> int:
        """Subscribe every wanted channel on a new connection and make it the current one."""
        try:
            async with asyncio.timeout(self._target.call_timeout), self._lock:
                self._wake_waiters()  # anything still waiting belongs to a dead connection
                keys = list(self._channels)
                for key in keys:
                    self._waiters.setdefault((b"subscribe", key), deque()).append(None)
                for start in range(0, len(keys), _SUBSCRIBE_CHUNK):
                    await connection.send_command("SUBSCRIBE", *keys[start : start + _SUBSCRIBE_CHUNK])
                await connection.send_command("PING")
                self._connection = connection
                self._ready.set()
        except FAILURES as exc:
            self._wake_waiters()
            await discard(connection)
            raise BackplaneError(
                f"could not subscribe at Redis at {self._target.safe_url} ({reason(exc)})"
            ) from exc
        return len(keys)

    async def release(self, connection: AbstractConnection) -> None:
        """Stop using `connection` (if it is the current one) and close it."""
        self._detach(connection)
        await discard(connection)

    def end(self) -> None:
        """Closing: `messages()` ends, and `subscribe()` calls waiting for a connection raise."""
        self._closed = True
        self._inbox.clear()
        self._inbox_ready.set()

    async def close(self) -> None:
        """Closing, after the reading loop stopped: close the connection and the pool."""
        self.end()
        if self._connection is not None:
            await self.release(self._connection)
        self._ready.set()  # wakes subscribe() calls waiting for a connection

    async def aclose_pool(self) -> None:
        """Release the pool's resources (after `close()`)."""
        await self._pool.aclose()

    def _detach(self, connection: AbstractConnection) -> None:
        """Forget `connection` as the current one and wake everyone waiting on it."""
        if self._connection is not connection:
            return
        self._connection = None
        self._ready.clear()
        self._confirmed.clear()
        self._wake_waiters()

    def _wake_waiters(self) -> None:
        """Tell every (un)subscribe request still waiting that its connection is gone."""
        waiting, self._waiters = self._waiters, {}
        for waiters in waiting.values():
            for future in waiters:
                if future is not None and not future.done():
                    future.set_result(False)

    # -- reading -----------------------------------------------------------------------------

    async def run(self, connection: AbstractConnection | None) -> None:
        """Read `connection` (or a new one) for ever, replacing it whenever it is lost."""
        loop = asyncio.get_running_loop()
        self._backoff.reset()
        if connection is None:  # restarted: the old loop's connection cannot be trusted
            lost_at = loop.time()
            if self._connection is not None:
                await self.release(self._connection)
            connection, count = await self._reconnect()
            self._reconnected(loop.time() - lost_at, count)
        while True:
            since = loop.time()
            try:
                await self._read(connection)
            except FAILURES as exc:
                logger.warning(
                    "lost the Redis subscriber connection to %s (%s); reconnecting",
                    self._target.safe_url,
                    reason(exc),
                )
            except Exception:
                logger.exception(
                    "unexpected error reading from Redis at %s; reconnecting", self._target.safe_url
                )
            finally:
                await self.release(connection)
            lost_at = loop.time()
            if lost_at - since >= self._backoff.maximum:
                self._backoff.reset()  # it had been working for a while: retry at once
            connection, count = await self._reconnect()
            self._reconnected(loop.time() - lost_at, count)

    async def _read(self, connection: AbstractConnection) -> None:
        reader = RespReader(stream_of(connection))
        interval = self._target.settings.ping_interval
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

    def _dispatch(self, response: Any) -> None:
        if not isinstance(response, list):  # PONG to a PING sent before anything was subscribed
            self._pong()
            return
        kind = response[0]
        if kind == b"message":
            key = response[1]
            name = self._channels.get(key)
            if name is not None:
                self._inbox.append((key, name, response[2]))
                self._inbox_ready.set()
        elif kind in (b"subscribe", b"unsubscribe"):
            self._confirm(kind, response[1])
        elif kind == b"pong":
            self._pong()
        else:
            logger.debug("ignored unexpected pub/sub reply %r", response[:2])

    def _confirm(self, kind: bytes, key: bytes | None) -> None:
        if key is None:  # UNSUBSCRIBE of nothing
            return
        if kind == b"subscribe":
            if key in self._channels:
                self._confirmed.add(key)
        else:
            self._confirmed.discard(key)
        # Replies come in the order the commands were sent: each one settles the oldest.
        waiters = self._waiters.get((kind, key))
        if not waiters:
            return
        future = waiters.popleft()
        if not waiters:
            del self._waiters[(kind, key)]
        if future is not None and not future.done():
            future.set_result(True)

    def _pong(self) -> None:
        if not self._announce_reconnect:
            return
        self._announce_reconnect = False
        for callback in list(self._callbacks):
            try:
                callback()
            except Exception:
                logger.exception("a reconnect callback of the Redis backplane failed")

    # -- reconnecting ------------------------------------------------------------------------

    def _reconnected(self, after: float, channels: int) -> None:
        logger.info(
            "reconnected to Redis at %s after %.1f s; re-subscribed %d channels",
            self._target.safe_url,
            after,
            channels,
        )
        self._resubscribed()
        # The PING sent after the re-subscriptions is answered once Redis has processed them
        # all: from its answer on, nothing published is missed, so that is when we say so.
        self._announce_reconnect = True

    async def _reconnect(self) -> tuple[AbstractConnection, int]:
        """Retry with exponential backoff until a new connection is installed."""
        attempt = 0
        delay = self._backoff.next()
        while True:
            await asyncio.sleep(delay)
            attempt += 1
            try:
                connection = await self.connect()
                count = await self.install(connection)
            except BackplaneError as exc:
                cause: object = exc.__cause__ or exc
            except Exception as exc:
                logger.exception("unexpected error reconnecting to Redis")
                cause = repr(exc)
            else:
                return connection, count
            delay = self._backoff.next()
            logger.warning(
                "Redis at %s still unreachable (attempt %d: %s); next try in %.1f s",
                self._target.safe_url,
                attempt,
                cause,
                delay,
            )
