"""The Backplane contract (wirehall/backplane/base.py), run against every backend.

Each test gets nodes of one "cluster": memory backplanes sharing a `MemoryHub`, or
Redis backplanes on the same server and key prefix. Every promise of the Protocol's
docstrings has a test here, and every test runs on both backends. The failures a
promise speaks of are played through `Cluster`: a node cut off from the backplane (memory:
`cut_off()`; Redis: its subscriber connection killed and its reconnection held back) and
a node whose liveness lapsed (memory: `MemoryHub.expire`; Redis: its liveness key deleted).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

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
    return url


class Cluster:
    """Nodes of one cluster on the backend under test, and the failures a test may play."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.hub = MemoryHub()
        self.made: list[Backplane] = []
        self._gates: dict[str, asyncio.Event] = {}

    @property
    def is_memory(self) -> bool:
        return self.url == "memory://"

    async def node(self) -> Backplane:
        backplane: Backplane
        if self.is_memory:
            backplane = MemoryBackplane(self.hub)
        else:
            from wirehall.backplane.redis import RedisBackplane

            backplane = RedisBackplane.from_url(self.url)
        await backplane.start()
        self.made.append(backplane)
        return backplane

    async def expire(self, node: Backplane) -> None:
        """Make `node`'s liveness lapse, as if it had stopped calling `heartbeat()`."""
        if self.is_memory:
            self.hub.expire(node.node_id)
            return
        async with self._admin() as admin:
            prefix = node.prefix  # type: ignore[attr-defined]  # a RedisBackplane
            assert await admin.delete(f"{prefix}:node:{node.node_id}") == 1

    async def cut_off(self, node: Backplane) -> None:
        """Cut `node` off the backplane; returns once nothing published reaches it."""
        if isinstance(node, MemoryBackplane):
            node.cut_off()
            return
        # Hold the reconnection back until `reconnect()`, then kill the subscriber connection.
        subscriber = node._subscriber  # type: ignore[attr-defined]
        connect, gate, reconnecting = subscriber.connect, asyncio.Event(), asyncio.Event()
        self._gates[node.node_id] = gate

        async def held_back() -> object:
            reconnecting.set()
            await gate.wait()
            subscriber.connect = connect
            return await connect()

        subscriber.connect = held_back
        async with self._admin() as admin:
            name = f"wirehall-sub-{node.node_id}"
            clients = [client["id"] for client in await admin.client_list() if client["name"] == name]
            assert len(clients) == 1
            await admin.client_kill_filter(_id=clients[0])
        await asyncio.wait_for(reconnecting.wait(), 5)

    def reconnect(self, node: Backplane) -> None:
        """End `cut_off(node)`: the node connects again (its `on_reconnect` callbacks follow)."""
        if isinstance(node, MemoryBackplane):
            node.reconnect()
        else:
            self._gates.pop(node.node_id).set()

    def queued(self, node: Backplane) -> int:
        """How many payloads `node` received that its `messages()` has not yielded yet."""
        if isinstance(node, MemoryBackplane):
            return node._queue.qsize()
        return int(node._subscriber.queued)  # type: ignore[attr-defined]

    def _admin(self) -> Any:  # a redis.asyncio.Redis (redis is imported only for Redis tests)
        import redis.asyncio as aioredis

        return aioredis.Redis.from_url(urlsplit(self.url)._replace(query="").geturl(), socket_timeout=5)

    async def close(self) -> None:
        for gate in self._gates.values():
            gate.set()
        for backplane in reversed(self.made):
            with contextlib.suppress(BackplaneError):
                await backplane.close()


@pytest.fixture
async def cluster(backplane_url: str) -> AsyncIterator[Cluster]:
    """Builds and starts nodes of one cluster; closes them all afterwards."""
    made = Cluster(backplane_url)
    yield made
    await made.close()


@pytest.fixture
def make_node(cluster: Cluster) -> NodeFactory:
    return cluster.node


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


async def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            if condition():
                return
            await asyncio.sleep(0.005)


# -- identity and lifecycle -----------------------------------------------------------------


async def test_node_ids_are_stable_and_unique(make_node: NodeFactory) -> None:
    first, second = await make_node(), await make_node()
    assert isinstance(first.node_id, str)
    assert first.node_id
    assert first.node_id == first.node_id
    assert first.node_id != second.node_id
    assert isinstance(first, Backplane)


