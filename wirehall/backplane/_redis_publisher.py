"""The Redis backplane's publisher: a batching outbox on one connection of its own.

`publish()` queues a packed PUBLISH with the time it was queued and waits for its
reply; the loop sends what is queued in order, many commands per write, and reads one
reply per command with `RespReader`. A publish queued longer than the call timeout fails
without being sent; a failed write fails the rest of its batch and replaces the connection.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from wirehall._tasks import Supervisor
from wirehall.backplane._redis_io import (
    FAILURES,
    AbstractConnection,
    Target,
    discard,
    make_connection,
    reason,
    stream_of,
)
from wirehall.backplane._resp import RespError, RespReader, pack_publish
from wirehall.errors import BackplaneError

__all__ = ["Publisher"]

# The parts of the Redis backplane log under the one name it has always used.
logger = logging.getLogger("wirehall.backplane.redis")

_PUBLISH_BATCH: Final = 1000

# A queued publish: the packed command, when it was queued, and who waits for its reply.
Item = tuple[bytes, float, asyncio.Future[None]]


class Publisher:
    """Publishes in call order on one connection; `run()` is its loop (supervised by the facade)."""

    def __init__(self, target: Target, node_id: str, tasks: Supervisor) -> None:
        self._target = target
        self._pool = target.pool(f"wirehall-pub-{node_id}")
        self._tasks = tasks
        self._outbox: list[Item] = []
        self._ready = asyncio.Event()
        self._connection: tuple[AbstractConnection, RespReader] | None = None

    async def publish(self, key: bytes, payload: bytes) -> None:
        """Publish `payload` on the Redis channel `key`; returns once Redis took it."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._outbox.append((pack_publish(key, payload), loop.time(), future))
        self._ready.set()
        await future

    async def run(self) -> None:
        """Send what is queued, batch after batch, for ever."""
        loop = asyncio.get_running_loop()
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._outbox:
                batch = self._outbox[:_PUBLISH_BATCH]
                del self._outbox[:_PUBLISH_BATCH]
                batch = self._fresh(batch, loop.time() - self._target.call_timeout)
                if not batch:
                    continue
                try:
                    await self.send(batch)
                finally:  # only a bug leaves any unsettled: then the loop restarts
                    _settle(batch, "the Redis backplane's publisher failed", None)

    def _fresh(self, batch: list[Item], too_old: float) -> list[Item]:
        """The items of `batch` still worth sending; those queued before `too_old` fail."""
        expired = [item for item in batch if item[1] < too_old]
        if expired:
            _settle(
                expired,
                f"Redis at {self._target.safe_url} did not take a publish within "
                f"{self._target.call_timeout:g} s",
                None,
            )
        return [item for item in batch if item[1] >= too_old and not item[2].done()]

    async def send(self, batch: list[Item]) -> None:
        """Write `batch` in one go and settle each publish with its reply."""
        done = 0
        try:
            async with asyncio.timeout(self._target.call_timeout):
                connection, reader = await self._open()
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
        except FAILURES as exc:
            self._drop()
            _settle(
                batch[done:], f"could not publish to Redis at {self._target.safe_url} ({reason(exc)})", exc
            )
        except asyncio.CancelledError:
            self._drop()
            _settle(batch[done:], "the Redis backplane was closed", None)
            raise
        except Exception as exc:
            logger.exception("unexpected error publishing %d messages to Redis", len(batch))
            self._drop()
            _settle(batch[done:], f"could not publish to Redis: {exc!r}", exc)

    async def _open(self) -> tuple[AbstractConnection, RespReader]:
        current = self._connection
        if current is not None and current[0].is_connected and not current[1].is_broken:
            return current
        self._drop()  # stale (e.g. Redis restarted): never send into it
        connection = make_connection(self._pool)
        try:
            await connection.connect()  # type: ignore[no-untyped-call]  # redis-py
            current = connection, RespReader(stream_of(connection))
        except BaseException:
            await discard(connection)
            raise
        self._connection = current
        return current

    def _drop(self) -> None:
        if self._connection is not None:
            connection = self._connection[0]
            self._connection = None
            self._tasks.spawn(discard(connection), "discard")

    async def close(self) -> None:
        """Fail what is still queued and close the connection (after the loop stopped)."""
        _settle(self._outbox, "the Redis backplane was closed", None)
        self._outbox.clear()
        if self._connection is not None:
            connection = self._connection[0]
            self._connection = None
            await discard(connection)
        await self._pool.aclose()


def _settle(batch: list[Item], message: str, cause: BaseException | None) -> None:
    """Fail every publish of `batch` not settled yet with a `BackplaneError(message)`."""
    for _, _, future in batch:
        if not future.done():
            error = BackplaneError(message)
            error.__cause__ = cause
            future.set_exception(error)
