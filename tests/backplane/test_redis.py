"""Tests for wirehall/backplane/redis.py against a real Redis.

The shared Redis (REDIS_URL, default redis://127.0.0.1:6379/0) is never flushed or
restarted: every test uses its own key prefix, and only connections named after a
backplane created by the test are killed. Outages are played on a private `redis-server`
started on a free port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import redis
import redis.asyncio as aioredis
from hypothesis import given
from hypothesis import strategies as st

from tests.backplane._private_redis import PrivateRedis, running_private_redis
from tests.conftest import free_port
from wirehall.backplane.redis import RedisBackplane
from wirehall.errors import BackplaneError, ConfigurationError

LOGGER = "wirehall.backplane.redis"


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture
def redis_url(redis_url: str) -> Iterator[str]:
    """The suite's `redis_url` (own key prefix); its keys are deleted afterwards."""
    yield redis_url
    prefix = dict(parse_qsl(urlsplit(redis_url).query))["prefix"]
    with redis.Redis.from_url(_without_query(redis_url), socket_timeout=5) as client:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)


def _without_query(url: str) -> str:
    return urlsplit(url)._replace(query="").geturl()


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A redis-server of this test's own, which it may kill, stop and restart."""
    yield from running_private_redis()


class Backplanes:
    """Starts backplanes for a test and closes every one of them at teardown."""

    def __init__(self) -> None:
        self.started: list[RedisBackplane] = []

    async def start(self, url: str, **options: object) -> RedisBackplane:
        backplane = RedisBackplane(url, **options)  # type: ignore[arg-type]
        self.started.append(backplane)
        await backplane.start()
        return backplane


@pytest.fixture
async def backplanes() -> AsyncIterator[Backplanes]:
    made = Backplanes()
    yield made
    for backplane in made.started:
        await backplane.close()


class Collector:
    """Consumes `messages()` of one backplane in a task, for the length of a test."""

    def __init__(self, backplane: RedisBackplane) -> None:
        self.items: list[tuple[str, bytes]] = []
        self._changed = asyncio.Event()
        self.task = asyncio.create_task(self._run(backplane))

    async def _run(self, backplane: RedisBackplane) -> None:
        async for item in backplane.messages():
            self.items.append(item)
            self._changed.set()

    async def wait_for(
        self, done: Callable[[list[tuple[str, bytes]]], bool], timeout: float = 5.0
    ) -> list[tuple[str, bytes]]:
        async with asyncio.timeout(timeout):
            while not done(self.items):
                self._changed.clear()
                await self._changed.wait()
        return self.items

    def payloads(self, channel: str) -> list[bytes]:
        return [payload for name, payload in self.items if name == channel]


@pytest.fixture
async def collectors() -> AsyncIterator[Callable[[RedisBackplane], Collector]]:
    made: list[Collector] = []

    def collect(backplane: RedisBackplane) -> Collector:
        collector = Collector(backplane)
        made.append(collector)
        return collector

    yield collect
    for collector in made:
        collector.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await collector.task


class Logs(logging.Handler):
    """Records of the backplane's logger, with a way to wait for one."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self._changed.set()

    @property
    def text(self) -> str:
        return "\n".join(record.getMessage() for record in self.records)

    def levels(self, text: str) -> list[int]:
        return [record.levelno for record in self.records if text in record.getMessage()]

    async def wait_for(self, text: str, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while text not in self.text:
                self._changed.clear()
                await self._changed.wait()


@pytest.fixture
def logs() -> Iterator[Logs]:
    logger = logging.getLogger(LOGGER)
    handler, level = Logs(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


def _redis_admin(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(_without_query(url), socket_timeout=5)


async def _kill_subscriber(url: str, backplane: RedisBackplane) -> int:
    """CLIENT KILL the subscriber connection of `backplane` (found by its CLIENT SETNAME)."""
    name = f"wirehall-sub-{backplane.node_id}"
    async with _redis_admin(url) as admin:
        ids = [client["id"] for client in await admin.client_list() if client["name"] == name]
        for client_id in ids:
            await admin.client_kill_filter(_id=client_id)
    return len(ids)


async def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until `condition()` holds, polling; TimeoutError after `timeout` seconds."""
    async with asyncio.timeout(timeout):
        while True:
            if condition():
                return
            await asyncio.sleep(0.005)


