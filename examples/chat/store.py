"""The chat's messages, kept in SQLite (the default) or PostgreSQL, through SQLAlchemy's asyncio extension.

Each room has a row in `rooms` holding how many messages it has (`last_seq`) and its newest
message id. Adding a message first bumps that row, which locks it until the transaction
ends: posts to one room take turns, posts to different rooms do not wait for each other
(on PostgreSQL; SQLite has one writer at a time anyway, for a few milliseconds). So within
a room, `seq` counts 1, 2, 3, ... with no gap, and ids grow in the order the messages commit,
which is what lets a client resume with `since=<last id seen>` and lose nothing, and what
lets the WebSocket service put a room's messages in order on every process.

Each SQLite connection is switched to WAL mode with a busy timeout, so several server
processes can share one database file: readers never wait for the writer, and writers wait
their turn instead of failing.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import msgspec
from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    event,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

__all__ = ["History", "Message", "RoomStats", "Store", "utc_timestamp"]

logger = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 10_000
POSTGRES_POOL_SIZE = 20
_SCHEMA_ATTEMPTS = 5  # tries at creating the schema while other processes create it too

# SQLite's AUTOINCREMENT needs exactly INTEGER PRIMARY KEY; elsewhere ids are 64-bit.
_ID = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData()
messages = Table(
    "messages",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("room", String(64), nullable=False),
    Column("seq", _ID, nullable=False),  # the message's place in its room: 1, 2, 3, ...
    Column("user", String(32), nullable=False),
    Column("text", Text, nullable=False),
    Column("ts", String(32), nullable=False),
    Index("ix_messages_room_id", "room", "id"),
    Index("ux_messages_room_seq", "room", "seq", unique=True),
    # SQLite's AUTOINCREMENT: ids are never reused, even after the newest row is deleted.
    sqlite_autoincrement=True,
)
rooms = Table(
    "rooms",
    metadata,
    Column("room", String(64), primary_key=True),
    Column("last_seq", _ID, nullable=False),  # = how many messages the room has
    Column("last_id", _ID, nullable=False),
    Index("ix_rooms_last_id", "last_id"),
)


class Message(msgspec.Struct, frozen=True, tag="message", tag_field="type"):
    """One stored chat message; encodes to the wire form `{"type": "message", "id": ...}`."""

    id: int
    room: str
    user: str
    text: str
    ts: str


# Adding a message. The room's row is bumped first: that locks it until the commit, so a
# room's posts take turns and its ids grow in the order they commit.
_BUMP_ROOM = text(
    "INSERT INTO rooms (room, last_seq, last_id) VALUES (:room, 1, 0) "
    "ON CONFLICT (room) DO UPDATE SET last_seq = rooms.last_seq + 1 RETURNING last_seq"
)
_INSERT_MESSAGE = text(
    'INSERT INTO messages (room, seq, "user", text, ts) VALUES (:room, :seq, :user, :text, :ts) RETURNING id'
)
_SET_LAST_ID = text("UPDATE rooms SET last_id = :id WHERE room = :room")
# PostgreSQL, in one round trip: the id is drawn while the row is locked (in the update, or
# by the insert that creates the row), never before, so ids still follow the commit order.
# `:id_seq` is the id column's own sequence, as the database names it (see `Store.start`).
_PG_ADD = text(
    "WITH bumped AS ("
    " INSERT INTO rooms (room, last_seq, last_id) VALUES (:room, 1, nextval(CAST(:id_seq AS regclass)))"
    " ON CONFLICT (room) DO UPDATE SET last_seq = rooms.last_seq + 1,"
    " last_id = nextval(CAST(:id_seq AS regclass))"
    " RETURNING last_seq, last_id)"
    ' INSERT INTO messages (id, room, seq, "user", text, ts)'
    " SELECT last_id, :room, last_seq, :user, :text, :ts FROM bumped RETURNING id, seq"
)
# Schema creation on PostgreSQL takes turns between processes (a fixed advisory lock key,
# released at the commit), and then reads the name of the id column's sequence.
_PG_SCHEMA_LOCK = text("SELECT pg_advisory_xact_lock(7771001017)")
_PG_ID_SEQUENCE = text("SELECT pg_get_serial_sequence('messages', 'id')")

# A joiner's history: the room's count (the row without an id) and its messages.
_HISTORY_COLUMNS = 'seq, id, "user", text, ts'
_HISTORY_RECENT = text(
    'SELECT last_seq AS seq, NULL AS id, NULL AS "user", NULL AS text, NULL AS ts FROM rooms WHERE room = :room '
    f"UNION ALL SELECT * FROM (SELECT {_HISTORY_COLUMNS} FROM messages WHERE room = :room "
    "ORDER BY id DESC LIMIT :limit) AS recent"
)
_HISTORY_SINCE = text(
    'SELECT last_seq AS seq, NULL AS id, NULL AS "user", NULL AS text, NULL AS ts FROM rooms WHERE room = :room '
    f"UNION ALL SELECT * FROM (SELECT {_HISTORY_COLUMNS} FROM messages WHERE room = :room AND id > :since "
    "ORDER BY id LIMIT :limit) AS after_since"
)


class History(msgspec.Struct, frozen=True):
    """Messages read for a client, and the room's position they bring it to.

    `position` is the `seq` of the room's newest message that the client has once it has
    `messages` (or that it did not ask for): live messages from `position + 1` on follow.
    """

    messages: list[Message]
    position: int


class RoomStats(msgspec.Struct, frozen=True):
    """A room's message count and newest message id."""

    room: str
    messages: int
    last_id: int


