"""The chat's message store (examples/chat/store.py), on a temporary SQLite file and on PostgreSQL."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, event, inspect, update
from sqlalchemy.exc import IntegrityError

from examples.chat.store import History, Message, RoomStats, Store, messages, rooms, utc_timestamp

TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00")
STILL_BLOCKED = 0.3  # seconds a waiting writer is given to show that it is still waiting


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database: a temporary SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "chat.db")
    url: str = request.getfixturevalue("postgres_database_url")
    return url


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    store = Store(database_url)
    await store.start()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def second_store(store: Store) -> AsyncIterator[Store]:
    """Another engine on the same database, as another server process would have."""
    other = Store(store.url)
    await other.start()
    try:
        yield other
    finally:
        await other.close()


async def seqs(store: Store, room: str) -> list[int]:
    return [seq for seq, _ in await store.replay(room, 0, 10_000)]


def test_timestamp_is_utc_iso_8601_with_microseconds() -> None:
    assert utc_timestamp(datetime(2026, 11, 26, 9, 31, 12, tzinfo=UTC)) == (
        "2026-11-26T09:31:12.000000+00:00"
    )
    plus_two = timezone(timedelta(hours=2))
    assert utc_timestamp(datetime(2026, 11, 26, 11, 31, 12, 123456, tzinfo=plus_two)) == (
        "2026-11-26T09:31:12.123456+00:00"
    )
    assert TS.fullmatch(utc_timestamp())


def test_message_encodes_to_the_wire_form() -> None:
    message = Message(id=7, room="lobby", user="ann", text="hi", ts="2026-11-26T09:31:12.123456+00:00")
    assert msgspec.json.decode(msgspec.json.encode(message)) == {
        "type": "message",
        "id": 7,
        "room": "lobby",
        "user": "ann",
        "text": "hi",
        "ts": "2026-11-26T09:31:12.123456+00:00",
    }


async def test_add_assigns_growing_ids_and_a_utc_timestamp(store: Store) -> None:
    before = datetime.now(UTC)
    first = await store.add("lobby", "ann", "hello")
    second = await store.add("other", "bob", "hi")
    third = await store.add("lobby", "ann", "again")
    assert first.id < second.id < third.id
    assert (first.room, first.user, first.text) == ("lobby", "ann", "hello")
    for message in (first, second, third):
        assert TS.fullmatch(message.ts)
        stamped = datetime.fromisoformat(message.ts)
        assert before - timedelta(seconds=1) <= stamped <= datetime.now(UTC) + timedelta(seconds=1)


async def test_seq_counts_1_2_3_in_each_room(store: Store) -> None:
    numbered = [await store.add_numbered(room, "ann", f"m{i}") for i in range(4) for room in ("a", "b")]
    assert [seq for message, seq in numbered if message.room == "a"] == [1, 2, 3, 4]
    assert [seq for message, seq in numbered if message.room == "b"] == [1, 2, 3, 4]
    assert await store.replay("a", 0, 100) == [(seq, m) for m, seq in numbered if m.room == "a"]


async def test_concurrent_writers_number_a_room_without_gaps_in_id_order(
    store: Store, second_store: Store
) -> None:
    async def write(target: Store, who: str, room: str) -> list[tuple[Message, int]]:
        return [await target.add_numbered(room, who, f"{who}{i}") for i in range(25)]

    written = await asyncio.gather(
        write(store, "ann", "lobby"),
        write(second_store, "bob", "lobby"),
        write(store, "cid", "lobby"),
        write(second_store, "dan", "other"),
    )
    lobby = sorted((seq, m.id) for batch in written[:3] for m, seq in batch)
    assert [seq for seq, _ in lobby] == list(range(1, 76))  # no gap, no repeat
    assert [message_id for _, message_id in lobby] == sorted(message_id for _, message_id in lobby)
    assert await seqs(store, "lobby") == list(range(1, 76))
    assert await seqs(second_store, "other") == list(range(1, 26))
    stats = await store.room_stats(["lobby", "other"])
    assert stats["lobby"] == RoomStats("lobby", 75, lobby[-1][1])
    assert stats["other"].messages == 25


async def test_a_failed_insert_leaves_neither_the_message_nor_the_seq_bump(store: Store) -> None:
    first, _ = await store.add_numbered("lobby", "ann", "one")
    with pytest.raises(IntegrityError):  # user is NOT NULL: fails after the room's row was bumped
        await store.add_numbered("lobby", None, "lost")  # type: ignore[arg-type]
    assert await store.room_stats(["lobby"]) == {"lobby": RoomStats("lobby", 1, first.id)}
    assert await store.recent("lobby", 10) == [first]
    _, seq = await store.add_numbered("lobby", "ann", "two")
    assert seq == 2
    assert await seqs(store, "lobby") == [1, 2]


async def test_a_failure_after_the_insert_rolls_the_whole_message_back(store: Store) -> None:
    first, _ = await store.add_numbered("lobby", "ann", "one")

    def fail_after_the_insert(conn: Any, clauseelement: Any, *args: Any) -> None:
        # Once the message row is inserted (and the room's row bumped), before the commit.
        if "INSERT INTO messages" in str(clauseelement):
            raise OSError("the disk went away after the insert")

    event.listen(store.engine.sync_engine, "after_execute", fail_after_the_insert)
    try:
        with pytest.raises(OSError, match="disk went away"):
            await store.add_numbered("lobby", "ann", "lost")
    finally:
        event.remove(store.engine.sync_engine, "after_execute", fail_after_the_insert)
    assert await store.recent("lobby", 10) == [first]
    assert await store.room_stats(["lobby"]) == {"lobby": RoomStats("lobby", 1, first.id)}
    later, seq = await store.add_numbered("lobby", "ann", "two")
    assert seq == 2
    assert later.id > first.id


async def test_recent_gives_the_last_messages_oldest_first(store: Store) -> None:
    added = [await store.add("lobby", "ann", f"m{i}") for i in range(10)]
    await store.add("other", "bob", "elsewhere")
    assert await store.recent("lobby", 3) == added[-3:]
    assert await store.recent("lobby", 50) == added
    assert await store.recent("empty", 50) == []


async def test_since_pages_forward(store: Store) -> None:
    added = [await store.add("lobby", "ann", f"m{i}") for i in range(10)]
    await store.add("other", "bob", "elsewhere")
    assert await store.since("lobby", 0, 4) == added[:4]
    assert await store.since("lobby", added[3].id, 4) == added[4:8]
    assert await store.since("lobby", added[7].id, 4) == added[8:]
    assert await store.since("lobby", added[-1].id, 4) == []
    assert await store.since("lobby", -5, 100) == added


async def test_history_of_an_empty_room_is_at_position_0(store: Store) -> None:
    assert await store.history("lobby", None, 50) == History(messages=[], position=0)
    assert await store.history("lobby", 12, 50) == History(messages=[], position=0)


async def test_history_without_since_is_the_last_messages_at_the_room_count(store: Store) -> None:
    added = [await store.add("lobby", "ann", f"m{i}") for i in range(7)]
    await store.add("other", "bob", "elsewhere")
    assert await store.history("lobby", None, 3) == History(messages=added[-3:], position=7)
    assert await store.history("lobby", None, 50) == History(messages=added, position=7)


async def test_history_since_an_id_is_what_follows_it_at_the_room_count(store: Store) -> None:
    added = [await store.add("lobby", "ann", f"m{i}") for i in range(7)]
    assert await store.history("lobby", added[3].id, 50) == History(messages=added[4:], position=7)
    # Up to date: nothing to send, live messages follow the room's count.
    assert await store.history("lobby", added[-1].id, 50) == History(messages=[], position=7)
    # More than the limit: the first ones; the rest is paged through the HTTP API, and
    # live messages follow the newest (the client did not ask for what lies between).
    assert await store.history("lobby", 0, 2) == History(messages=added[:2], position=7)


async def test_replay_gives_seq_and_message_after_a_seq(store: Store) -> None:
    added = [await store.add("lobby", "ann", f"m{i}") for i in range(6)]
    await store.add("other", "bob", "elsewhere")
    assert await store.replay("lobby", 0, 100) == list(enumerate(added, start=1))
    assert await store.replay("lobby", 2, 3) == [(3, added[2]), (4, added[3]), (5, added[4])]
    assert await store.replay("lobby", 6, 100) == []
    assert await store.replay("nowhere", 0, 100) == []


async def test_latest_rooms_lists_the_newest_first(store: Store) -> None:
    assert await store.latest_rooms(10) == []
    for room in ("a", "b", "c", "a", "b"):
        await store.add(room, "ann", "x")
    latest = await store.latest_rooms(10)
    assert [(r.room, r.messages) for r in latest] == [("b", 2), ("a", 2), ("c", 1)]
    assert latest[0].last_id > latest[1].last_id > latest[2].last_id
    assert [r.room for r in await store.latest_rooms(2)] == ["b", "a"]
    assert await store.room_stats([]) == {}
    assert set(await store.room_stats(["a", "c", "none"])) == {"a", "c"}


async def test_messages_survive_an_engine_restart(database_url: str) -> None:
    first = Store(database_url)
    await first.start()
    stored = [await first.add("lobby", "ann", f"m{i}") for i in range(3)]
    await first.close()

    second = Store(database_url)
    await second.start()  # creating the schema again keeps what is there
    try:
        assert await second.recent("lobby", 50) == stored
        later, seq = await second.add_numbered("lobby", "bob", "after restart")
        assert later.id > stored[-1].id
        assert seq == 4
    finally:
        await second.close()


async def test_several_processes_starting_at_once_on_a_new_database_all_start(database_url: str) -> None:
    stores = [Store(database_url) for _ in range(4)]  # `wirehall run --workers 4` on a new database
    try:
        await asyncio.gather(*(store.start() for store in stores))
        numbered = await asyncio.gather(*(store.add_numbered("lobby", "ann", "hi") for store in stores))
        assert sorted(seq for _, seq in numbered) == [1, 2, 3, 4]
    finally:
        for store in stores:
            await store.close()


@pytest.mark.postgres
async def test_a_database_whose_id_sequence_got_another_name_still_takes_posts(
    postgres_database_url: str,
) -> None:
    # Processes racing to create the schema could leave the serial column's sequence named
    # `messages_id_seq1`: the store asks the database for the name instead of assuming it.
    first = Store(postgres_database_url)
    await first.start()
    before = await first.add("lobby", "ann", "before")
    async with first.engine.begin() as conn:
        await conn.exec_driver_sql("ALTER SEQUENCE messages_id_seq RENAME TO messages_id_seq1")
    await first.close()
    again = Store(postgres_database_url)
    await again.start()
    try:
        message, seq = await again.add_numbered("lobby", "bob", "after")
        assert seq == 2
        assert message.id > before.id
    finally:
        await again.close()


async def test_ids_are_not_reused_after_the_newest_row_is_deleted(store: Store) -> None:
    first = await store.add("lobby", "ann", "one")
    second = await store.add("lobby", "ann", "two")
    async with store.engine.begin() as conn:
        await conn.execute(delete(messages).where(messages.c.id == second.id))
    third = await store.add("lobby", "ann", "three")
    assert third.id > second.id > first.id


async def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path: Path) -> None:
    store = Store(sqlite_url(tmp_path / "chat.db"))
    await store.start()
    try:
        async with store.engine.connect() as conn:
            assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
            timeout = (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar()
            assert isinstance(timeout, int)
            assert timeout >= 1000
    finally:
        await store.close()


@pytest.mark.postgres
async def test_a_post_in_one_room_does_not_wait_for_another_rooms_writer(
    postgres_database_url: str,
) -> None:
    one, two = Store(postgres_database_url), Store(postgres_database_url)
    await one.start()
    await two.start()
    try:
        await two.add("busy", "ann", "first")
        async with one.engine.begin() as conn:
            # A writer in "busy" that has not committed yet holds the room's row.
            await conn.execute(update(rooms).where(rooms.c.room == "busy").values(last_seq=rooms.c.last_seq))
            elsewhere = await asyncio.wait_for(two.add_numbered("quiet", "bob", "hi"), timeout=5)
            assert elsewhere[1] == 1
            same_room = asyncio.create_task(two.add_numbered("busy", "bob", "waits"))
            with pytest.raises(TimeoutError):  # still blocked behind the open transaction
                await asyncio.wait_for(asyncio.shield(same_room), STILL_BLOCKED)
        _, seq = await asyncio.wait_for(same_room, timeout=10)
        assert seq == 2
    finally:
        await one.close()
        await two.close()


OLD_SQLITE_SCHEMA = """
CREATE TABLE messages (
    id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    room VARCHAR(64) NOT NULL,
    user VARCHAR(32) NOT NULL,
    text TEXT NOT NULL,
    ts VARCHAR(32) NOT NULL
);
CREATE INDEX ix_messages_room_id ON messages (room, id);
"""


async def test_an_older_database_without_seq_is_numbered_on_start(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as old:
        old.executescript(OLD_SQLITE_SCHEMA)
        for i, room in enumerate(["a", "b", "a", "a", "c", "b"]):
            old.execute(
                "INSERT INTO messages (room, user, text, ts) VALUES (?, 'ann', ?, ?)",
                (room, f"m{i}", utc_timestamp()),
            )
        old.execute("DELETE FROM messages WHERE id = 6")  # the newest id stays used
    old.close()

    store = Store(sqlite_url(path))
    await store.start()
    try:
        assert [(seq, m.id) for seq, m in await store.replay("a", 0, 10)] == [(1, 1), (2, 3), (3, 4)]
        assert [(seq, m.id) for seq, m in await store.replay("b", 0, 10)] == [(1, 2)]
        assert await store.room_stats(["a", "b", "c"]) == {
            "a": RoomStats("a", 3, 4),
            "b": RoomStats("b", 1, 2),
            "c": RoomStats("c", 1, 5),
        }
        assert await store.history("a", None, 50) == History(await store.recent("a", 50), position=3)
        message, seq = await store.add_numbered("a", "bob", "new")
        assert (message.id, seq) == (7, 4)
        async with store.engine.connect() as conn:
            indexes = await conn.run_sync(lambda sync: inspect(sync).get_indexes("messages"))
        assert any(ix["name"] == "ux_messages_room_seq" and ix["unique"] for ix in indexes), indexes
    finally:
        await store.close()

    again = Store(sqlite_url(path))  # a second start finds the new schema and changes nothing
    await again.start()
    try:
        assert await seqs(again, "a") == [1, 2, 3, 4]
    finally:
        await again.close()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# no lone surrogates (the chat refuses them) and no NUL (PostgreSQL cannot store it; the chat refuses it)
@given(text=st.text(alphabet=st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), min_size=1))
async def test_any_text_round_trips(store: Store, text: str) -> None:
    message = await store.add("fuzz", "ann", text)
    assert (await store.since("fuzz", message.id - 1, 1)) == [message]
