"""What the parts of the Redis backplane share: redis-py, its failures, and how a call is bounded.

This is the one module that imports redis-py; without it installed, importing it (and so
`wirehall.backplane.redis`) raises `MissingDependencyError` naming the extra to install.
The parts log under one name, `wirehall.backplane.redis`, as the backplane always has:
users filter its logs by that name.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Any, Final, TypeVar

from wirehall.backplane._redis_settings import RedisSettings
from wirehall.backplane._resp import RespError
from wirehall.errors import BackplaneError, MissingDependencyError

try:
    import redis.asyncio as aioredis
    from redis.asyncio.connection import AbstractConnection, BlockingConnectionPool, ConnectionPool
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import RedisError
    from redis.exceptions import TimeoutError as RedisTimeoutError
except ImportError as exc:  # pragma: no cover - depends on what is installed
    raise MissingDependencyError("redis", extra="redis") from exc

__all__ = [
    "FAILURES",
    "AbstractConnection",
    "BlockingConnectionPool",
    "ConnectionPool",
    "Target",
    "aioredis",
    "discard",
    "make_connection",
    "reason",
    "stream_of",
    "texts",
]

T = TypeVar("T")

# Anything a broken or unreachable Redis can raise: redis-py's errors, socket errors and
# timeouts (TimeoutError is an OSError), unparsable or error replies.
FAILURES: Final = (RedisError, OSError, RespError)


class Target:
    """The Redis server the backplane talks to: its URL (password hidden) and time limits."""

    def __init__(self, settings: RedisSettings) -> None:
        self.settings = settings
        self.safe_url = settings.safe_url
        # A call may have to open a connection before it runs.
        self.call_timeout = settings.connect_timeout + settings.command_timeout

    def pool(self, client_name: str) -> ConnectionPool:
        """A factory of dedicated connections (RESP2, raw bytes, no retry of its own)."""
        return ConnectionPool.from_url(
            self.settings.url, retry=Retry(NoBackoff(), 0), client_name=client_name, **self.options()
        )

    def shared_pool(self, client_name: str, size: int) -> BlockingConnectionPool:
        """The pool of the ordinary commands (presence, scripts): at most `size` connections."""
        return BlockingConnectionPool.from_url(
            self.settings.url,
            decode_responses=False,
            # One immediate retry on a fresh connection: a pooled connection may be
            # stale after a Redis restart. Nothing else retries, so failures are fast.
            retry=Retry(NoBackoff(), 1),
            client_name=client_name,
            max_connections=size,
            timeout=self.settings.command_timeout,
            **self.options(),
        )

    def options(self) -> dict[str, Any]:
        """The redis-py connection options every connection of the backplane uses."""
        return {
            "protocol": 2,
            "socket_timeout": self.settings.command_timeout,
            "socket_connect_timeout": self.settings.connect_timeout,
            "health_check_interval": 0,
        }

    async def call(self, action: str, call: Awaitable[T]) -> T:
        """Await `call` within the call timeout; a failure becomes a `BackplaneError` naming `action`."""
        try:
            async with asyncio.timeout(self.call_timeout):
                return await call
        except FAILURES as exc:
            raise BackplaneError(
                f"could not {action}: Redis at {self.safe_url} failed ({reason(exc)})"
            ) from exc


def make_connection(pool: ConnectionPool) -> AbstractConnection:
    """A new, unconnected connection of `pool` (redis-py leaves make_connection unannotated)."""
    connection: AbstractConnection = pool.make_connection()  # type: ignore[no-untyped-call]  # redis-py
    return connection


async def discard(connection: AbstractConnection) -> None:
    """Close `connection` without waiting on the peer; never raises for a broken Redis."""
    with contextlib.suppress(*FAILURES):
        await connection.disconnect(nowait=True)


def stream_of(connection: AbstractConnection) -> asyncio.StreamReader:
    """The socket reader under a connected redis-py connection, read with RespReader."""
    stream = getattr(connection, "_reader", None)
    if not isinstance(stream, asyncio.StreamReader):
        raise BackplaneError(
            f"redis-py {getattr(aioredis, '__version__', '?')} keeps no asyncio StreamReader "
            "at Connection._reader, which the Redis backplane reads; it was tested with "
            "redis-py 5 to 8"
        )
    return stream


def reason(error: BaseException) -> str:
    """What went wrong, in a few words, for messages and logs."""
    if isinstance(error, TimeoutError | RedisTimeoutError):
        return f"timed out: {error}" if str(error) else "timed out"
    return str(error) or repr(error)


def texts(replies: list[bytes]) -> list[str]:
    """Redis bulk strings as text."""
    return [reply.decode() for reply in replies]