async def test_heartbeat_interval_is_a_positive_number_of_seconds(backplane: Backplane) -> None:
    assert isinstance(backplane.heartbeat_interval, float)
    assert backplane.heartbeat_interval > 0


async def test_publish_after_close_raises_backplane_error(backplane: Backplane) -> None:
    await backplane.close()
    with pytest.raises(BackplaneError):
        await backplane.publish("room:x", b"late")


# -- channels -------------------------------------------------------------------------------


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
    await backplane.publish("room:twice", b"marker")
    assert await reader.get() == ("room:twice", b"x")
    assert await reader.get() == ("room:twice", b"marker")  # not a second "x"


async def test_subscribing_again_after_unsubscribing_delivers_once(
    backplane: Backplane, readers: Callable[[Backplane], Reader]
) -> None:
    reader = readers(backplane)
    await backplane.subscribe("room:again")
    await backplane.unsubscribe("room:again")
    await backplane.subscribe("room:again")
    await backplane.publish("room:again", b"x")
    await backplane.publish("room:again", b"marker")
    assert await reader.get() == ("room:again", b"x")
    assert await reader.get() == ("room:again", b"marker")


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
    # published before "kept" on the same node: had they been delivered, they would come first
    assert await reader.get() == ("room:b", b"kept")


async def test_nothing_of_an_unsubscribed_channel_is_yielded_not_even_what_arrived_before(
    cluster: Cluster, make_node: NodeFactory
) -> None:
    receiver, sender = await make_node(), await make_node()
    await receiver.subscribe("room:a")
    await receiver.subscribe("room:b")
    for i in range(5):
        await sender.publish("room:a", b"%d" % i)
    await _until(lambda: cluster.queued(receiver) == 5)  # arrived, not taken yet
    await receiver.unsubscribe("room:a")
    await sender.publish("room:b", b"marker")
    messages = receiver.messages()
    assert await asyncio.wait_for(anext(messages), 3) == ("room:b", b"marker")
    await messages.aclose()  # type: ignore[attr-defined]  # an async generator


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
    await first.publish("room:shared", b"marker")
    await first.publish("room:other", b"marker")
    for reader in (first_reader, second_reader):
        assert await reader.get() == ("room:shared", b"from the bystander")
        assert await reader.get() == ("room:shared", b"from the first")
        assert await reader.get() == ("room:shared", b"marker")  # no second copy came first
    # published on room:shared before this marker: had the bystander got them, they came first
    assert await bystander_reader.get() == ("room:other", b"marker")


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


async def test_messages_has_one_consumer_and_ends_at_close(backplane: Backplane) -> None:
    await backplane.subscribe("room:one")
    await backplane.publish("room:one", b"x")
    consumer = backplane.messages()
    assert await asyncio.wait_for(anext(consumer), 3) == ("room:one", b"x")  # now iterating
    with pytest.raises(RuntimeError, match="already has a consumer"):
        await asyncio.wait_for(anext(backplane.messages()), 3)
    pending = asyncio.ensure_future(anext(consumer))
    await backplane.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(pending, 3)


async def test_what_is_published_while_a_node_is_cut_off_is_not_replayed_and_on_reconnect_follows(
    cluster: Cluster, make_node: NodeFactory, readers: Callable[[Backplane], Reader]
) -> None:
    listener, speaker = await make_node(), await make_node()
    reconnected = asyncio.Event()
    calls: list[str] = []

    def callback() -> None:
        calls.append("reconnected")
        reconnected.set()

    listener.on_reconnect(callback)
    reader = readers(listener)
    await listener.subscribe("room:cut")
    await speaker.publish("room:cut", b"before")
    assert await reader.get() == ("room:cut", b"before")
    await cluster.cut_off(listener)
    await speaker.publish("room:cut", b"while cut off")
    assert calls == []
    cluster.reconnect(listener)
    await asyncio.wait_for(reconnected.wait(), 10)
    # the subscriptions are back by the time the callback runs: nothing published now is missed
    await speaker.publish("room:cut", b"after")
    assert await reader.get() == ("room:cut", b"after")
    assert calls == ["reconnected"]


async def test_on_reconnect_is_not_called_while_the_backplane_works(
    backplane: Backplane, readers: Callable[[Backplane], Reader]
) -> None:
    calls: list[str] = []
    backplane.on_reconnect(lambda: calls.append("reconnected"))
    reader = readers(backplane)
    await backplane.subscribe("room:steady")
    await backplane.publish("room:steady", b"x")
    assert await reader.get() == ("room:steady", b"x")
    assert calls == []