def utc_timestamp(moment: datetime | None = None) -> str:
    """`moment` (default: now) in UTC ISO 8601 with microseconds (`...09:31:12.123456+00:00`)."""
    moment = datetime.now(UTC) if moment is None else moment.astimezone(UTC)
    return moment.isoformat(timespec="microseconds")


class Store:
    """Adds messages and reads rooms' histories; ids are assigned by the database and only grow."""

    def __init__(self, url: str, **engine_options: Any) -> None:
        self.url = url
        if make_url(url).get_backend_name() == "postgresql":
            # Enough pooled connections for a busy process: opening one per burst costs the
            # database more than the post itself.
            engine_options.setdefault("pool_size", POSTGRES_POOL_SIZE)
            engine_options.setdefault("max_overflow", POSTGRES_POOL_SIZE)
        self.engine: AsyncEngine = create_async_engine(url, **engine_options)
        self.dialect = self.engine.dialect.name
        self._id_sequence = "messages_id_seq"  # PostgreSQL: read again by `start`
        if self.dialect == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _configure_sqlite)
        elif self.dialect != "postgresql":
            logger.warning("the chat store is tested on SQLite and PostgreSQL, not %s", self.dialect)

    async def start(self) -> None:
        """Create the schema when it is missing (and number the messages of an older schema)."""
        # Several processes may start at once on a new database (`--workers`, several
        # machines). On PostgreSQL they take turns on an advisory lock held until the commit;
        # on SQLite one creates a table and the others' CREATE fails because it appeared
        # meanwhile. Each try that fails so found tables another process created: look again.
        for attempt in range(1, _SCHEMA_ATTEMPTS + 1):
            try:
                async with self.engine.begin() as conn:
                    if self.dialect == "postgresql":
                        await conn.execute(_PG_SCHEMA_LOCK)
                    await conn.run_sync(_create_or_upgrade)
                    if self.dialect == "postgresql":
                        # The serial column's sequence is `messages_id_seq` unless a process
                        # racing an older version renamed it: ask the database, never assume.
                        self._id_sequence = (await conn.execute(_PG_ID_SEQUENCE)).scalar_one()
            except DBAPIError as exc:
                if attempt == _SCHEMA_ATTEMPTS:
                    raise
                logger.info(
                    "the chat schema changed while it was being created (%s); looking again", exc.orig
                )
            else:
                break
        logger.info("chat store ready at %s", self.engine.url.render_as_string())

    async def close(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()

    async def add(self, room: str, user: str, text: str) -> Message:
        """Store a message and return it with its id and timestamp (see `add_numbered`)."""
        message, _ = await self.add_numbered(room, user, text)
        return message

    async def add_numbered(self, room: str, user: str, text: str) -> tuple[Message, int]:
        """Store a message; returns it (with its id and timestamp) and its `seq` in the room.

        Commits before returning: the message is stored once this returns, and not at all
        when it raises. Posts to the same room take turns on the room's row, from the first
        statement to the commit; nothing else is awaited meanwhile. On PostgreSQL that is one
        statement (the room's bump, a fresh id taken while the row is locked, the insert),
        so the row is locked for one round trip and the commit.

        A pooled connection that the database cut meanwhile (it restarted while this
        process was idle) fails the first statement: the post is tried once more on a fresh
        connection. A failure at the commit is never retried (the commit may have happened).
        """
        ts = utc_timestamp()
        values = {"room": room, "user": user, "text": text, "ts": ts}
        for attempt in (1, 2):
            committing = False
            try:
                async with self.engine.begin() as conn:
                    if self.dialect == "postgresql":
                        pg_values = {**values, "id_seq": self._id_sequence}
                        message_id, seq = (await conn.execute(_PG_ADD, pg_values)).one()
                    else:
                        seq = (await conn.execute(_BUMP_ROOM, values)).scalar_one()
                        message_id = (
                            await conn.execute(_INSERT_MESSAGE, {**values, "seq": seq})
                        ).scalar_one()
                        await conn.execute(_SET_LAST_ID, {"room": room, "id": message_id})
                    committing = True
            except DBAPIError as exc:
                if committing:
                    raise
                _again_after_cut(exc, attempt, "posting")
                continue
            return Message(id=int(message_id), room=room, user=user, text=text, ts=ts), int(seq)
        raise AssertionError("unreachable: the second attempt returns or raises")

    async def _read(self, statement: Any, values: dict[str, Any] | None = None) -> list[Any]:
        """The rows of one read; read again once on a fresh connection when the pooled one
        was cut (the database restarted while this process was idle)."""
        for attempt in (1, 2):
            try:
                async with self.engine.connect() as conn:
                    return list((await conn.execute(statement, values or {})).all())
            except DBAPIError as exc:
                _again_after_cut(exc, attempt, "reading")
        raise AssertionError("unreachable: the second attempt returns or raises")

    async def recent(self, room: str, limit: int) -> list[Message]:
        """The room's last `limit` messages, oldest first."""
        query = select(messages).where(messages.c.room == room).order_by(messages.c.id.desc()).limit(limit)
        return [_message(row) for row in reversed(await self._read(query))]

    async def since(self, room: str, after: int, limit: int) -> list[Message]:
        """The room's first `limit` messages whose id is greater than `after`, oldest first."""
        query = (
            select(messages)
            .where(messages.c.room == room, messages.c.id > after)
            .order_by(messages.c.id)
            .limit(limit)
        )
        return [_message(row) for row in await self._read(query)]

    async def history(self, room: str, since: int | None, limit: int) -> History:
        """What a joining client is sent: the last `limit` messages, or the first `limit` after id `since`.

        `position` is the room's count as of the read (or the newest message's `seq`).
        One statement reads both (a consistent snapshot, one round trip): the room's count
        comes as the row without an id.
        """
        if since is None:
            statement, values = _HISTORY_RECENT, {"room": room, "limit": limit}
        else:
            statement, values = _HISTORY_SINCE, {"room": room, "since": since, "limit": limit}
        rows = await self._read(statement, values)
        position = 0
        found: list[tuple[int, Message]] = []
        for seq, message_id, user, text_, ts in rows:
            if message_id is None:
                position = max(position, int(seq))
            else:
                found.append(
                    (int(message_id), Message(id=int(message_id), room=room, user=user, text=text_, ts=ts))
                )
                position = max(position, int(seq))
        found.sort(key=lambda item: item[0])
        return History(messages=[message for _, message in found], position=position)

    async def replay(self, room: str, after: int, limit: int) -> list[tuple[int, Message]]:
        """The room's messages whose `seq` is greater than `after`, as `(seq, message)`, oldest first."""
        query = (
            select(messages)
            .where(messages.c.room == room, messages.c.seq > after)
            .order_by(messages.c.seq)
            .limit(limit)
        )
        return [(row.seq, _message(row)) for row in await self._read(query)]

    async def latest_rooms(self, limit: int) -> list[RoomStats]:
        """The `limit` rooms with the newest messages, newest first."""
        query = select(rooms).order_by(rooms.c.last_id.desc()).limit(limit)
        return [RoomStats(row.room, row.last_seq, row.last_id) for row in await self._read(query)]

    async def room_stats(self, names: list[str]) -> dict[str, RoomStats]:
        """Message count and newest id of each named room that has messages."""
        if not names:
            return {}
        query = select(rooms).where(rooms.c.room.in_(names))
        return {row.room: RoomStats(row.room, row.last_seq, row.last_id) for row in await self._read(query)}


def _again_after_cut(exc: DBAPIError, attempt: int, doing: str) -> None:
    """Return when `exc` says the pooled connection was cut (the database restarted while this
    process was idle) on a first attempt, so the caller tries once more on a fresh one; else
    raise `exc`."""
    if attempt > 1 or not exc.connection_invalidated:
        raise exc
    logger.info("the database cut the connection (%s); %s again on a fresh one", exc.orig, doing)


def _create_or_upgrade(sync_conn: Any) -> None:
    inspector = inspect(sync_conn)
    if inspector.has_table("messages") and "seq" not in {
        c["name"] for c in inspector.get_columns("messages")
    }:
        # A database of an earlier version: number each room's messages in id order.
        logger.info("numbering the messages of an older chat database (adding messages.seq)")
        sync_conn.execute(text("ALTER TABLE messages ADD COLUMN seq BIGINT"))
        sync_conn.execute(
            text(
                "UPDATE messages SET seq = (SELECT COUNT(*) FROM messages AS m "
                "WHERE m.room = messages.room AND m.id <= messages.id)"
            )
        )
        metadata.create_all(sync_conn)
        # create_all adds only missing tables: the existing one gets its new index here
        for index in messages.indexes:
            index.create(sync_conn, checkfirst=True)
        sync_conn.execute(
            text(
                "INSERT INTO rooms (room, last_seq, last_id) "
                "SELECT room, COUNT(*), MAX(id) FROM messages GROUP BY room"
            )
        )
        return
    metadata.create_all(sync_conn)


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