async def _expire_liveness(url: str, backplane: RedisBackplane) -> None:
    """Delete the liveness key of `backplane`, as its TTL does when heartbeats stop."""
    async with _redis_admin(url) as admin:
        assert await admin.delete(f"{backplane.prefix}:node:{backplane.node_id}") == 1


# -- URL and options (no Redis needed) ------------------------------------------------------


def test_url_options_are_parsed() -> None:
    backplane = RedisBackplane.from_url(
        "redis://127.0.0.1:6390/2?prefix=chat&heartbeat_ttl=4.5&connect_timeout=1"
        "&command_timeout=2&ping_interval=7&startup=wait"
    )
    settings = backplane._settings
    assert (settings.prefix, settings.heartbeat_ttl, settings.connect_timeout) == ("chat", 4.5, 1.0)
    assert (settings.command_timeout, settings.ping_interval, settings.startup) == (2.0, 7.0, "wait")
    assert settings.url == "redis://127.0.0.1:6390/2"
    assert backplane.prefix == "chat"


def test_defaults_and_keyword_arguments_override_the_url() -> None:
    backplane = RedisBackplane.from_url("redis://localhost")
    defaults = backplane._settings
    assert (defaults.prefix, defaults.heartbeat_ttl, defaults.startup) == ("wirehall", 15.0, "fail")
    assert (backplane.heartbeat_ttl, backplane.heartbeat_interval) == (15.0, 5.0)
    settings = RedisBackplane("redis://localhost/0?prefix=a", prefix="b", heartbeat_ttl=2)._settings
    assert (settings.prefix, settings.heartbeat_ttl) == ("b", 2.0)


def test_node_ids_are_unique_and_stable() -> None:
    first, second = RedisBackplane(), RedisBackplane()
    assert first.node_id != second.node_id
    assert first.node_id == first.node_id
    assert len(first.node_id) == 12
    assert "." not in first.node_id


def test_rediss_and_redis_py_options_are_passed_through() -> None:
    backplane = RedisBackplane.from_url("rediss://h.example:6380/1?ssl_cert_reqs=none&prefix=p")
    assert backplane._settings.url == "rediss://h.example:6380/1?ssl_cert_reqs=none"


