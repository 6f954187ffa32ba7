"""The Backplane contract (wirehall/backplane/base.py), run against every backend.

Each test gets nodes of one "cluster": memory backplanes sharing a `MemoryHub`, or
Redis backplanes on the same server and key prefix.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from wirehall.backplane.base import Backplane
from wirehall.backplane.memory import MemoryBackplane, MemoryHub
from wirehall.errors import BackplaneError

NodeFactory = Callable[[], Awaitable[Backplane]]


@pytest.fixture(
    params=[
        pytest.param("memory", id="memory"),
        pytest.param("redis", id="redis", marks=pytest.mark.redis),
    ]
)
def backplane_url(request: pytest.FixtureRequest) -> str:
    """Which backend the test runs on (as the URL it is built from)."""
    if request.param == "memory":
        return "memory://"
    url: str = request.getfixturevalue("redis_url")
    try:
        import wirehall.backplane.redis  # noqa: F401
    except ModuleNotFoundError:
        pytest.skip("wirehall.backplane.redis does not exist yet")
    return url


@pytest.fixture
async def make_node(backplane_url: str) -> AsyncIterator[NodeFactory]:
    """Builds and starts nodes of one cluster; closes them all afterwards."""
    hub = MemoryHub()
    made: list[Backplane] = []

    async def make() -> Backplane:
        backplane: Backplane
        if backplane_url == "memory://":
            backplane = MemoryBackplane(hub)
        else:
            from wirehall.backplane.redis import RedisBackplane

            backplane = RedisBackplane.from_url(backplane_url)
        await backplane.start()
        made.append(backplane)
        return backplane

    yield make
    for backplane in reversed(made):
        with contextlib.suppress(BackplaneError):
            await backplane.close()


@pytest.fixture
async def backplane(make_node: NodeFactory) -> Backplane:
    return await make_node()


class Reader:
    """Consumes a backplane's `messages()` into a queue, so waits can time out safely."""

    def __init__(self, backplane: Backplane) -> None:
        self.queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self.ended = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._read(backplane))

    async def _read(self, backplane: Backplane) -> None:
        try:
            async for item in backplane.messages():
                self.queue.put_nowait(item)
        finally:
            self.ended.set()

    async def get(self, timeout: float = 3.0) -> tuple[str, bytes]:
        return await asyncio.wait_for(self.queue.get(), timeout)

    async def nothing_more(self, wait: float = 0.2) -> bool:
        await asyncio.sleep(wait)
        return self.queue.empty()

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


@pytest.fixture
async def readers() -> AsyncIterator[Callable[[Backplane], Reader]]:
    made: list[Reader] = []

    def reader(backplane: Backplane) -> Reader:
        made.append(Reader(backplane))
        return made[-1]

    yield reader
    for item in made:
        await item.stop()


async def test_node_ids_are_stable_and_unique(make_node: NodeFactory) -> None:
    first, second = await make_node(), await make_node()
    assert isinstance(first.node_id, str)
    assert first.node_id
    assert first.node_id == first.node_id
    assert first.node_id != second.node_id
    assert isinstance(first, Backplane)


async def test_published_payload_reaches_the_subscriber_itself_byte_for_byte(
    backplane: Backplane, readers: Callable[[Backplane], Reader]
) -> None:
    reader = readers(backplane)
    await backplane.subscribe("room:a")
    payload = bytes(range(256)) * 64
    await backplane.publish("room:a", payload)
    assert await reader.get() == ("room:a", payload)


async def test_subscribing_twice_delivers_once(
    backplane: Backplane, readers: Callable[[Backplane], Reader]
) -> None:
    reader = readers(backplane)
    await backplane.subscribe("room:twice")
    await backplane.subscribe("room:twice")
    await backplane.publish("room:twice", b"x")
    assert await reader.get() == ("room:twice", b"x")
    assert await reader.nothing_more()


async def test_unsubscribed_channels_are_not_delivered(
    backplane: Backplane, readers: Callable[[Backplane], Reader]
) -> None:
    reader = readers(backplane)
    await backplane.unsubscribe("room:never")  # not subscribed: no error
    await backplane.subscribe("room:a")
    await backplane.subscribe("room:b")
    await backplane.unsubscribe("room:a")
    await backplane.publish("room:a", b"dropped")
    await backplane.publish("room:elsewhere", b"dropped")
    await backplane.publish("room:b", b"kept")
    assert await reader.get() == ("room:b", b"kept")
    assert await reader.nothing_more()


async def test_payloads_of_a_channel_keep_their_order(
    backplane: Backplane, readers: Callable[[Backplane], Reader]
) -> None:
    reader = readers(backplane)
    await backplane.subscribe("room:ordered")
    await asyncio.gather(*(backplane.publish("room:ordered", str(n).encode()) for n in range(300)))
    received = [(await reader.get())[1] for _ in range(300)]
    assert received == [str(n).encode() for n in range(300)]


