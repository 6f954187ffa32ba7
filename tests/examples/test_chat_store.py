"""The chat's message store (examples/chat/store.py) on a temporary SQLite file."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from examples.chat.store import Message, Store, utc_timestamp

TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00")


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = Store(sqlite_url(tmp_path / "chat.db"))
    await store.start()
    try:
        yield store
    finally:
        await store.close()


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


async def test_rooms_counts_messages_per_room(store: Store) -> None:
    assert await store.rooms() == []
    for room, count in (("b-room", 2), ("a_room", 3)):
        for i in range(count):
            await store.add(room, "ann", str(i))
    assert await store.rooms() == [("a_room", 3), ("b-room", 2)]


async def test_messages_survive_an_engine_restart(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "chat.db")
    first = Store(url)
    await first.start()
    stored = [await first.add("lobby", "ann", f"m{i}") for i in range(3)]
    await first.close()

    second = Store(url)
    await second.start()  # creating the schema again keeps what is there
    try:
        assert await second.recent("lobby", 50) == stored
        later = await second.add("lobby", "bob", "after restart")
        assert later.id > stored[-1].id
    finally:
        await second.close()


async def test_ids_are_not_reused_after_the_newest_row_is_deleted(store: Store) -> None:
    first = await store.add("lobby", "ann", "one")
    second = await store.add("lobby", "ann", "two")
    async with store.engine.begin() as conn:
        await conn.exec_driver_sql("DELETE FROM messages WHERE id = ?", (second.id,))
    third = await store.add("lobby", "ann", "three")
    assert third.id > second.id > first.id


async def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(store: Store) -> None:
    async with store.engine.connect() as conn:
        assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
        timeout = (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar()
        assert isinstance(timeout, int)
        assert timeout >= 1000


async def test_two_engines_share_one_file(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "chat.db")
    one, two = Store(url), Store(url)
    await one.start()
    await two.start()
    try:
        # Both write at once, many times: nobody fails with "database is locked",
        # and every id is distinct and seen by both.
        async def write(store: Store, who: str) -> list[Message]:
            return [await store.add("lobby", who, f"{who}{i}") for i in range(40)]

        ann, bob = await asyncio.gather(write(one, "ann"), write(two, "bob"))
        ids = [m.id for m in ann + bob]
        assert len(set(ids)) == 80
        assert [m.id for m in ann] == sorted(m.id for m in ann)
        seen_by_one = await one.since("lobby", 0, 500)
        assert seen_by_one == await two.since("lobby", 0, 500)
        assert sorted(ids) == [m.id for m in seen_by_one]
    finally:
        await one.close()
        await two.close()


async def test_adding_holds_the_write_until_the_block_ends(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "chat.db")
    one, two = Store(url), Store(url)
    await one.start()
    await two.start()
    try:
        async with one.adding("lobby", "ann", "first") as first:
            assert await two.since("lobby", 0, 10) == []  # not visible before commit
            second_add = asyncio.create_task(two.add("lobby", "bob", "second"))
            await asyncio.sleep(0.2)
            assert not second_add.done()  # the other writer waits for the lock
        second = await asyncio.wait_for(second_add, timeout=10)
        assert second.id > first.id
        assert [m.id for m in await one.since("lobby", 0, 10)] == [first.id, second.id]
    finally:
        await one.close()
        await two.close()


async def test_a_failed_block_stores_nothing(store: Store) -> None:
    with pytest.raises(RuntimeError, match="publish failed"):
        async with store.adding("lobby", "ann", "lost"):
            raise RuntimeError("publish failed")
    assert await store.recent("lobby", 10) == []


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(min_size=1, max_size=300))  # no lone surrogates: the chat refuses them
async def test_any_text_round_trips(store: Store, text: str) -> None:
    message = await store.add("fuzz", "ann", text)
    assert (await store.since("fuzz", message.id - 1, 1)) == [message]


async def test_exclusive_reads_while_no_process_adds(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "chat.db")
    one, two = Store(url), Store(url)
    await one.start()
    await two.start()
    try:
        first = await two.add("lobby", "bob", "before")
        async with one.exclusive() as snapshot:
            adding = asyncio.create_task(two.add("lobby", "bob", "during"))
            await asyncio.sleep(0.2)
            assert not adding.done()  # the other process waits for the block
            assert await snapshot.recent("lobby", 10) == [first]
            assert await snapshot.since("lobby", 0, 10) == [first]
        later = await asyncio.wait_for(adding, timeout=10)
        assert [m.id for m in await one.recent("lobby", 10)] == [first.id, later.id]
    finally:
        await one.close()
        await two.close()


async def test_exclusive_waits_for_an_add_under_way(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "chat.db")
    one, two = Store(url), Store(url)
    await one.start()
    await two.start()
    try:
        async with two.adding("lobby", "bob", "in flight") as message:
            reading = asyncio.create_task(_read_exclusively(one))
            await asyncio.sleep(0.2)
            assert not reading.done()  # the reader waits for the commit
        assert await asyncio.wait_for(reading, timeout=10) == [message]
    finally:
        await one.close()
        await two.close()


async def _read_exclusively(store: Store) -> list[Message]:
    async with store.exclusive() as snapshot:
        return await snapshot.recent("lobby", 10)
