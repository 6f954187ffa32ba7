"""The chat's messages, kept in any database SQLAlchemy's asyncio extension can reach.

SQLite is the default. Each SQLite connection is switched to WAL mode with a busy timeout,
so several server processes can share one database file: readers never wait for the
writer, and writers wait their turn instead of failing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import msgspec
from sqlalchemy import (
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    event,
    func,
    insert,
    select,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

__all__ = ["Message", "Snapshot", "Store", "utc_timestamp"]

logger = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 10_000

metadata = MetaData()
messages = Table(
    "messages",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("room", String(64), nullable=False),
    Column("user", String(32), nullable=False),
    Column("text", Text, nullable=False),
    Column("ts", String(32), nullable=False),
    Index("ix_messages_room_id", "room", "id"),
    # SQLite's AUTOINCREMENT: ids are never reused, even after the newest row is deleted.
    sqlite_autoincrement=True,
)


class Message(msgspec.Struct, frozen=True, tag="message", tag_field="type"):
    """One stored chat message; encodes to the wire form `{"type": "message", "id": ...}`."""

    id: int
    room: str
    user: str
    text: str
    ts: str


def utc_timestamp(moment: datetime | None = None) -> str:
    """`moment` (default: now) in UTC ISO 8601 with microseconds (`...09:31:12.123456+00:00`)."""
    moment = datetime.now(UTC) if moment is None else moment.astimezone(UTC)
    return moment.isoformat(timespec="microseconds")


class Store:
    """Adds messages and reads a room's history; ids are assigned by the database and only grow."""

    def __init__(self, url: str, **engine_options: Any) -> None:
        self.url = url
        self.engine: AsyncEngine = create_async_engine(url, **engine_options)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _configure_sqlite)
        # One writer at a time per process: the database serialises writers anyway, and
        # waiting here keeps pooled connections free for readers.
        self._write_lock = asyncio.Lock()

    async def start(self) -> None:
        """Create the schema when it is missing."""
        async with self.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        logger.info("chat store ready at %s", self.engine.url.render_as_string())

    async def close(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()

    @asynccontextmanager
    async def adding(self, room: str, user: str, text: str) -> AsyncIterator[Message]:
        """Insert a message and commit it when the block ends without an error.

        Inside the block the message has its id, but is not yet visible to readers. On SQLite
        the block holds the database's write lock, so whatever the block does (publish the
        message, say) happens in id order, across processes sharing the file. Keep it short.
        """
        async with self._write_lock, self.engine.begin() as conn:
            yield await self._insert(conn, room, user, text)

    async def add(self, room: str, user: str, text: str) -> Message:
        """Store a message and return it with its id and timestamp."""
        async with self.adding(room, user, text) as message:
            return message

    async def recent(self, room: str, limit: int) -> list[Message]:
        """The room's last `limit` messages, oldest first."""
        async with self.engine.connect() as conn:
            return await Snapshot(conn).recent(room, limit)

    async def since(self, room: str, after: int, limit: int) -> list[Message]:
        """The room's first `limit` messages whose id is greater than `after`, oldest first."""
        async with self.engine.connect() as conn:
            return await Snapshot(conn).since(room, after, limit)

    @asynccontextmanager
    async def exclusive(self) -> AsyncIterator[Snapshot]:
        """Read while no message is being added: no add is under way while the block runs.

        On SQLite the block holds the database's write lock (`BEGIN IMMEDIATE`), so this
        holds across every process sharing the file: a message is either committed before
        the block (and visible to it) or added after it. Elsewhere it holds for this
        process only. Adds wait for the block, so keep it short and never wait on a client.
        """
        async with self._write_lock, self.engine.connect() as conn:
            if self.engine.dialect.name == "sqlite":
                await conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield Snapshot(conn)
            finally:
                await conn.rollback()

    async def rooms(self) -> list[tuple[str, int]]:
        """Every room that has messages, with its message count, sorted by name."""
        query = select(messages.c.room, func.count()).group_by(messages.c.room).order_by(messages.c.room)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [(room, count) for room, count in rows]

    async def _insert(self, conn: AsyncConnection, room: str, user: str, text: str) -> Message:
        ts = utc_timestamp()
        result = await conn.execute(insert(messages).values(room=room, user=user, text=text, ts=ts))
        (message_id,) = result.inserted_primary_key or (None,)
        if message_id is None:  # pragma: no cover - every supported dialect reports it
            raise RuntimeError("the database did not report the new message's id")
        return Message(id=int(message_id), room=room, user=user, text=text, ts=ts)


class Snapshot:
    """Reads a room's history on one connection (see `Store.exclusive`)."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def recent(self, room: str, limit: int) -> list[Message]:
        """The room's last `limit` messages, oldest first."""
        query = select(messages).where(messages.c.room == room).order_by(messages.c.id.desc()).limit(limit)
        rows = (await self._conn.execute(query)).all()
        return [_message(row) for row in reversed(rows)]

    async def since(self, room: str, after: int, limit: int) -> list[Message]:
        """The room's first `limit` messages whose id is greater than `after`, oldest first."""
        query = (
            select(messages)
            .where(messages.c.room == room, messages.c.id > after)
            .order_by(messages.c.id)
            .limit(limit)
        )
        rows = (await self._conn.execute(query)).all()
        return [_message(row) for row in rows]


def _message(row: Any) -> Message:
    return Message(id=row.id, room=row.room, user=row.user, text=row.text, ts=row.ts)


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()