async def test_every_subscribed_node_receives_each_payload_once(
    make_node: NodeFactory, readers: Callable[[Backplane], Reader]
) -> None:
    first, second, bystander = await make_node(), await make_node(), await make_node()
    first_reader, second_reader, bystander_reader = readers(first), readers(second), readers(bystander)
    await first.subscribe("room:shared")
    await second.subscribe("room:shared")
    await bystander.subscribe("room:other")
    await bystander.publish("room:shared", b"from the bystander")
    await first.publish("room:shared", b"from the first")
    for reader in (first_reader, second_reader):
        assert await reader.get() == ("room:shared", b"from the bystander")
        assert await reader.get() == ("room:shared", b"from the first")
        assert await reader.nothing_more(0.05)
    assert await bystander_reader.nothing_more(0.05)


async def test_nothing_published_after_subscribe_returns_is_missed(
    make_node: NodeFactory, readers: Callable[[Backplane], Reader]
) -> None:
    listener, speaker = await make_node(), await make_node()
    reader = readers(listener)
    for n in range(20):
        channel = f"room:fresh-{n}"
        await listener.subscribe(channel)
        await speaker.publish(channel, b"right away")
        assert await reader.get() == (channel, b"right away")


async def test_channel_names_may_hold_any_text(
    backplane: Backplane, readers: Callable[[Backplane], Reader]
) -> None:
    reader = readers(backplane)
    channel = "room:with spaces/ü*?[x]"
    await backplane.subscribe(channel)
    await backplane.publish(channel, b"ok")
    assert await reader.get() == (channel, b"ok")


async def test_presence_is_shared_across_nodes(make_node: NodeFactory) -> None:
    first, second = await make_node(), await make_node()
    await first.add_presence("lobby", f"{first.node_id}.1", "ann")
    await second.add_presence("lobby", f"{second.node_id}.1", "bob")
    await second.add_presence("kitchen", f"{second.node_id}.2", "")
    expected = {f"{first.node_id}.1": "ann", f"{second.node_id}.1": "bob"}
    assert await first.presence("lobby") == expected
    assert await second.presence("lobby") == expected
    await first.add_presence("lobby", f"{first.node_id}.1", "ann2")  # again: replaces
    assert (await second.presence("lobby"))[f"{first.node_id}.1"] == "ann2"
    await second.remove_presence("lobby", f"{second.node_id}.1")
    await second.remove_presence("lobby", f"{second.node_id}.404")  # not there: no error
    assert await first.presence("lobby") == {f"{first.node_id}.1": "ann2"}
    assert await first.presence("empty") == {}
    assert await first.presence("kitchen") == {f"{second.node_id}.2": ""}


async def test_rooms_lists_where_any_node_has_presence(make_node: NodeFactory) -> None:
    first, second = await make_node(), await make_node()
    assert "lobby" not in await first.rooms()
    await first.add_presence("lobby", f"{first.node_id}.1", "ann")
    await second.add_presence("kitchen", f"{second.node_id}.1", "bob")
    listed = await first.rooms()
    assert {"lobby", "kitchen"} <= set(listed)
    assert listed == sorted(listed)
    await second.remove_presence("kitchen", f"{second.node_id}.1")
    assert "kitchen" not in await first.rooms()
    assert "lobby" in await second.rooms()


async def test_heartbeat_returns_a_list_of_rooms(backplane: Backplane) -> None:
    await backplane.add_presence("lobby", f"{backplane.node_id}.1", "ann")
    rooms = await backplane.heartbeat()
    assert isinstance(rooms, list)
    assert "lobby" not in rooms  # a live node's members are not purged
    assert await backplane.presence("lobby") == {f"{backplane.node_id}.1": "ann"}


async def test_close_ends_messages_and_removes_this_nodes_presence(
    make_node: NodeFactory, readers: Callable[[Backplane], Reader]
) -> None:
    leaving, staying = await make_node(), await make_node()
    reader = readers(leaving)
    await leaving.subscribe("room:x")
    await leaving.add_presence("lobby", f"{leaving.node_id}.1", "ann")
    await staying.add_presence("lobby", f"{staying.node_id}.1", "bob")
    await leaving.close()
    await asyncio.wait_for(reader.ended.wait(), 3)
    assert await staying.presence("lobby") == {f"{staying.node_id}.1": "bob"}


async def test_publish_after_close_raises_backplane_error(backplane: Backplane) -> None:
    await backplane.close()
    with pytest.raises(BackplaneError):
        await backplane.publish("room:x", b"late")


async def test_on_reconnect_takes_a_callback_that_a_working_backplane_does_not_call(
    backplane: Backplane, readers: Callable[[Backplane], Reader]
) -> None:
    calls: list[str] = []
    backplane.on_reconnect(lambda: calls.append("reconnected"))
    reader = readers(backplane)
    await backplane.subscribe("room:steady")
    await backplane.publish("room:steady", b"x")
    assert await reader.get() == ("room:steady", b"x")
    assert calls == []