def test_password_never_appears_in_the_url_shown() -> None:
    backplane = RedisBackplane.from_url("redis://user:s3cret@127.0.0.1:6379/0?prefix=x")
    assert "s3cret" not in backplane.url
    assert "s3cret" not in repr(backplane)
    assert backplane.url == "redis://user:***@127.0.0.1:6379/0"
    with pytest.raises(ConfigurationError) as caught:
        RedisBackplane.from_url("redis://user:s3cret@127.0.0.1:6379/zero")
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://127.0.0.1:6379/0", "redis:// or rediss://"),
        ("memory://", "redis:// or rediss://"),
        ("redis://127.0.0.1:notaport/0", "malformed"),
        ("redis://127.0.0.1:99999/0", "malformed"),
        ("redis:///0", "names no host"),
        ("redis://127.0.0.1:6379/zero", "database number"),
        ("redis://127.0.0.1/0?prefix=", "prefix"),
        ("redis://127.0.0.1/0?prefix=a%20b", "prefix"),
        ("redis://127.0.0.1/0?heartbeat_ttl=0", "heartbeat_ttl='0'"),
        ("redis://127.0.0.1/0?heartbeat_ttl=soon", "heartbeat_ttl='soon'"),
        ("redis://127.0.0.1/0?connect_timeout=-1", "connect_timeout='-1'"),
        ("redis://127.0.0.1/0?command_timeout=inf", "command_timeout='inf'"),
        ("redis://127.0.0.1/0?ping_interval=nan", "ping_interval='nan'"),
        ("redis://127.0.0.1/0?startup=later", "startup='later'"),
        ("redis://127.0.0.1/0?prefix=a&prefix=b", "twice"),
        ("redis://127.0.0.1/0?no_such_option=1", "redis-py rejects"),
        ("redis://127.0.0.1/0?protocol=3", "chooses itself (RESP2)"),
        ("redis://127.0.0.1/0?decode_responses=true", "chooses itself"),
        ("redis://127.0.0.1/0?client_name=x", "chooses itself"),
    ],
)
def test_bad_urls_are_configuration_errors(url: str, says: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        RedisBackplane.from_url(url)
    assert says in str(caught.value)


@given(st.text(max_size=40))
def test_any_url_is_accepted_or_refused_with_a_configuration_error(text: str) -> None:
    for url in (text, f"redis://{text}", f"redis://127.0.0.1/0?{text}"):
        with contextlib.suppress(ConfigurationError):
            RedisBackplane.from_url(url)


@given(st.text(max_size=20))
def test_any_seconds_option_is_a_positive_number_or_a_configuration_error(text: str) -> None:
    try:
        backplane = RedisBackplane("redis://127.0.0.1/0", heartbeat_ttl=text)  # type: ignore[arg-type]
    except ConfigurationError:
        return
    assert 0 < backplane._settings.heartbeat_ttl < float("inf")


def test_missing_redis_package_names_the_extra() -> None:
    code = (
        "import sys\n"
        "sys.modules['redis'] = None\n"
        "try:\n"
        "    import wirehall.backplane.redis\n"
        "except ImportError as exc:\n"
        "    print(type(exc).__name__, exc.extra, exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.startswith("MissingDependencyError redis ")
    assert "pip install 'wirehall[redis]'" in result.stdout


async def test_calls_before_start_and_after_close_raise_backplane_error() -> None:
    backplane = RedisBackplane()
    with pytest.raises(BackplaneError, match="not started"):
        await backplane.publish("all", b"x")
    await backplane.close()
    with pytest.raises(BackplaneError, match="closed"):
        await backplane.start()
    with pytest.raises(BackplaneError, match="closed"):
        await backplane.subscribe("all")


# -- starting -------------------------------------------------------------------------------


@pytest.mark.redis
async def test_unreachable_port_fails_fast_with_the_url_and_what_to_do() -> None:
    port = free_port()  # bound and closed again: nothing listens there
    backplane = RedisBackplane(f"redis://:hidden@127.0.0.1:{port}/0")
    started = time.monotonic()
    with pytest.raises(BackplaneError) as caught:
        await backplane.start()
    assert time.monotonic() - started < 2
    message = str(caught.value)
    assert f"redis://:***@127.0.0.1:{port}/0" in message
    assert "startup=wait" in message
    assert "WIREHALL_BACKPLANE" in message
    assert "hidden" not in message
    await backplane.close()


@pytest.mark.redis
async def test_startup_wait_retries_until_redis_is_there(logs: Logs, private_redis: PrivateRedis) -> None:
    private_redis.kill()
    backplane = RedisBackplane(private_redis.url, startup="wait")
    starting = asyncio.create_task(backplane.start())
    try:
        await logs.wait_for("not reachable yet", timeout=5)
        assert not starting.done()
        await asyncio.to_thread(private_redis.start)
        await asyncio.wait_for(starting, timeout=10)
        await backplane.subscribe("all")
    finally:
        starting.cancel()
        await backplane.close()


# -- channels -------------------------------------------------------------------------------


@pytest.mark.redis
async def test_a_thousand_messages_arrive_in_order_once_each(
    redis_url: str, backplanes: Backplanes, collectors: Callable[[RedisBackplane], Collector]
) -> None:
    receiver = await backplanes.start(redis_url)
    sender = await backplanes.start(redis_url)
    await receiver.subscribe("room:lobby")
    await receiver.subscribe("room:lobby")  # twice is the same as once
    await sender.subscribe("room:lobby")
    received, echoed = collectors(receiver), collectors(sender)
    await asyncio.gather(*(sender.publish("room:lobby", b"%d" % i) for i in range(1000)))
    expected = [b"%d" % i for i in range(1000)]
    await sender.publish("room:lobby", b"marker")  # a copy more of any message would come before it
    await received.wait_for(lambda items: ("room:lobby", b"marker") in items)
    await echoed.wait_for(lambda items: ("room:lobby", b"marker") in items)
    for collector in (received, echoed):
        assert collector.items.pop() == ("room:lobby", b"marker")
    assert received.payloads("room:lobby") == expected
    assert echoed.payloads("room:lobby") == expected  # the publisher's own node gets it too
    assert len(received.items) == len(echoed.items) == 1000


@pytest.mark.redis
async def test_unsubscribe_stops_delivery(
    redis_url: str, backplanes: Backplanes, collectors: Callable[[RedisBackplane], Collector]
) -> None:
    receiver = await backplanes.start(redis_url)
    sender = await backplanes.start(redis_url)
    await receiver.subscribe("room:a")
    await receiver.subscribe("room:b")
    received = collectors(receiver)
    await sender.publish("room:a", b"before")
    await received.wait_for(lambda items: len(items) == 1)
    await receiver.unsubscribe("room:a")
    await receiver.unsubscribe("room:a")  # not subscribed: no error
    for _ in range(10):
        await sender.publish("room:a", b"after")
    await sender.publish("room:b", b"marker")
    await received.wait_for(lambda items: ("room:b", b"marker") in items)
    assert received.items == [("room:a", b"before"), ("room:b", b"marker")]


@pytest.mark.redis
async def test_messages_already_received_are_not_yielded_after_unsubscribe(
    redis_url: str, backplanes: Backplanes
) -> None:
    receiver = await backplanes.start(redis_url)
    sender = await backplanes.start(redis_url)
    await receiver.subscribe("room:a")
    await receiver.subscribe("room:b")
    for i in range(20):
        await sender.publish("room:a", b"%d" % i)
    iterator = aiter(receiver.messages())
    assert await asyncio.wait_for(anext(iterator), 2) == ("room:a", b"0")
    await _until(lambda: receiver._subscriber.queued == 19)  # the other 19 arrive and wait in the backplane
    await receiver.unsubscribe("room:a")
    await sender.publish("room:b", b"marker")
    assert await asyncio.wait_for(anext(iterator), 2) == ("room:b", b"marker")
    await iterator.aclose()  # type: ignore[attr-defined]  # an async generator


@pytest.mark.redis
async def test_messages_has_one_consumer_and_ends_at_close(redis_url: str) -> None:
    backplane = RedisBackplane(redis_url)
    await backplane.start()
    iterator = backplane.messages()
    pending = asyncio.ensure_future(anext(iterator))
    await _until(lambda: backplane._subscriber.has_consumer)
    with pytest.raises(RuntimeError, match="already has a consumer"):
        await anext(backplane.messages())
    await backplane.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(pending, timeout=2)


# -- presence -------------------------------------------------------------------------------


@pytest.mark.redis
async def test_presence_is_the_union_of_nodes(redis_url: str, backplanes: Backplanes) -> None:
    one = await backplanes.start(redis_url)
    two = await backplanes.start(redis_url)
    await one.add_presence("lobby", f"{one.node_id}.1", "ann")
    await one.add_presence("lobby", f"{one.node_id}.2", "ann")
    await two.add_presence("lobby", f"{two.node_id}.1", "bob")
    await two.add_presence("kitchen", f"{two.node_id}.1", "bob")
    expected = {f"{one.node_id}.1": "ann", f"{one.node_id}.2": "ann", f"{two.node_id}.1": "bob"}
    assert await one.presence("lobby") == expected
    assert await two.presence("lobby") == expected
    assert await one.presence("kitchen") == {f"{two.node_id}.1": "bob"}
    await two.remove_presence("lobby", f"{two.node_id}.1")
    await two.remove_presence("lobby", f"{two.node_id}.1")  # not there: no error
    assert await one.presence("lobby") == {f"{one.node_id}.1": "ann", f"{one.node_id}.2": "ann"}
    assert await one.presence("nobody-here") == {}


@pytest.mark.redis
async def test_members_must_belong_to_the_node(redis_url: str, backplanes: Backplanes) -> None:
    one = await backplanes.start(redis_url)
    two = await backplanes.start(redis_url)
    with pytest.raises(ValueError, match=f"must start with '{one.node_id}.'"):
        await one.add_presence("lobby", f"{two.node_id}.1", "mallory")
    with pytest.raises(ValueError, match="does not belong"):
        await one.add_presence("lobby", "conn-1", "mallory")
    await two.add_presence("lobby", f"{two.node_id}.1", "bob")
    await one.remove_presence("lobby", f"{two.node_id}.1")  # not its member: left alone
    await one.remove_presence("lobby", "conn-1")
    assert await one.presence("lobby") == {f"{two.node_id}.1": "bob"}


@pytest.mark.redis
async def test_close_removes_the_nodes_presence_and_keys(redis_url: str, backplanes: Backplanes) -> None:
    staying = await backplanes.start(redis_url)
    leaving = RedisBackplane(redis_url)
    await leaving.start()
    await leaving.add_presence("lobby", f"{leaving.node_id}.1", "ann")
    await staying.add_presence("lobby", f"{staying.node_id}.1", "bob")
    await leaving.close()
    await leaving.close()  # twice is fine
    assert await staying.presence("lobby") == {f"{staying.node_id}.1": "bob"}
    prefix = staying.prefix
    async with _redis_admin(redis_url) as admin:
        keys = {key.decode() async for key in admin.scan_iter(match=f"{prefix}:*")}
        assert not any(leaving.node_id in key for key in keys)
        assert leaving.node_id.encode() not in await admin.smembers(f"{prefix}:nodes")


@pytest.mark.redis
async def test_a_dead_nodes_members_are_purged_and_reported_by_one_survivor(
    redis_url: str, backplanes: Backplanes
) -> None:
    first = await backplanes.start(redis_url, heartbeat_ttl=30)
    second = await backplanes.start(redis_url, heartbeat_ttl=30)
    doomed = await backplanes.start(redis_url, heartbeat_ttl=30)
    await first.add_presence("lobby", f"{first.node_id}.1", "ann")
    await doomed.add_presence("lobby", f"{doomed.node_id}.1", "zed")
    await doomed.add_presence("attic", f"{doomed.node_id}.2", "zed")
    assert f"{doomed.node_id}.1" in await first.presence("lobby")
    await _expire_liveness(redis_url, doomed)  # as if `doomed` had stopped renewing it
    # Dead members are hidden at once, before anyone purged them.
    assert await second.presence("lobby") == {f"{first.node_id}.1": "ann"}
    reports = await asyncio.gather(first.heartbeat(), second.heartbeat())
    assert sorted(reports, key=len) == [[], ["attic", "lobby"]]
    assert list(await asyncio.gather(first.heartbeat(), second.heartbeat())) == [[], []]
    prefix = first.prefix
    async with _redis_admin(redis_url) as admin:
        assert await admin.hkeys(f"{prefix}:presence:lobby") == [f"{first.node_id}.1".encode()]
        assert not await admin.exists(f"{prefix}:presence:attic")
        assert not await admin.exists(f"{prefix}:node-rooms:{doomed.node_id}")
        assert doomed.node_id.encode() not in await admin.smembers(f"{prefix}:nodes")


@pytest.mark.redis
async def test_a_late_node_restores_its_presence_at_its_next_heartbeat(
    logs: Logs, redis_url: str, backplanes: Backplanes
) -> None:
    survivor = await backplanes.start(redis_url, heartbeat_ttl=30)
    late = await backplanes.start(redis_url, heartbeat_ttl=30)
    await late.add_presence("lobby", f"{late.node_id}.1", "zed")
    await _expire_liveness(redis_url, late)
    assert await survivor.heartbeat() == ["lobby"]
    assert await survivor.presence("lobby") == {}
    assert await late.presence("lobby") == {f"{late.node_id}.1": "zed"}  # its own view
    assert await late.heartbeat() == ["lobby"]
    assert "no longer alive" in logs.text
    assert await survivor.presence("lobby") == {f"{late.node_id}.1": "zed"}


# -- faults ---------------------------------------------------------------------------------


@pytest.mark.redis
async def test_client_kill_of_the_subscriber_resumes_delivery_and_subscriptions(
    logs: Logs,
    redis_url: str,
    backplanes: Backplanes,
    collectors: Callable[[RedisBackplane], Collector],
) -> None:
    receiver = await backplanes.start(redis_url)
    sender = await backplanes.start(redis_url)
    channels = [f"room:{i}" for i in range(700)]  # more than one SUBSCRIBE command's worth
    for channel in channels:
        await receiver.subscribe(channel)
    received = collectors(receiver)
    stop = asyncio.Event()

    async def stream() -> int:
        sent = 0
        while not stop.is_set():
            await sender.publish("room:0", b"%d" % sent)
            sent += 1
            await asyncio.sleep(0.002)  # pacing a steady stream, not a synchronisation
        return sent

    streaming = asyncio.create_task(stream())
    await received.wait_for(lambda items: len(items) >= 50)
    assert await _kill_subscriber(redis_url, receiver) == 1
    await logs.wait_for("reconnected to Redis", timeout=10)
    count_after = len(received.items)
    await received.wait_for(lambda items: len(items) >= count_after + 50)
    stop.set()
    await streaming
    for channel in (channels[-1], channels[350]):
        await sender.publish(channel, b"still here")
    await received.wait_for(lambda items: len(received.payloads(channels[350])) == 1)
    assert received.payloads(channels[-1]) == [b"still here"]
    numbers = [int(payload) for payload in received.payloads("room:0")]
    assert numbers == sorted(set(numbers))  # in order, none twice (some lost while down)
    assert "lost the Redis subscriber connection" in logs.text
    assert "re-subscribed 700 channels" in logs.text
    assert logs.levels("lost the Redis subscriber") == [logging.WARNING]
    assert logs.levels("reconnected to Redis") == [logging.INFO]


@pytest.mark.redis
async def test_background_loops_that_die_are_restarted(
    logs: Logs,
    redis_url: str,
    backplanes: Backplanes,
    collectors: Callable[[RedisBackplane], Collector],
) -> None:
    backplane = await backplanes.start(redis_url)
    await backplane.subscribe("room:lobby")
    received = collectors(backplane)
    publisher, subscriber = backplane._publisher, backplane._subscriber
    send, reconnect = publisher.send, subscriber._reconnect

    async def broken_send(batch: Any) -> None:
        publisher.send = send  # type: ignore[method-assign]
        raise RuntimeError("a bug in the publisher")

    async def broken_reconnect() -> Any:
        subscriber._reconnect = reconnect  # type: ignore[method-assign]
        raise RuntimeError("a bug in the subscriber")

    publisher.send = broken_send  # type: ignore[method-assign]
    with pytest.raises(BackplaneError, match="publisher failed"):
        await asyncio.wait_for(backplane.publish("room:lobby", b"lost"), timeout=5)
    subscriber._reconnect = broken_reconnect  # type: ignore[method-assign]
    assert await _kill_subscriber(redis_url, backplane) == 1
    await logs.wait_for("subscriber loop stopped", timeout=5)
    await logs.wait_for("reconnected to Redis", timeout=5)
    await backplane.publish("room:lobby", b"works")
    await received.wait_for(lambda items: items == [("room:lobby", b"works")])
    assert "publisher loop stopped" in logs.text


@pytest.mark.redis
async def test_redis_restart_fails_fast_then_recovers_delivery_and_presence(
    logs: Logs,
    private_redis: PrivateRedis,
    backplanes: Backplanes,
    collectors: Callable[[RedisBackplane], Collector],
) -> None:
    options = {"connect_timeout": 0.5, "command_timeout": 0.5, "heartbeat_ttl": 30}
    one = await backplanes.start(private_redis.url, **options)
    two = await backplanes.start(private_redis.url, **options)
    await one.subscribe("room:lobby")
    await one.add_presence("lobby", f"{one.node_id}.1", "ann")
    await two.add_presence("lobby", f"{two.node_id}.1", "bob")
    received = collectors(one)
    reconnected = asyncio.Event()
    one.on_reconnect(reconnected.set)

    private_redis.kill()
    started = time.monotonic()
    with pytest.raises(BackplaneError, match=f"127.0.0.1:{private_redis.port}"):
        await two.publish("room:lobby", b"lost")
    with pytest.raises(BackplaneError):
        await one.presence("lobby")
    with pytest.raises(BackplaneError):
        await one.heartbeat()
    assert time.monotonic() - started < 3
    # Presence changes during the outage are kept and written later.
    await two.add_presence("lobby", f"{two.node_id}.2", "cyd")
    await one.remove_presence("lobby", f"{one.node_id}.1")
    await one.add_presence("lobby", f"{one.node_id}.3", "dan")
    assert "kept locally" in logs.text
    with pytest.raises(BackplaneError):
        await one.subscribe("room:later")  # cannot be confirmed now; subscribed once back

    await asyncio.to_thread(private_redis.start)  # same port, empty: all keys are gone
    await asyncio.wait_for(reconnected.wait(), 15)  # re-subscribed: nothing published now is missed
    await two.publish("room:lobby", b"back")
    await received.wait_for(lambda items: items == [("room:lobby", b"back")])
    await two.publish("room:later", b"later")
    await received.wait_for(lambda items: ("room:later", b"later") in items)
    assert await one.heartbeat() == ["lobby"]
    await two.heartbeat()
    expected = {f"{one.node_id}.3": "dan", f"{two.node_id}.1": "bob", f"{two.node_id}.2": "cyd"}
    assert await one.presence("lobby") == expected
    assert await two.presence("lobby") == expected


@pytest.mark.redis
async def test_close_ends_a_subscribe_waiting_for_redis(
    private_redis: PrivateRedis, backplanes: Backplanes
) -> None:
    backplane = await backplanes.start(private_redis.url, command_timeout=10)
    private_redis.kill()
    subscribing = asyncio.create_task(backplane.subscribe("room:lobby"))
    with pytest.raises(TimeoutError):  # still waiting for Redis
        await asyncio.wait_for(asyncio.shield(subscribing), 0.3)
    started = time.monotonic()
    await backplane.close()
    with pytest.raises(BackplaneError, match="closed"):
        await asyncio.wait_for(subscribing, timeout=5)
    assert time.monotonic() - started < 2


@pytest.mark.redis
async def test_close_ends_a_start_waiting_for_redis(logs: Logs) -> None:
    backplane = RedisBackplane(f"redis://127.0.0.1:{free_port()}/0", startup="wait")
    starting = asyncio.create_task(backplane.start())
    await logs.wait_for("not reachable yet", timeout=5)
    await backplane.close()
    with pytest.raises(BackplaneError, match="closed while starting"):
        await asyncio.wait_for(starting, timeout=7)


@pytest.mark.redis
async def test_a_hung_redis_is_bounded_by_timeouts_and_detected_by_ping(
    logs: Logs,
    private_redis: PrivateRedis,
    backplanes: Backplanes,
    collectors: Callable[[RedisBackplane], Collector],
) -> None:
    options = {"connect_timeout": 0.3, "command_timeout": 0.3, "ping_interval": 0.3}
    one = await backplanes.start(private_redis.url, **options)
    two = await backplanes.start(private_redis.url, **options)
    await one.subscribe("room:lobby")
    received = collectors(one)
    reconnected = asyncio.Event()
    one.on_reconnect(reconnected.set)
    private_redis.pause()  # SIGSTOP: connections stay open, nothing answers
    try:
        started = time.monotonic()
        with pytest.raises(BackplaneError, match=r"did not take a publish|timed out"):
            await two.publish("room:lobby", b"stuck")
        with pytest.raises(BackplaneError, match="timed out"):
            await two.presence("lobby")
        assert time.monotonic() - started < 3
        await logs.wait_for("no answer to PING", timeout=5)
    finally:
        private_redis.resume()
    await asyncio.wait_for(reconnected.wait(), 15)  # re-subscribed: nothing published now is missed
    await two.publish("room:lobby", b"back")
    await received.wait_for(lambda items: ("room:lobby", b"back") in items)


@pytest.mark.redis
async def test_on_reconnect_runs_once_the_subscriptions_are_restored(
    redis_url: str,
    backplanes: Backplanes,
    collectors: Callable[[RedisBackplane], Collector],
) -> None:
    receiver = await backplanes.start(redis_url)
    sender = await backplanes.start(redis_url)
    channels = [f"room:{i}" for i in range(700)]  # more than one SUBSCRIBE command's worth
    for channel in channels:
        await receiver.subscribe(channel)
    received = collectors(receiver)
    reconnected = asyncio.Event()
    calls: list[int] = []

    def callback() -> None:
        calls.append(receiver._subscriber.confirmed)  # re-subscriptions Redis has confirmed by now
        reconnected.set()

    receiver.on_reconnect(callback)
    await sender.publish(channels[0], b"before")
    await received.wait_for(lambda items: len(items) == 1)
    assert calls == []  # not at start, nor while it works
    assert await _kill_subscriber(redis_url, receiver) == 1
    await asyncio.wait_for(reconnected.wait(), timeout=10)
    # the last re-subscription was confirmed before the callback: nothing published now is missed
    await sender.publish(channels[-1], b"right after")
    await received.wait_for(lambda items: ("room:699", b"right after") in items)
    await sender.publish(channels[0], b"again")
    await received.wait_for(lambda items: ("room:0", b"again") in items)
    assert calls == [len(channels)]