# -- presence -------------------------------------------------------------------------------


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


async def test_a_member_id_of_another_node_is_a_value_error(make_node: NodeFactory) -> None:
    first, second = await make_node(), await make_node()
    with pytest.raises(ValueError, match=f"must start with '{first.node_id}.'"):
        await first.add_presence("lobby", f"{second.node_id}.1", "mallory")
    with pytest.raises(ValueError, match="does not belong"):
        await first.add_presence("lobby", "conn-1", "mallory")
    assert await second.presence("lobby") == {}


async def test_removing_a_member_of_another_node_changes_nothing(make_node: NodeFactory) -> None:
    first, second = await make_node(), await make_node()
    await second.add_presence("lobby", f"{second.node_id}.1", "bob")
    await first.remove_presence("lobby", f"{second.node_id}.1")
    await first.remove_presence("lobby", "conn-1")
    assert await first.presence("lobby") == {f"{second.node_id}.1": "bob"}
    assert "lobby" in await first.rooms()


async def test_rooms_lists_where_any_node_has_presence_sorted(make_node: NodeFactory) -> None:
    first, second = await make_node(), await make_node()
    assert "lobby" not in await first.rooms()
    await first.add_presence("lobby", f"{first.node_id}.1", "ann")
    await second.add_presence("kitchen", f"{second.node_id}.1", "bob")
    await second.add_presence("attic", f"{second.node_id}.2", "bob")
    listed = await first.rooms()
    assert {"lobby", "kitchen", "attic"} <= set(listed)
    assert listed == sorted(listed)
    await second.remove_presence("kitchen", f"{second.node_id}.1")
    assert "kitchen" not in await first.rooms()
    assert "lobby" in await second.rooms()


async def test_heartbeat_keeps_a_live_nodes_members(backplane: Backplane) -> None:
    await backplane.add_presence("lobby", f"{backplane.node_id}.1", "ann")
    assert await backplane.heartbeat() == []
    assert await backplane.presence("lobby") == {f"{backplane.node_id}.1": "ann"}


async def test_heartbeat_purges_a_lapsed_node_and_one_node_reports_it(
    cluster: Cluster, make_node: NodeFactory
) -> None:
    first, second, doomed = await make_node(), await make_node(), await make_node()
    await first.add_presence("lobby", f"{first.node_id}.1", "ann")
    await doomed.add_presence("lobby", f"{doomed.node_id}.1", "zed")
    await doomed.add_presence("attic", f"{doomed.node_id}.2", "zed")
    await cluster.expire(doomed)
    # members of a node that is not live are not present, purged or not
    assert await second.presence("lobby") == {f"{first.node_id}.1": "ann"}
    reports = await asyncio.gather(first.heartbeat(), second.heartbeat())
    assert sorted(reports, key=len) == [[], ["attic", "lobby"]]
    assert list(await asyncio.gather(first.heartbeat(), second.heartbeat())) == [[], []]
    assert "attic" not in await first.rooms()
    assert await first.presence("attic") == {}


async def test_a_node_taken_for_dead_restores_its_members_at_its_next_heartbeat(
    cluster: Cluster, make_node: NodeFactory
) -> None:
    survivor, late = await make_node(), await make_node()
    await late.add_presence("lobby", f"{late.node_id}.1", "zed")
    await cluster.expire(late)
    assert await survivor.heartbeat() == ["lobby"]
    assert await survivor.presence("lobby") == {}
    assert await late.heartbeat() == ["lobby"]
    assert await survivor.presence("lobby") == {f"{late.node_id}.1": "zed"}


async def test_close_ends_messages_and_removes_this_nodes_presence(
    make_node: NodeFactory, readers: Callable[[Backplane], Reader]
) -> None:
    leaving, staying = await make_node(), await make_node()
    reader = readers(leaving)
    await leaving.subscribe("room:x")
    await leaving.add_presence("lobby", f"{leaving.node_id}.1", "ann")
    await leaving.add_presence("attic", f"{leaving.node_id}.2", "ann")
    await staying.add_presence("lobby", f"{staying.node_id}.1", "bob")
    await leaving.close()
    await asyncio.wait_for(reader.ended.wait(), 3)
    assert await staying.presence("lobby") == {f"{staying.node_id}.1": "bob"}
    assert "attic" not in await staying.rooms()
